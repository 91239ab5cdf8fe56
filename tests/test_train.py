"""The train stage: optimizer and schedule, early stopping, the kept epoch, its outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    QUICK_TRAIN,
    link_prepared,
    quick_train_params,
    run,
    run_stage,
    train_arguments,
    write_params,
)

from stages.cifar import Split
from stages.cli import StageError
from stages.dataset import load_model_inputs, load_standardization, read_preprocessing
from stages.inference import load_network
from stages.model import dense_weights_sha256
from stages.train import check_softmax_sum, diverged_epoch, make_optimizer, train


def learning_rates(params_changes: dict, steps_per_epoch: int, steps: list[int]) -> list[float]:
    """The optimizer's learning rate after each of ``steps`` training steps."""
    optimizer = make_optimizer(quick_train_params(**params_changes), steps_per_epoch)
    rates = []
    for step in steps:
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return rates


def test_cosine_schedule_decays_from_the_peak_to_zero() -> None:
    changes = {"epochs": 10, "learning_rate": 0.004, "lr_schedule": "cosine", "warmup_epochs": 0}
    start, middle, end = learning_rates(changes, steps_per_epoch=100, steps=[0, 500, 1000])
    assert start == pytest.approx(0.004)
    assert middle == pytest.approx(0.002, rel=1e-4)
    assert end == pytest.approx(0.0, abs=1e-9)


def test_warmup_rises_linearly_then_the_cosine_takes_over() -> None:
    changes = {"epochs": 10, "learning_rate": 0.004, "lr_schedule": "cosine", "warmup_epochs": 2}
    rates = learning_rates(changes, steps_per_epoch=100, steps=[0, 100, 200, 600, 1000])
    assert rates[:3] == pytest.approx([0.0, 0.002, 0.004], rel=1e-4)
    assert rates[3] == pytest.approx(0.002, rel=1e-3)  # halfway through the 8 decay epochs
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_constant_rate_with_and_without_warmup() -> None:
    constant = {"epochs": 10, "learning_rate": 0.001, "lr_schedule": "constant"}
    assert learning_rates({**constant, "warmup_epochs": 0}, 100, [0, 999]) == pytest.approx(
        [0.001] * 2
    )
    warm = learning_rates({**constant, "warmup_epochs": 1}, 100, [0, 50, 100, 900])
    assert warm == pytest.approx([0.0, 0.0005, 0.001, 0.001])


def test_weight_decay_switches_adam_to_adamw() -> None:
    adamw = make_optimizer(quick_train_params(weight_decay=0.1), steps_per_epoch=10)
    assert isinstance(adamw, keras.optimizers.AdamW)
    assert adamw.weight_decay == pytest.approx(0.1)
    adam = make_optimizer(quick_train_params(weight_decay=0.0), steps_per_epoch=10)
    assert type(adam) is keras.optimizers.Adam


def train_on(prepared: Path, **changes: object) -> tuple[object, Split]:
    preprocessing = read_preprocessing(prepared)
    validation = load_model_inputs(prepared, "validation", preprocessing)
    params = quick_train_params(**changes)
    result = train(
        load_model_inputs(prepared, "train", preprocessing),
        validation,
        standardization=load_standardization(prepared),
        n_classes=10,
        params=params,
        batch_size=params.batch_size,
        live=None,
    )
    return result, validation


def test_the_kept_model_is_the_one_training_had_at_its_best_epoch(prepared: Path) -> None:
    # A constant rate without warm-up: the first b epochs of a longer run are a run of b
    # epochs, step for step. So a run of exactly the best epoch's length is the oracle.
    # A rate this high peaks early, then loses its way.
    constant = {"lr_schedule": "constant", "warmup_epochs": 0, "learning_rate": 0.2}
    longer, _ = train_on(prepared, epochs=6, restore_best_epoch=True, **constant)
    history = longer.history["val_accuracy"]
    best = history.index(max(history)) + 1
    assert best < len(history), "the oracle needs a best epoch before the last"
    assert longer.best_epoch == best
    shorter, _ = train_on(prepared, epochs=best, restore_best_epoch=False, **constant)
    assert dense_weights_sha256(longer.model) == dense_weights_sha256(shorter.model)
    # ...and not the last epoch's.
    last, _ = train_on(prepared, epochs=len(history), restore_best_epoch=False, **constant)
    assert dense_weights_sha256(longer.model) != dense_weights_sha256(last.model)


def test_early_stopping_stops_once_validation_stops_improving(prepared: Path) -> None:
    # A rate far too small to change a prediction: validation accuracy stays flat.
    result, _ = train_on(prepared, epochs=6, learning_rate=1e-12, early_stopping_patience=2)
    assert len(result.history["loss"]) == 3  # the first epoch, then two without a gain
    assert result.best_epoch == 1


def test_training_runs_every_epoch_without_patience(prepared: Path) -> None:
    result, _ = train_on(prepared, epochs=3, learning_rate=1e-12, early_stopping_patience=0)
    assert len(result.history["loss"]) == 3


