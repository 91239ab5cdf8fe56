"""The benchmark script's pure parts: per-stage times from DVC's output, readable figures."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest

RUN_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    """benchmarks/run.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_stage_seconds_run_from_each_announcement_to_the_next(run: ModuleType) -> None:
    lines = [
        (0.5, "Running stage 'download':\n"),
        (0.6, "> python -m stages download --output data/raw/cifar-10-python.tar.gz\n"),
        (2.0, "Updating lock file 'dvc.lock'\n"),
        (2.5, "Running stage 'prepare':\n"),
        (9.0, "Running stage 'train@42':\n"),  # a matrix stage's instance: its stage
        (9.5, "seed 42: trained 402,250 parameters\n"),
    ]
    measured = run.Measured(seconds=20.0, peak_mb=100.0, lines=lines)
    assert run.stage_seconds(measured) == pytest.approx(
        {"download": 2.0, "prepare": 6.5, "train": 11.0}
    )


def test_stage_seconds_ignore_lines_that_only_mention_a_stage(run: ModuleType) -> None:
    lines = [(1.0, "Stage 'download' didn't change, skipping\n")]
    assert run.stage_seconds(run.Measured(seconds=2.0, peak_mb=1.0, lines=lines)) == {}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.003], "1.00"),
        ([0.473, 0.473], "0.473 (0.473-0.473)"),
        ([76.83, 77.5], "77.2 (76.8-77.5)"),
        ([18940.2, 18930.0], "18,935 (18,930-18,940)"),
    ],
)
def test_summarize_gives_the_mean_and_the_range(
    run: ModuleType, values: list[float], expected: str
) -> None:
    assert run.summarize(values) == expected


def test_step_products_are_forward_weight_and_input_gradients(run: ModuleType) -> None:
    assert run.step_products([4, 3, 2], batch_size=5) == [
        (5, 4, 3),  # layer 1 forward
        (4, 5, 3),  # layer 1 weight gradient; no gradient for the images
        (5, 3, 2),  # layer 2 forward
        (3, 5, 2),  # layer 2 weight gradient
        (5, 2, 3),  # layer 2 input gradient
    ]


def test_step_products_of_the_assignment_mlp_count_its_multiply_adds(run: ModuleType) -> None:
    weights = 3072 * 128 + 128 * 64 + 64 * 10
    first_layer_inputs = 3072 * 128
    products = run.step_products([3072, 128, 64, 10], batch_size=32)
    multiply_adds = sum(rows * inner * columns for rows, inner, columns in products)
    assert multiply_adds == 32 * (3 * weights - first_layer_inputs)


def test_matmul_floor_adds_every_product_of_every_epoch(
    run: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 32 -> 16 -> 4 at batch 8: each training step's products, listed by hand (rows,
    # inner, columns), each given its own time; validation's forward products likewise.
    seconds = {
        (8, 32, 16): 1, (32, 8, 16): 2,  # layer 1: forward, weight gradient
        (8, 16, 4): 4, (16, 8, 4): 8, (8, 4, 16): 16,  # layer 2: and the input gradient
        (16, 32, 16): 32, (16, 16, 4): 64,  # validation batches of 16
    }  # fmt: skip
    monkeypatch.setattr(run, "product_seconds", seconds.__getitem__)
    floor = run.matmul_floor_seconds(
        [32, 16, 4],
        batch_size=8,
        validation_batch_size=16,
        train_samples=64,
        validation_rows=32,
        epochs=2,
    )
    # 2 epochs x (8 steps x (1 + 2 + 4 + 8 + 16) + 2 validation batches x (32 + 64))
    assert floor == 880


def test_product_seconds_is_the_fastest_of_real_products_of_that_shape(
    run: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    products, clock = [], iter([0.0, 5.0, 10.0, 12.0, 20.0, 27.0])  # took 5, 2 and 7 s
    real_matmul = np.matmul

    def matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        products.append((left.shape, right.shape, left.dtype))
        return real_matmul(left, right)

    monkeypatch.setattr(run.np, "matmul", matmul)
    monkeypatch.setattr(run.time, "perf_counter", lambda: next(clock))
    assert run.product_seconds((8, 16, 4), repetitions=3) == 2.0
    assert products == [((8, 16), (16, 4), np.float32)] * 3


@pytest.mark.parametrize("training", [True, False])
def test_the_xla_floor_computes_the_products_the_numpy_floor_lists(
    run: ModuleType, training: bool
) -> None:
    sizes, batch = [12, 5, 3], 4
    function = run.step_products_function(sizes, training=training)
    generator = np.random.default_rng(0)
    pairs = list(itertools.pairwise(sizes))
    weights = [generator.standard_normal(pair) for pair in pairs]
    inputs = [generator.standard_normal((batch, fan_in)) for fan_in, _ in pairs]
    gradients = [generator.standard_normal((batch, fan_out)) for _, fan_out in pairs]
    traced = jax.make_jaxpr(function)(weights, inputs, gradients)
    dots = [equation for equation in traced.eqns if equation.primitive.name == "dot_general"]
    # (rows, inner, columns) of each dot, from its operands' shapes and contracted axes.
    shapes = []
    for equation in dots:
        left, right = (variable.aval.shape for variable in equation.invars)
        (left_axes, right_axes), _ = equation.params["dimension_numbers"]
        inner = left[left_axes[0]]
        shapes.append((left[1 - left_axes[0]], inner, right[1 - right_axes[0]]))
    if training:
        assert shapes == run.step_products(sizes, batch_size=batch)
    else:
        assert shapes == [(batch, fan_in, fan_out) for fan_in, fan_out in pairs]
    # And their values are the products themselves.
    expected = [inputs[0] @ weights[0], inputs[1] @ weights[1]]
    if training:
        expected = [
            inputs[0] @ weights[0], inputs[0].T @ gradients[0],
            inputs[1] @ weights[1], inputs[1].T @ gradients[1], gradients[1] @ weights[1].T,
        ]  # fmt: skip
    for value, wanted in zip(function(weights, inputs, gradients), expected, strict=True):
        np.testing.assert_allclose(value, wanted)


def test_xla_products_seconds_times_the_compiled_products(run: ModuleType) -> None:
    seconds = run.xla_products_seconds([12, 5, 3], 4, training=True, repetitions=2)
    assert 0 < seconds < 1
