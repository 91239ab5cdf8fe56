"""Part 1's numpy network against the assignment, finite differences and JAX's autodiff.

The numpy maths (cifar10/backprop.py) and the stage's report are unit tests; TensorFlow's
autodiff, hypothesis' sizes and the stage as a process are integration tests.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import params_with, run, run_stage, update_params, write_params

import cifar10.backprop
from cifar10.backprop import (
    COMPARISONS,
    NAMES,
    Parameters,
    Verification,
    autodiff_gradients,
    backward,
    compare,
    failures,
    finite_difference_gradients,
    forward,
    gradient_descent,
    initialize,
    loss,
)
from cifar10.errors import PipelineError
from stages.backprop import main

# The assignment's sizes, as its notebook runs them, and tolerances a test relies on.
ASSIGNMENT = {"seed": 0, "n_samples": 1000, "n_inputs": 2, "n_hidden": 3}
TOLERANCES = {"tolerance_reference": 5e-9, "tolerance_finite_difference": 1e-9,
              "tolerance_autodiff": 1e-12, "finite_difference_step": 1e-5}  # fmt: skip
PARAMS = params_with({"backprop": {**ASSIGNMENT, **TOLERANCES, "descent_learning_rate": 2.0}})
DEFAULTS = PARAMS.backprop

# The notebook's printed output, as printed: its W1 gradient is 2 x 3 (transposed).
PRINTED_W1 = [[1.76405235, 0.40015721], [0.97873798, 2.2408932], [1.86755799, -0.97727788]]
PRINTED_W2 = [0.95008842, -0.15135721, -0.10321885]
PRINTED_L = 0.1332476222330792
PRINTED_GRADIENTS = {
    "W1": [[0.00244596, -0.00030765, -0.00034768], [0.00262019, -0.00024188, -0.000372]],
    "b1": [0.00492577, -0.00058023, -0.00065977],
    "W2": [0.02216011, 0.02433097, 0.01797174],
    "b2": 0.029249230265318685,
}
PRINTED_PRECISION = 5e-9  # 8 decimals
FULL_PRECISION = 1e-12  # relative


@pytest.fixture(scope="module")
def assignment() -> tuple[Parameters, np.ndarray, np.ndarray]:
    return initialize(n_samples=1000, n_inputs=2, n_hidden=3, seed=0)


def test_initialize_reproduces_the_notebooks_weights(assignment) -> None:
    weights, X, Y = assignment
    np.testing.assert_allclose(weights.W1, PRINTED_W1, rtol=0, atol=PRINTED_PRECISION)
    np.testing.assert_allclose(weights.W2, PRINTED_W2, rtol=0, atol=PRINTED_PRECISION)
    np.testing.assert_array_equal(weights.b1, np.zeros(3))
    assert weights.b2 == 0.0
    assert X.shape == (1000, 2)
    assert ((X >= 0) & (X < 1)).all()
    assert set(np.unique(Y)) == {0.0, 1.0}


def test_initialize_leaves_numpys_global_random_state_alone() -> None:
    before = np.random.get_state()[1].copy()  # noqa: NPY002 (the legacy global state)
    initialize(n_samples=10, n_inputs=2, n_hidden=3, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_backward_reproduces_the_printed_values(assignment) -> None:
    weights, X, Y = assignment
    gradients, loss_value = backward(X, Y, weights)
    assert loss_value == pytest.approx(PRINTED_L, rel=FULL_PRECISION, abs=0)
    assert gradients.b2 == pytest.approx(PRINTED_GRADIENTS["b2"], rel=FULL_PRECISION, abs=0)
    # Ours has W1's shape, 3 x 2: the transpose of the printed 2 x 3.
    assert gradients.W1.shape == (3, 2)
    np.testing.assert_allclose(
        gradients.W1, np.transpose(PRINTED_GRADIENTS["W1"]), rtol=0, atol=PRINTED_PRECISION
    )
    for name in ("b1", "W2"):
        np.testing.assert_allclose(
            getattr(gradients, name), PRINTED_GRADIENTS[name], rtol=0, atol=PRINTED_PRECISION
        )


def scalar_forward(x: list[float], W1: list[list[float]], b1: list[float], W2: list[float],
                   b2: float) -> tuple[float, list[float]]:  # fmt: skip
    """The network of Part 1 for one sample, one multiply-add at a time (the oracle)."""
    hidden = []
    for row, bias in zip(W1, b1, strict=True):
        z = bias + sum(weight * value for weight, value in zip(row, x, strict=True))
        hidden.append(1 / (1 + math.exp(-z)))
    z = b2 + sum(weight * value for weight, value in zip(W2, hidden, strict=True))
    return 1 / (1 + math.exp(-z)), hidden


def test_forward_computes_what_the_network_computes_one_sample_at_a_time(assignment) -> None:
    drawn, X, _ = assignment
    # The assignment's biases start at 0; these do not, so each term counts.
    weights = Parameters(W1=drawn.W1, b1=np.array([0.1, -0.2, 0.3]), W2=drawn.W2, b2=0.25)
    Y, Z2, H, Z1 = forward(X[:5], weights)
    assert (Y.shape, Z2.shape, H.shape, Z1.shape) == ((5,), (5,), (5, 3), (5, 3))
    for row in range(5):
        y, hidden = scalar_forward(
            X[row].tolist(), weights.W1.tolist(), weights.b1.tolist(), weights.W2.tolist(),
            weights.b2,
        )  # fmt: skip
        assert Y[row] == pytest.approx(y, rel=1e-12)
        np.testing.assert_allclose(H[row], hidden, rtol=1e-12)


def test_sigmoid_is_finite_and_quiet_at_extremes() -> None:
    sigmoid = cifar10.backprop.sigmoid
    np.testing.assert_array_equal(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])


def check_against_finite_differences(n_samples: int, n_inputs: int, n_hidden: int,
                                     seed: int) -> None:  # fmt: skip
    weights, X, Y = initialize(n_samples, n_inputs, n_hidden, seed)
    gradients, _ = backward(X, Y, weights)
    assert gradients.W1.shape == (n_hidden, n_inputs)
    numerical = finite_difference_gradients(X, Y, weights, DEFAULTS.finite_difference_step)
    comparison = compare(gradients.as_arrays(), numerical.as_arrays())
    assert comparison.within(DEFAULTS.tolerance_finite_difference), comparison


@pytest.mark.parametrize(
    ("n_samples", "n_inputs", "n_hidden", "seed"),
    [(1000, 2, 3, 0), (57, 4, 6, 7), (1, 1, 1, 3), (200, 5, 2, 2**32 - 1)],
)
def test_gradients_match_finite_differences(
    n_samples: int, n_inputs: int, n_hidden: int, seed: int
) -> None:
    check_against_finite_differences(n_samples, n_inputs, n_hidden, seed)


@pytest.mark.integration
def test_gradients_match_finite_differences_at_any_size() -> None:
    from hypothesis import given, settings  # noqa: PLC0415 (hypothesis: integration only)
    from hypothesis import strategies as st  # noqa: PLC0415

    @settings(max_examples=30, deadline=None)
    @given(
        n_samples=st.integers(1, 200),
        n_inputs=st.integers(1, 5),
        n_hidden=st.integers(1, 5),
        seed=st.integers(0, 2**32 - 1),
    )
    def check(n_samples: int, n_inputs: int, n_hidden: int, seed: int) -> None:
        check_against_finite_differences(n_samples, n_inputs, n_hidden, seed)

    check()


@pytest.mark.parametrize(
    ("n_samples", "n_inputs", "n_hidden", "seed"), [(1000, 2, 3, 0), (57, 4, 6, 7)]
)
def test_gradients_and_loss_match_jax_autodiff(
    n_samples: int, n_inputs: int, n_hidden: int, seed: int
) -> None:
    weights, X, Y = initialize(n_samples, n_inputs, n_hidden, seed)
    gradients, L = backward(X, Y, weights)
    autodiff, autodiff_L = autodiff_gradients(X, Y, weights)
    comparison = compare(
        {"L": L, **gradients.as_arrays()}, {"L": autodiff_L, **autodiff.as_arrays()}
    )
    assert comparison.within(DEFAULTS.tolerance_autodiff), comparison
    # Float64 for the reference only: the rest of the process keeps JAX's float32.
    assert jax.numpy.zeros(1).dtype == np.float32


def with_gradient(gradients: Parameters, name: str, value: np.ndarray) -> Parameters:
    return Parameters.from_arrays({**gradients.as_arrays(), name: value})


@pytest.mark.parametrize("name", NAMES)
def test_a_flipped_sign_is_caught(assignment, name: str) -> None:
    weights, X, Y = assignment
    gradients, _ = backward(X, Y, weights)
    broken = with_gradient(gradients, name, -gradients.as_arrays()[name])
    numerical = finite_difference_gradients(X, Y, weights, DEFAULTS.finite_difference_step)
    comparison = compare(broken.as_arrays(), numerical.as_arrays())
    assert not comparison.within(DEFAULTS.tolerance_finite_difference)
    assert comparison.worst == name
    # Loudly: by orders of magnitude.
    assert comparison.max_abs_error > 1e4 * DEFAULTS.tolerance_finite_difference


def test_a_transposed_w1_is_caught_on_a_square_layer() -> None:
    weights, X, Y = initialize(n_samples=100, n_inputs=3, n_hidden=3, seed=1)
    gradients, _ = backward(X, Y, weights)
    broken = with_gradient(gradients, "W1", gradients.W1.T)
    numerical = finite_difference_gradients(X, Y, weights, DEFAULTS.finite_difference_step)
    comparison = compare(broken.as_arrays(), numerical.as_arrays())
    assert not comparison.within(DEFAULTS.tolerance_finite_difference)
    assert comparison.worst == "W1"


def test_a_transposed_w1_is_rejected_by_shape(assignment) -> None:
    weights, X, Y = assignment
    gradients, _ = backward(X, Y, weights)
    with pytest.raises(ValueError, match=r"b1 must have shape \(2,\) to match W1 \(2, 3\)"):
        with_gradient(gradients, "W1", gradients.W1.T)
    # The notebook's own 2 x 3 layout does not pass for ours either.
    with pytest.raises(
        ValueError, match=r"W1: shape \(3, 2\) does not match the expected \(2, 3\)"
    ):
        compare({"W1": gradients.W1}, {"W1": PRINTED_GRADIENTS["W1"]})


def test_compare_reports_the_worst_quantity_and_relative_error() -> None:
    comparison = compare(
        {"a": np.array([1.0, 0.0]), "b": 2.5}, {"a": np.array([1.5, 0.0]), "b": 2.0}
    )
    assert comparison.max_abs_error == 0.5
    assert comparison.worst == "a"
    assert comparison.max_rel_error == pytest.approx(0.5 / 1.5)
    assert comparison.within(0.5)
    assert not comparison.within(0.49)


def test_compare_treats_nan_as_a_failure() -> None:
    comparison = compare({"a": np.nan, "b": 1.0}, {"a": 0.0, "b": 0.0})
    assert comparison.worst == "a"
    assert not comparison.within(1e300)


def test_compare_rejects_different_names() -> None:
    with pytest.raises(ValueError, match="cannot compare"):
        compare({"a": 1.0}, {"b": 1.0})


def test_parameters_validate_their_shapes() -> None:
    with pytest.raises(ValueError, match="W1 must be a matrix"):
        Parameters(W1=np.zeros(3), b1=np.zeros(3), W2=np.zeros(3), b2=0.0)
    with pytest.raises(ValueError, match=r"W2 must have shape \(3,\)"):
        Parameters(W1=np.zeros((3, 2)), b1=np.zeros(3), W2=np.zeros(2), b2=0.0)
    with pytest.raises(ValueError, match="b2 must be a scalar"):
        Parameters(W1=np.zeros((3, 2)), b1=np.zeros(3), W2=np.zeros(3), b2=np.zeros(1))
    with pytest.raises(ValueError, match="expected the keys"):
        Parameters.from_arrays({"W1": np.zeros((3, 2))})
    weights = Parameters(W1=np.zeros((3, 2)), b1=np.zeros(3), W2=np.zeros(3), b2=0.0)
    with pytest.raises(ValueError, match="read-only"):
        weights.W1[0, 0] = 1.0


def test_backward_and_finite_differences_validate_their_arguments(assignment) -> None:
    weights, X, Y = assignment
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 2\)"):
        backward(X.T, Y, weights)
    with pytest.raises(ValueError, match=r"Y_true must have shape \(1000,\)"):
        backward(X, Y[:-1], weights)
    with pytest.raises(ValueError, match="must be equal-length vectors"):
        loss(Y, Y[:, np.newaxis])
    with pytest.raises(ValueError, match="step must be positive"):
        finite_difference_gradients(X, Y, weights, 0.0)


def test_gradient_descent_lowers_the_loss(assignment) -> None:
    weights, X, Y = assignment
    losses = gradient_descent(X, Y, weights, steps=50, learning_rate=DEFAULTS.descent_learning_rate)
    assert losses.shape == (51,)
    assert losses[0] == pytest.approx(PRINTED_L, rel=FULL_PRECISION)
    assert (np.diff(losses) < 0).all()


@pytest.mark.parametrize(
    ("losses", "fails"),
    [([0.2, 0.15, 0.1], False), ([0.1, 0.2], True), ([0.1, 0.05, 0.1], True)],
    ids=["lower", "higher", "back where it started"],
)
def test_descent_fails_unless_it_ends_lower_than_it_started(
    losses: list[float], fails: bool
) -> None:
    verification = Verification(
        loss=losses[0], comparisons=dict.fromkeys(COMPARISONS), descent_losses=np.array(losses)
    )
    problems = failures(verification, DEFAULTS)
    assert len(problems) == int(fails)
    if fails:
        assert f"{losses[0]:g} -> {losses[-1]:g}" in problems[0]


# The stage -------------------------------------------------------------------------------

OUTPUTS = ["--report", "reports/backprop.json", "--loss-plot", "reports/backprop/loss.tsv"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the assignment's backprop params, made the working directory."""
    changes = {**ASSIGNMENT, **TOLERANCES, "descent_steps": 300, "descent_learning_rate": 2.0}
    write_params(tmp_path, {"backprop": changes})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def set_backprop_params(workdir: Path, **changes: object) -> None:
    update_params(workdir, {"backprop": changes})


