"""Training: the optimizer and its schedule, early stopping, the kept epoch, the train stage."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import (
    MODEL,
    QUICK_TRAIN,
    SEED,
    SEED_REPORTS,
    link_prepared,
    quick_train_params,
    run,
    run_stage,
    train_arguments,
    train_outputs,
    write_params,
)

from cifar10.archive import FEATURES
from cifar10.command import run as run_command
from cifar10.errors import PipelineError
from cifar10.model import load_classifier
from cifar10.prepared import read_model_inputs, read_preprocessing
from cifar10.training import (
    LiveLogger,
    TrainingResult,
    check_backend,
    check_softmax_sum,
    diverged_epoch,
    make_optimizer,
    train,
)

# Trains on the JAX backend in these tests, whatever params.yaml says.
JAX_TRAIN = {**QUICK_TRAIN, "backend": "jax", "distribute": "none"}


def learning_rates(params_changes: dict, steps_per_epoch: int, steps: list[int]) -> list[float]:
    """The optimizer's learning rate after each of ``steps`` training steps."""
    optimizer = make_optimizer(quick_train_params(**params_changes), steps_per_epoch)
    rates = []
    for step in steps:
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return rates


def test_the_cosine_schedule_decays_from_the_peak_to_zero() -> None:
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


def test_a_constant_rate_with_and_without_warmup() -> None:
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


def test_the_assignments_softmax_check_refuses_outputs_that_do_not_sum_to_one() -> None:
    check_softmax_sum(1.0)
    check_softmax_sum(1.004)  # prints as 1.00, as the assignment prints it
    with pytest.raises(PipelineError, match=r"sums to 0\.9900, not 1\.00"):
        check_softmax_sum(0.99)


def test_a_loss_that_is_not_finite_is_found_at_its_first_epoch() -> None:
    assert diverged_epoch({"loss": [2.3, 1.9, 1.7]}) is None
    epoch, loss = diverged_epoch({"loss": [2.3, float("nan"), float("inf")]})
    assert epoch == 2
    assert np.isnan(loss)
    assert diverged_epoch({"loss": [2.3, float("inf")]}) == (2, float("inf"))


def test_a_backend_other_than_the_params_one_is_refused_naming_the_command() -> None:
    check_backend("jax", "jax")
    with pytest.raises(PipelineError) as caught:
        check_backend("jax", "tensorflow")
    assert str(caught.value) == (
        "train.backend = 'jax', but Keras loaded its 'tensorflow' backend: it reads "
        "KERAS_BACKEND as it loads; run KERAS_BACKEND=jax python -m stages train ..., as "
        "dvc.yaml does"
    )


class RecordingLive:
    """What LiveLogger needs of dvclive's Live: a step, metrics, the next step."""

    def __init__(self) -> None:
        self.step = 0
        self.logged: list[tuple[int, str, float]] = []

    def log_metric(self, name: str, value: float) -> None:
        self.logged.append((self.step, name, value))

    def next_step(self) -> None:
        pass


def test_epochs_are_logged_from_1_under_the_names_the_plots_read() -> None:
    live = RecordingLive()
    logger = LiveLogger(live)
    logger.on_epoch_end(0, {"loss": 2.0, "val_accuracy": 0.25})
    logger.on_epoch_end(1, {"loss": 1.5})
    assert live.logged == [(1, "train/loss", 2.0), (1, "validation/accuracy", 0.25),
                           (2, "train/loss", 1.5)]  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    """A folder with quick training params, next to the session's prepared data."""
    return link_prepared(tmp_path, prepared, {"train": JAX_TRAIN})


def test_a_failed_run_leaves_no_output_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_params(tmp_path, {"train": JAX_TRAIN})
    (project / "data" / "prepared").mkdir(parents=True)  # empty: nothing to train on
    monkeypatch.chdir(project)
    capsys.readouterr()
    status = run_command("stages.train", train_arguments("out"), environ=dict(os.environ))
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: data/prepared/")
    assert "run `dvc repro prepare`" in err
    assert err.count("\n") == 1
    assert not (project / "out").exists()


def test_a_seed_not_in_train_seeds_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_params(tmp_path, {"train": {**JAX_TRAIN, "seeds": [SEED, 7]}})
    monkeypatch.chdir(project)
    capsys.readouterr()
    status = run_command("stages.train", train_arguments("out", 3), environ=dict(os.environ))
    assert status == 1
    assert capsys.readouterr().err == "error: --seed 3 is not one of train.seeds = [42, 7]\n"
    assert not (project / "out").exists()


def train_on(prepared: Path, **changes: object) -> TrainingResult:
    """Train in this process on a prepared folder, with quick params and ``changes``."""
    preprocessing = read_preprocessing(prepared)
    params = quick_train_params(**changes)
    return train(
        read_model_inputs(prepared, "train", preprocessing),
        read_model_inputs(prepared, "validation", preprocessing),
        preprocessing=preprocessing,
        n_classes=10,
        params=params,
        seed=params.seeds[0],
        batch_size=params.batch_size,
        live=None,
    )


def same_weights(first: keras.Model, second: keras.Model) -> bool:
    return all(
        np.array_equal(one, other)
        for one, other in zip(first.get_weights(), second.get_weights(), strict=True)
    )