def test_the_assignments_softmax_check_refuses_outputs_that_do_not_sum_to_one() -> None:
    check_softmax_sum(1.0)
    check_softmax_sum(1.004)  # prints as 1.00, as the assignment prints it
    with pytest.raises(StageError, match=r"sums to 0\.9900, not 1\.00"):
        check_softmax_sum(0.99)


def run_train(project: Path, name: str) -> object:
    return run_stage("train", train_arguments(name), project, check=False)


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    """A folder with quick training params, next to the session's prepared data."""
    return link_prepared(tmp_path, prepared, {"train": QUICK_TRAIN})


def test_training_twice_gives_bit_identical_outputs(project: Path) -> None:
    for name in ("first", "second"):
        result = run_train(project, name)
        assert result.returncode == 0, result.stderr
    first, second = project / "first", project / "second"
    for relative in ("data/model/model.weights.h5", "data/model/model.json",
                     "reports/train/history.json", "reports/train/summary.json",
                     "reports/train/live/metrics.json",
                     "reports/train/live/plots/metrics/eval/accuracy.tsv"):  # fmt: skip
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative

    first = first / "reports" / "train"
    summary = json.loads((first / "summary.json").read_text())
    assert summary["total_parameters"] == 3072 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert summary["first_sample_output_sum"] == pytest.approx(1.0, abs=1e-5)
    assert 1 <= summary["best_epoch"] <= 2
    history = json.loads((first / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == summary["epochs_run"] == 2
    tsv = (first / "live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert tsv[0] == "step\tloss"
    assert [line.split("\t")[0] for line in tsv[1:]] == ["1", "2"]  # epochs count from 1
    assert load_network(project / "first/data/model").parameter_count == summary["total_parameters"]


def test_training_on_jax_leaves_tensorflow_unloaded(prepared: Path) -> None:
    # What TensorFlow holds once imported would add to training's peak memory.
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from test_train import train_on\n"
        f"train_on(Path({str(prepared)!r}), epochs=2)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'tensorflow'))\n"
    )
    result = run(
        [sys.executable, "-c", code],
        prepared,
        environment={"KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.slow
def test_other_seed_gives_other_weights(project: Path) -> None:
    assert run_train(project, "first").returncode == 0
    write_params(project, {"train": {**QUICK_TRAIN, "seed": 7}})
    assert run_train(project, "other").returncode == 0
    weights = "data/model/model.weights.h5"
    assert (project / "first" / weights).read_bytes() != (project / "other" / weights).read_bytes()


def test_a_failed_run_leaves_no_output_behind(project: Path) -> None:
    (project / "data" / "prepared").unlink()
    (project / "data" / "prepared").mkdir()  # empty: nothing to train on
    result = run_train(project, "out")
    assert result.returncode == 1
    assert result.stderr.startswith("error: data/prepared/")
    assert "run `dvc repro prepare`" in result.stderr
    assert not (project / "out").exists()


def test_a_loss_that_is_not_finite_is_found_at_its_first_epoch() -> None:
    assert diverged_epoch({"loss": [2.3, 1.9, 1.7]}) is None
    epoch, loss = diverged_epoch({"loss": [2.3, float("nan"), float("inf")]})
    assert epoch == 2
    assert np.isnan(loss)
    assert diverged_epoch({"loss": [2.3, float("inf")]}) == (2, float("inf"))


def test_a_backend_other_than_the_params_one_is_refused_in_one_line(project: Path) -> None:
    # As if run without dvc.yaml's KERAS_BACKEND=${train.backend}: Keras loads TensorFlow.
    result = run(
        [sys.executable, "-m", "stages.train", *train_arguments()],
        project,
        check=False,
        environment={"KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: train.backend = 'jax', but Keras loaded its 'tensorflow' backend: it reads "
        "KERAS_BACKEND as it loads; run KERAS_BACKEND=jax python -m stages.train ..., as "
        "dvc.yaml does"
    )
    assert not (project / "data" / "model").exists()


@pytest.mark.slow
def test_the_compilation_cache_changes_no_bit_of_the_results(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "jax-cache"
    digests = {}
    # Without JAX's persistent cache (an empty setting turns it off), then with it cold
    # (it fills) and warm (it serves the compiled steps).
    for name, setting in (("off", ""), ("cold", str(cache)), ("warm", str(cache))):
        run(
            [sys.executable, "-m", "stages.train", *train_arguments(name)],
            project,
            environment={"JAX_COMPILATION_CACHE_DIR": setting},
        )
        summary = json.loads((project / name / "reports/train/summary.json").read_text())
        digests[name] = summary["weights_sha256"]
        if name == "cold":
            assert any(cache.iterdir())  # the compiled steps are there
    assert digests["off"] == digests["cold"] == digests["warm"]
    history = {
        name: (project / name / "reports/train/history.json").read_text() for name in digests
    }
    assert history["off"] == history["cold"] == history["warm"]