def test_main_writes_report_and_loss_plot(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    main(OUTPUTS)
    report = json.loads((workdir / "reports" / "backprop.json").read_text())
    assert report["loss"] == pytest.approx(PRINTED_L, rel=FULL_PRECISION)
    assert report["reference"]["applicable"] is True
    for name in COMPARISONS:
        entry = report[name]
        assert entry["passed"] is True
        assert entry["tolerance"] == TOLERANCES[f"tolerance_{name}"]
        assert 0 <= entry["max_abs_error"] <= entry["tolerance"]
        assert entry["max_rel_error"] >= 0
    assert report["descent"]["decreased"] is True
    assert report["descent"]["final_loss"] < report["descent"]["initial_loss"] == report["loss"]

    lines = (workdir / "reports" / "backprop" / "loss.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss"
    assert len(lines) == 1 + 300 + 1
    steps, losses = zip(*(line.split("\t") for line in lines[1:]), strict=True)
    assert [int(step) for step in steps] == list(range(300 + 1))
    assert float(losses[0]) == report["descent"]["initial_loss"]
    assert float(losses[-1]) == report["descent"]["final_loss"]
    assert [path.name for path in workdir.rglob(".*tmp*")] == []
    assert "finite_difference" in capsys.readouterr().out


def test_main_records_the_reference_as_not_applicable_for_other_shapes(workdir: Path) -> None:
    set_backprop_params(workdir, n_hidden=4, descent_steps=20)
    main(OUTPUTS)
    report = json.loads((workdir / "reports" / "backprop.json").read_text())
    assert report["reference"]["applicable"] is False
    assert "max_abs_error" not in report["reference"]
    assert "passed" not in report["reference"]
    assert report["finite_difference"]["passed"] is True
    assert report["autodiff"]["passed"] is True


def test_main_fails_over_tolerance_and_writes_nothing(workdir: Path) -> None:
    set_backprop_params(workdir, tolerance_finite_difference=1e-16)
    with pytest.raises(PipelineError, match=r"finite_difference check failed: max abs error \S+ "
                       r"\(in \w+\) exceeds the tolerance 1e-16"):  # fmt: skip
        main(OUTPUTS)
    assert not (workdir / "reports").exists()


def test_main_fails_when_the_descent_does_not_lower_the_loss(workdir: Path) -> None:
    # A learning rate so large that the sigmoids saturate: the loss cannot fall.
    set_backprop_params(workdir, descent_learning_rate=100.0, descent_steps=50)
    with pytest.raises(PipelineError, match="gradient descent did not lower the loss"):
        main(OUTPUTS)
    assert not (workdir / "reports").exists()


def test_main_passes_every_check_with_jax_autodiff(workdir: Path) -> None:
    set_backprop_params(workdir, descent_steps=5)
    main(OUTPUTS)
    report = json.loads((workdir / "reports" / "backprop.json").read_text())
    assert report["autodiff"]["passed"] is True
    assert report["autodiff"]["max_abs_error"] <= TOLERANCES["tolerance_autodiff"]


@pytest.mark.integration
def test_the_stage_prints_everything_before_it_ends(workdir: Path) -> None:
    set_backprop_params(workdir, descent_steps=5)
    result = run_stage("backprop", OUTPUTS, workdir)
    assert result.stdout.startswith(f"backprop: L = {PRINTED_L!r}\n")
    assert result.stdout.splitlines()[-1].startswith("  descent: loss ")
    assert result.stdout.endswith(" over 5 steps at learning rate 2.0\n")
    report = json.loads((workdir / "reports" / "backprop.json").read_text())
    assert report["descent"]["decreased"] is True
    assert report["autodiff"]["passed"] is True
    assert len((workdir / "reports" / "backprop" / "loss.tsv").read_text().splitlines()) == 7


@pytest.mark.integration
def test_a_failing_stage_is_one_error_line_and_no_outputs(workdir: Path) -> None:
    set_backprop_params(workdir, finite_difference_step=1e-2, descent_steps=5)
    result = run_stage("backprop", OUTPUTS, workdir, check=False)
    assert result.returncode == 1
    last_line = result.stderr.splitlines()[-1]
    assert last_line.startswith("error: finite_difference check failed: max abs error ")
    assert last_line.endswith("exceeds the tolerance 1e-09")
    assert "Traceback" not in result.stderr
    assert not (workdir / "reports").exists()


@pytest.mark.integration
def test_the_stage_never_loads_tensorflow(workdir: Path) -> None:
    set_backprop_params(workdir, descent_steps=5)
    code = (
        "import sys\nfrom cifar10.command import run\n"
        f"assert run('stages.backprop', {OUTPUTS!r}) == 0\n"
        "print('tensorflow' in sys.modules)"
    )
    assert run([sys.executable, "-c", code], workdir).stdout.strip().endswith("False")