@pytest.mark.integration
def test_the_kept_model_is_the_one_training_had_at_its_best_epoch(prepared: Path) -> None:
    # A constant rate without warm-up: the first b epochs of a longer run are a run of b
    # epochs, step for step. So a run of exactly the best epoch's length is the oracle.
    # A rate this high peaks early, then loses its way.
    constant = {"lr_schedule": "constant", "warmup_epochs": 0, "learning_rate": 0.2,
                "early_stopping_patience": 0}  # fmt: skip
    longer = train_on(prepared, epochs=6, restore_best_epoch=True, **constant)
    history = longer.history["val_accuracy"]
    best = history.index(max(history)) + 1
    assert best < len(history), "the oracle needs a best epoch before the last"
    assert longer.best_epoch == best
    shorter = train_on(prepared, epochs=best, restore_best_epoch=False, **constant)
    assert same_weights(longer.model, shorter.model)
    # ...and not the last epoch's.
    last = train_on(prepared, epochs=len(history), restore_best_epoch=False, **constant)
    assert not same_weights(longer.model, last.model)


@pytest.mark.integration
def test_early_stopping_stops_once_validation_stops_improving(prepared: Path) -> None:
    # A rate far too small to change a prediction: validation accuracy stays flat.
    result = train_on(prepared, epochs=6, learning_rate=1e-12, early_stopping_patience=2,
                      restore_best_epoch=True)  # fmt: skip
    assert len(result.history["loss"]) == 3  # the first epoch, then two without a gain
    assert result.best_epoch == 1


@pytest.mark.integration
def test_training_runs_every_epoch_without_patience(prepared: Path) -> None:
    result = train_on(prepared, epochs=3, learning_rate=1e-12, early_stopping_patience=0)
    assert len(result.history["loss"]) == 3


def run_train(
    project: Path, name: str, environment: dict[str, str] | None = None, seed: int = SEED
) -> object:
    return run_stage("train", train_arguments(name, seed), project, environment=environment)


REPORTS = SEED_REPORTS.train.folder.as_posix()
TRAIN_FILES = (f"{MODEL}/model.keras", f"{MODEL}/classes.json",
               f"{MODEL}/preprocessing.json", f"{MODEL}/preprocessing.npz",
               f"{REPORTS}/history.json", f"{REPORTS}/summary.json",
               f"{REPORTS}/live/metrics.json",
               f"{REPORTS}/live/plots/metrics/validation/accuracy.tsv")  # fmt: skip


@pytest.mark.integration
def test_training_twice_gives_bit_identical_outputs_and_another_seed_others(
    project: Path,
) -> None:
    for name in ("first", "second"):
        run_train(project, name)
    first, second = project / "first", project / "second"
    for relative in TRAIN_FILES:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    # Another seed trains another model, whatever else it is listed with.
    write_params(project, {"train": {**JAX_TRAIN, "seeds": [SEED, 7]}})
    run_train(project, "other", seed=7)
    other = project / "other" / train_outputs(7)[0] / "model.keras"
    assert (first / MODEL / "model.keras").read_bytes() != other.read_bytes()
    cost = json.loads((first / SEED_REPORTS.cost).read_text())
    assert set(cost) == {"fit_seconds", "wall_seconds", "peak_memory_mib", "samples_per_second"}
    assert 0 < cost["fit_seconds"] < cost["wall_seconds"]
    assert cost["peak_memory_mib"] > 100  # Keras and JAX alone take more

    reports = first / SEED_REPORTS.train.folder
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["total_parameters"] == FEATURES * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert summary["first_sample_output_sum"] == pytest.approx(1.0, abs=1e-5)
    assert 1 <= summary["best_epoch"] <= 2
    history = json.loads((reports / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == summary["epochs_run"] == 2
    tsv = (reports / "live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert tsv[0] == "step\tloss"
    assert [line.split("\t")[0] for line in tsv[1:]] == ["1", "2"]  # epochs count from 1
    classifier = load_classifier(first / MODEL)
    assert classifier.model.count_params() == summary["total_parameters"]


@pytest.mark.integration
def test_training_on_jax_leaves_tensorflow_unloaded(prepared: Path) -> None:
    # What TensorFlow holds once imported would add to training's peak memory. (Saving
    # the model imports it afterwards: Keras' serializer asks about TensorFlow's types.)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from test_training import train_on\n"
        f"train_on(Path({str(prepared)!r}), epochs=2)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'tensorflow'))\n"
    )
    result = run(
        [sys.executable, "-c", code],
        prepared,
        environment={"KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.integration
def test_a_backend_other_than_the_params_one_is_refused_in_one_line(project: Path) -> None:
    # As if run without dvc.yaml's KERAS_BACKEND=${train.backend}: Keras loads TensorFlow.
    result = run_stage(
        "train", train_arguments(), project, check=False,
        environment={"KERAS_BACKEND": "tensorflow"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: train.backend = 'jax', but Keras loaded its 'tensorflow' backend: it reads "
        "KERAS_BACKEND as it loads; run KERAS_BACKEND=jax python -m stages train ..., as "
        "dvc.yaml does"
    )
    assert not (project / MODEL).exists()


@pytest.mark.integration
def test_the_compilation_cache_changes_no_bit_of_the_results(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "jax-cache"
    # Without JAX's persistent cache (an empty setting turns it off), then with it cold
    # (it fills) and warm (it serves the compiled steps).
    for name, setting in (("off", ""), ("cold", str(cache)), ("warm", str(cache))):
        run_train(project, name, environment={"JAX_COMPILATION_CACHE_DIR": setting})
        if name == "cold":
            assert any(cache.iterdir())  # the compiled steps are there
    for relative in (f"{MODEL}/model.keras", f"{REPORTS}/history.json"):
        off, cold, warm = ((project / name / relative).read_bytes()
                           for name in ("off", "cold", "warm"))  # fmt: skip
        assert off == cold == warm, relative
