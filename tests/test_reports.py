"""The reports stages pass on: each written then read back, each malformed one a line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cifar10.errors import InputError
from cifar10.reports import (
    COST_KEYS,
    MAX_PREDICTIONS_BYTES,
    PREDICTION_COLUMNS,
    parse_validation_predictions,
    read_aggregate,
    read_best_epoch,
    read_cost,
    read_history,
    read_metrics,
    read_predictions,
    write_cost,
    write_history,
    write_metrics,
    write_predictions,
    write_summary,
    write_validation_predictions,
)


def refusal(read: Callable[[], object], path: Path, stage: str) -> str:
    """Read a malformed report: one line naming the file and the stage that writes it."""
    with pytest.raises(InputError) as caught:
        read()
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert message.endswith(f"; run `dvc repro {stage}` to write it again")
    assert "\n" not in message
    return message


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_the_summary_gives_back_its_kept_epoch(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_summary(path, {"total_parameters": 402_250, "best_epoch": 7, "epochs_run": 9})
    assert json.loads(path.read_text())["total_parameters"] == 402_250
    assert read_best_epoch(path) == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"best_epoch": 0}, "best_epoch = 0 is not an epoch"),
        ({"best_epoch": "2"}, "best_epoch = '2' is not an epoch"),
        ({"best_epoch": True}, "best_epoch = True is not an epoch"),
        ({"epochs_run": 3}, "best_epoch = None is not an epoch"),
        ([1], "expected a JSON dict, got list"),
    ],
)
def test_a_summary_without_a_kept_epoch_is_one_line(
    tmp_path: Path, content: object, message: str
) -> None:
    path = write_json(tmp_path / "summary.json", content)
    assert message in refusal(lambda: read_best_epoch(path), path, "train")


HISTORY = {"loss": [2.0, 1.5], "accuracy": [0.2, 0.4], "val_loss": [2.1, 1.8],
           "val_accuracy": [0.2, 0.3]}  # fmt: skip


def test_the_history_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    # Keras' history may hold more series (the learning rate, say): the four are kept.
    write_history(path, {**HISTORY, "learning_rate": [0.1, 0.1]})
    assert list(json.loads(path.read_text())) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert read_history(path) == HISTORY


@pytest.mark.parametrize(
    "history",
    [
        {**HISTORY, "val_loss": None},
        {key: value for key, value in HISTORY.items() if key != "accuracy"},
        {**HISTORY, "loss": [2.0, "x"]},
        {**HISTORY, "loss": [2.0, True]},
        {**HISTORY, "loss": [2.0]},
        {key: [] for key in HISTORY},
    ],
)
def test_a_history_without_what_the_figures_plot_is_one_line(tmp_path: Path, history: dict) -> None:
    path = write_json(tmp_path / "history.json", history)
    message = refusal(lambda: read_history(path), path, "train")
    assert "loss, accuracy, val_loss, val_accuracy must be lists of numbers, one per epoch" in (
        message
    )


def test_the_metrics_read_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    test = {"accuracy": 0.58, "loss": 1.2, "macro_f1": 0.57, "images": 10_000}
    validation = {"accuracy": 0.59, "epoch": 27, "images": 10_000}
    write_metrics(path, validation, test)
    assert list(json.loads(path.read_text())) == ["validation", "test"]  # chosen by validation
    assert read_metrics(path) == {"validation": validation, "test": test}


@pytest.mark.parametrize(
    "metrics",
    [
        {"validation": {"epoch": 1, "accuracy": 0.5}},
        {
            "validation": {"epoch": "1", "accuracy": 0.5, "images": 9},
            "test": {"accuracy": 0.4, "images": 9},
        },
        {
            "validation": {"epoch": 0, "accuracy": 0.5, "images": 9},
            "test": {"accuracy": 0.4, "images": 9},
        },
        {
            "validation": {"epoch": 1, "accuracy": "high", "images": 9},
            "test": {"accuracy": 0.4, "images": 9},
        },
        {"validation": [1], "test": {"accuracy": 0.4}},
        {
            "validation": {"epoch": 1, "accuracy": 0.5, "images": 0},
            "test": {"accuracy": 0.4, "images": 10},
        },
    ],
)
def test_metrics_without_the_kept_epoch_and_accuracies_are_one_line(
    tmp_path: Path, metrics: dict
) -> None:
    path = write_json(tmp_path / "metrics.json", metrics)
    assert "not evaluate's metrics" in refusal(lambda: read_metrics(path), path, "evaluate")


def test_predictions_name_the_classes_and_read_back_by_image(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    probabilities = np.eye(10)[[3, 5]] * 0.8 + 0.02
    write_predictions(path, np.array([3, 4]), probabilities)
    table = pd.read_csv(path)
    assert tuple(table.columns) == PREDICTION_COLUMNS
    assert table["actual"].tolist() == ["cat", "deer"]
    assert table["predicted"].tolist() == ["cat", "dog"]
    assert table["confidence"].tolist() == [0.82, 0.82]
    read = read_predictions(path, 2)
    assert read.index.tolist() == [0, 1]
    assert read["actual"].tolist() == ["cat", "deer"]


@pytest.fixture
def predictions_file(tmp_path: Path) -> Path:
    labels = (np.arange(30) % 10).astype(np.uint8)
    path = tmp_path / "predictions.csv"
    write_predictions(path, labels, np.eye(10)[(labels + 1) % 10] * 0.5 + 0.05)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda table: table.drop(columns="confidence"), r"columns ['index', 'actual', "),
        (lambda table: table.assign(index=table["index"] + 100), "rows must be the images"),
        (lambda table: table.assign(index=table["index"] * 1.0), "rows must be the images"),
        (lambda table: table.head(20), "rows must be the images 0 to 29"),
        (lambda table: table.assign(predicted="unicorn"), "classes must be the class names"),
        (lambda table: table.assign(confidence=1.5), "confidences from 0 to 1"),
        (lambda table: table.assign(confidence="high"), "confidences from 0 to 1"),
    ],
)
def test_predictions_that_do_not_fit_the_test_images_are_one_line(
    predictions_file: Path, change: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    change(pd.read_csv(predictions_file)).to_csv(predictions_file, index=False)
    text = refusal(lambda: read_predictions(predictions_file, 30), predictions_file, "evaluate")
    assert message in text, text


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "unreadable (No columns to parse from file)"), (b'a,"b\n1', "unreadable")],
)
def test_predictions_that_are_not_csv_are_one_line(
    predictions_file: Path, content: bytes, message: str
) -> None:
    predictions_file.write_bytes(content)
    text = refusal(lambda: read_predictions(predictions_file, 30), predictions_file, "evaluate")
    assert message in text, text


def test_predictions_larger_than_evaluate_writes_are_refused_unread(
    predictions_file: Path,
) -> None:
    os.truncate(predictions_file, MAX_PREDICTIONS_BYTES + 1)  # sparse
    text = refusal(lambda: read_predictions(predictions_file, 30), predictions_file, "evaluate")
    assert f"{MAX_PREDICTIONS_BYTES + 1:,} bytes, more than the" in text


def test_the_cost_reads_back_rounded(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    write_cost(path, {"fit_seconds": 12.345, "wall_seconds": 30.06, "peak_memory_mib": 1100.44,
                      "samples_per_second": 39999.96})  # fmt: skip
    expected = {"fit_seconds": 12.3, "wall_seconds": 30.1, "peak_memory_mib": 1100.4,
                "samples_per_second": 40000.0}  # fmt: skip
    assert read_cost(path) == expected


@pytest.mark.parametrize(
    "cost",
    [{"fit_seconds": 1.0}, dict.fromkeys(COST_KEYS, "1"), dict.fromkeys(COST_KEYS)],
)
def test_a_cost_without_its_numbers_is_one_line(tmp_path: Path, cost: dict) -> None:
    path = write_json(tmp_path / "cost.json", cost)
    assert "must be numbers" in refusal(lambda: read_cost(path), path, "train")


def test_validation_predictions_of_every_seed_read_back_as_correctness(tmp_path: Path) -> None:
    path = tmp_path / "validation_predictions.csv"
    labels = np.array([0, 1, 2, 3])
    write_validation_predictions(path, labels, {42: np.array([0, 1, 0, 3]), 7: labels})
    assert path.read_text().splitlines()[:2] == [
        "index,actual,seed 42,seed 7",
        "0,airplane,airplane,airplane",
    ]
    actual, correct = parse_validation_predictions(path.read_bytes(), path)
    assert actual.tolist() == ["airplane", "automobile", "bird", "cat"]
    assert {seed: values.tolist() for seed, values in correct.items()} == {
        42: [True, True, False, True],
        7: [True, True, True, True],
    }


@pytest.mark.parametrize(
    "text",
    [
        "index,actual\n0,cat\n",  # no seed
        "index,actual,seed x\n0,cat,cat\n",
        "index,label,seed 1\n0,cat,cat\n",
        "index,actual,seed 1\n0,cat,kitten\n",
        "",
    ],
)
def test_validation_predictions_not_in_their_layout_are_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "validation_predictions.csv"
    path.write_text(text)
    message = refusal(
        lambda: parse_validation_predictions(path.read_bytes(), path), path, "aggregate"
    )
    assert "validation predictions" in message or "unreadable" in message


@pytest.mark.parametrize(
    "aggregate",
    [{"validation": {"accuracy": 0.5}}, {"validation": [], "test": {}},
     {key: {"accuracy": "a", "low": 0, "high": 1, "interval": "t"}
      for key in ("validation", "test")}],
)  # fmt: skip
def test_aggregate_metrics_without_their_intervals_are_one_line(
    tmp_path: Path, aggregate: dict
) -> None:
    path = write_json(tmp_path / "metrics.json", aggregate)
    assert "not the aggregate metrics" in refusal(lambda: read_aggregate(path), path, "aggregate")
