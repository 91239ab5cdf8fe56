"""The aggregate stage: the seeds' results gathered, with their intervals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_params
from scipy import stats

from cifar10.archive import CLASS_NAMES
from cifar10.command import run as run_command
from cifar10.reports import (
    SeedReports,
    parse_validation_predictions,
    write_cost,
    write_history,
    write_metrics,
    write_predictions,
)

SEEDS_FOLDER = Path("reports/seeds")
OUTPUTS = ("metrics.json", "cost.json", "curves.csv", "validation_predictions.csv")
ARGUMENTS = ["--seeds", str(SEEDS_FOLDER), "--metrics", "metrics.json", "--cost", "cost.json",
             "--curves", "curves.csv",
             "--validation-predictions", "validation_predictions.csv"]  # fmt: skip
LABELS = np.arange(50) % 10
HISTORY = {"loss": [2.0, 1.5], "accuracy": [0.2, 0.4], "val_loss": [2.1, 1.8],
           "val_accuracy": [0.2, 0.3]}  # fmt: skip


def write_seed(root: Path, seed: int, right: int, labels: np.ndarray = LABELS) -> None:
    """A seed's train and evaluate reports whose model gets the first ``right`` images right."""
    reports = SeedReports(root, seed)
    for folder in (reports.train.folder, reports.evaluation.folder):
        folder.mkdir(parents=True)
    predicted = labels.copy()
    predicted[right:] = (labels[right:] + 1) % 10
    probabilities = np.eye(10)[predicted] * 0.5 + 0.05
    write_predictions(reports.evaluation.validation_predictions, labels, probabilities)
    accuracy = right / len(labels)
    write_metrics(
        reports.evaluation.metrics,
        {"accuracy": accuracy, "epoch": 2, "images": len(labels)},
        {"accuracy": accuracy - 0.1, "loss": 1.0 + seed / 100, "macro_f1": 0.5, "images": 40},
    )
    write_history(reports.train.history, HISTORY)
    cost = {"fit_seconds": 10.0, "wall_seconds": 20.0, "peak_memory_mib": 1000.0 + seed,
            "samples_per_second": 4000.0}  # fmt: skip
    write_cost(reports.cost, cost)


def aggregate(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = run_command("stages.aggregate", ARGUMENTS, environ=dict(os.environ))
    return status, capsys.readouterr().err


@pytest.fixture
def three_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with the reports of seeds 42, 7 and 1 (and a stale seed 5)."""
    write_params(tmp_path, {"train": {"seeds": [42, 7, 1]}})
    for seed, right in ((42, 30), (7, 33), (1, 27), (5, 50)):
        write_seed(tmp_path / SEEDS_FOLDER, seed, right)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_metrics_are_the_seeds_mean_with_the_t_interval(
    three_seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = aggregate(capsys)
    assert status == 0, err
    metrics = json.loads((three_seeds / "metrics.json").read_text())
    accuracies = [0.6, 0.66, 0.54]  # seed 5, not in train.seeds, is left out
    expected = stats.t.interval(0.95, 2, loc=np.mean(accuracies), scale=stats.sem(accuracies))
    assert metrics["validation"] == pytest.approx(
        {"accuracy": 0.6, "std": 0.06, "low": expected[0], "high": expected[1], "n": 3,
         "interval": "t over 3 seeds"}, abs=1e-6,
    )  # fmt: skip
    assert metrics["test"]["accuracy"] == pytest.approx(0.5)
    assert metrics["test"]["loss"] == pytest.approx(1 + 50 / 300)
    cost = json.loads((three_seeds / "cost.json").read_text())
    assert cost == {"fit_seconds": 30.0, "wall_seconds": 60.0, "peak_memory_mib": 1042.0,
                    "samples_per_second": 4000.0, "trainings": 3}  # fmt: skip


def test_one_seed_gets_the_binomial_interval_over_its_images(
    three_seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(three_seeds, {"train": {"seeds": [7]}})
    assert aggregate(capsys)[0] == 0
    validation = json.loads((three_seeds / "metrics.json").read_text())["validation"]
    exact = stats.binomtest(33, 50).proportion_ci(0.95)
    assert (validation["low"], validation["high"]) == pytest.approx((exact.low, exact.high))
    assert validation["interval"] == "binomial over 50 images, 1 seed"


def test_curves_and_predictions_hold_every_seed(
    three_seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert aggregate(capsys)[0] == 0
    curves = pd.read_csv(three_seeds / "curves.csv")
    assert sorted(set(curves["curve"])) == sorted(
        f"{seed} {split}" for seed in (42, 7, 1) for split in ("train", "validation")
    )
    assert curves[curves["curve"] == "7 validation"]["accuracy"].tolist() == [0.2, 0.3]
    labels, correct = parse_validation_predictions(
        (three_seeds / "validation_predictions.csv").read_bytes(),
        Path("validation_predictions.csv"),
    )
    assert labels.tolist() == [CLASS_NAMES[label] for label in LABELS]
    assert {seed: int(values.sum()) for seed, values in correct.items()} == {42: 30, 7: 33, 1: 27}


def test_a_missing_seed_names_the_stage_to_run_and_nothing_is_written(
    three_seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_params(three_seeds, {"train": {"seeds": [42, 9]}})
    status, err = aggregate(capsys)
    assert status == 1
    assert err == (
        f"error: {SEEDS_FOLDER}/9/evaluate/metrics.json: missing; run `dvc repro evaluate` to "
        "write it again\n"
    )
    assert not any((three_seeds / output).exists() for output in OUTPUTS)


def test_seeds_validated_on_other_images_are_refused(
    three_seeds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = SEEDS_FOLDER / "8"
    write_seed(three_seeds / SEEDS_FOLDER, 8, 30, labels=(LABELS + 3) % 10)
    write_params(three_seeds, {"train": {"seeds": [42, 8]}})
    status, err = aggregate(capsys)
    assert status == 1
    assert err.startswith(f"error: {other}/evaluate/validation_predictions.csv: its validation")
    assert not any((three_seeds / output).exists() for output in OUTPUTS)
