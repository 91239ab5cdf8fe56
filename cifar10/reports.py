"""The reports one stage writes and another reads, each written and read here.

``summary.json`` and ``history.json`` (train: the layers, the kept epoch; Keras'
per-epoch series), ``metrics.json`` (evaluate: the scalars people sort experiments by)
and ``predictions.csv`` (evaluate: one row per test image). Each reader checks what the
file must hold before anything uses it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cifar10.archive import CLASS_NAMES
from cifar10.atomic import json_text
from cifar10.errors import InputError
from cifar10.files import read_json, read_small_file

HISTORY_SERIES = ("loss", "accuracy", "val_loss", "val_accuracy")
PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
# evaluate's predictions of the 10,000 test images are 0.4 MB.
MAX_PREDICTIONS_BYTES = 64 << 20


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def write_summary(path: Path, summary: dict[str, object]) -> None:
    """Write the train stage's summary: its layers, the kept (best) epoch, epochs run."""
    path.write_text(json_text(summary))


def read_best_epoch(path: Path) -> int:
    """Read the kept epoch, from 1, of the train stage's summary."""
    epoch = read_json(path, "train").get("best_epoch")
    if type(epoch) is not int or epoch < 1:
        raise InputError(path, f"best_epoch = {epoch!r} is not an epoch", "train")
    return epoch


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """Write Keras' history: each series, one value per epoch."""
    path.write_text(json_text({name: history[name] for name in HISTORY_SERIES}))


def read_history(path: Path) -> dict[str, list[float]]:
    """Read the train stage's history: every series a list of numbers, all as long."""
    history = read_json(path, "train")
    series = {name: history.get(name) for name in HISTORY_SERIES}
    if (
        not all(
            isinstance(values, list) and values and all(map(_is_number, values))
            for values in series.values()
        )
        or len({len(values) for values in series.values()}) != 1
    ):
        raise InputError(
            path, f"{', '.join(HISTORY_SERIES)} must be lists of numbers, one per epoch", "train"
        )
    return series


def write_metrics(path: Path, validation_accuracy: float, epoch: int, test: dict) -> None:
    """Write the metrics, validation first: experiments are chosen by it."""
    metrics = {"validation": {"accuracy": validation_accuracy, "epoch": epoch}, "test": test}
    path.write_text(json_text(metrics))


def read_metrics(path: Path) -> dict:
    """Read evaluate's metrics: the kept epoch, the validation and test accuracies."""
    metrics = read_json(path, "evaluate")
    try:
        epoch = metrics["validation"]["epoch"]
        accuracies = (metrics["validation"]["accuracy"], metrics["test"]["accuracy"])
    except (KeyError, TypeError) as error:
        raise InputError(path, f"not evaluate's metrics ({error!r} missing)", "evaluate") from None
    if type(epoch) is not int or epoch < 1 or not all(map(_is_number, accuracies)):
        raise InputError(path, "not evaluate's metrics (epoch, accuracies)", "evaluate")
    return metrics


def write_predictions(path: Path, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """One row per image: index, actual and predicted class names, confidence."""
    names = np.asarray(CLASS_NAMES)
    table = pd.DataFrame(
        {
            "index": np.arange(len(labels)),
            "actual": names[labels],
            "predicted": names[probabilities.argmax(axis=1)],
            "confidence": probabilities.max(axis=1).round(6),
        },
        columns=list(PREDICTION_COLUMNS),
    )
    table.to_csv(path, index=False)


def read_predictions(path: Path, images: int) -> pd.DataFrame:
    """Read evaluate's predictions of ``images`` images, indexed by image."""
    try:
        table = pd.read_csv(io.BytesIO(read_small_file(path, MAX_PREDICTIONS_BYTES, "evaluate")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise InputError(path, f"unreadable ({error})", "evaluate") from None
    if tuple(table.columns) != PREDICTION_COLUMNS:
        raise InputError(
            path, f"columns {list(table.columns)[:8]}, not {list(PREDICTION_COLUMNS)}", "evaluate"
        )
    if not (
        pd.api.types.is_integer_dtype(table["index"])
        and np.array_equal(table["index"].to_numpy(), np.arange(images))
    ):
        raise InputError(path, f"rows must be the images 0 to {images - 1}", "evaluate")
    confidence = pd.to_numeric(table["confidence"], errors="coerce")
    if not (
        table["actual"].isin(CLASS_NAMES).all()
        and table["predicted"].isin(CLASS_NAMES).all()
        and confidence.between(0, 1).all()
    ):
        raise InputError(
            path, "classes must be the class names, confidences from 0 to 1", "evaluate"
        )
    return table.set_index("index")
