"""The reports one stage writes and another reads, each written and read here.

Per seed, the train stage writes a folder (:class:`TrainReports`: dvclive's logs,
``summary.json`` with the layers and the kept epoch, ``history.json`` with Keras'
per-epoch series) and ``cost.json`` (what the training cost: the one output that differs
between two identical runs); the evaluate stage writes a folder
(:class:`EvaluationReports`: ``metrics.json``, the validation and test predictions, one
row per image, and the per-class accuracy). The aggregate stage writes the metrics
people sort experiments by, over the seeds. Each reader checks what the file must hold
before anything uses it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cifar10.archive import CLASS_NAMES
from cifar10.atomic import json_text
from cifar10.errors import InputError
from cifar10.files import read_json, read_small_file

HISTORY_SERIES = ("loss", "accuracy", "val_loss", "val_accuracy")
COST_KEYS = ("fit_seconds", "wall_seconds", "peak_memory_mib", "samples_per_second")
CURVE_COLUMNS = ("epoch", "curve", "loss", "accuracy")
PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
# evaluate's predictions of the 10,000 test images are 0.4 MB.
MAX_PREDICTIONS_BYTES = 64 << 20


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainReports:
    """The train stage's report folder of one seed."""

    folder: Path

    @property
    def live(self) -> Path:
        """Dvclive's folder: its per-epoch TSVs."""
        return self.folder / "live"

    @property
    def summary(self) -> Path:
        """The layers, the kept epoch, the epochs run."""
        return self.folder / "summary.json"

    @property
    def history(self) -> Path:
        """Keras' per-epoch series."""
        return self.folder / "history.json"


@dataclass(frozen=True)
class EvaluationReports:
    """The evaluate stage's report folder of one seed."""

    folder: Path

    @property
    def metrics(self) -> Path:
        """The seed's accuracies, kept epoch and test metrics."""
        return self.folder / "metrics.json"

    @property
    def validation_predictions(self) -> Path:
        """One row per validation image."""
        return self.folder / "validation_predictions.csv"

    @property
    def test_predictions(self) -> Path:
        """One row per test image."""
        return self.folder / "predictions.csv"

    @property
    def per_class(self) -> Path:
        """Test accuracy per class."""
        return self.folder / "per_class_accuracy.csv"


@dataclass(frozen=True)
class SeedReports:
    """One seed's reports under the seeds' folder.

    ``<seed>/train``, ``<seed>/evaluate`` and ``<seed>/cost.json``: the outs that
    dvc.yaml's train and evaluate matrices declare (tests/test_dvc_yaml.py checks).
    """

    root: Path
    seed: int

    @property
    def train(self) -> TrainReports:
        """The seed's train report folder."""
        return TrainReports(self.root / str(self.seed) / "train")

    @property
    def evaluation(self) -> EvaluationReports:
        """The seed's evaluate report folder."""
        return EvaluationReports(self.root / str(self.seed) / "evaluate")

    @property
    def cost(self) -> Path:
        """What the seed's training cost."""
        return self.root / str(self.seed) / "cost.json"


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


def write_metrics(path: Path, validation: Mapping[str, object], test: Mapping[str, object]) -> None:
    """Write one seed's metrics, validation first: experiments are chosen by it.

    ``validation`` holds the accuracy, the kept epoch and the number of images; ``test``
    the accuracy, the number of images and the other test metrics.
    """
    path.write_text(json_text({"validation": dict(validation), "test": dict(test)}))


def read_metrics(path: Path) -> dict:
    """Read one seed's metrics: the kept epoch, the accuracies and their numbers of images."""
    metrics = read_json(path, "evaluate")
    try:
        epoch = metrics["validation"]["epoch"]
        accuracies = (metrics["validation"]["accuracy"], metrics["test"]["accuracy"])
        images = (metrics["validation"]["images"], metrics["test"]["images"])
    except (KeyError, TypeError) as error:
        raise InputError(path, f"not evaluate's metrics ({error!r} missing)", "evaluate") from None
    if (
        type(epoch) is not int
        or epoch < 1
        or not all(map(_is_number, accuracies))
        or not all(type(count) is int and count > 0 for count in images)
    ):
        raise InputError(path, "not evaluate's metrics (epoch, accuracies, images)", "evaluate")
    return metrics


def write_cost(path: Path, cost: Mapping[str, float]) -> None:
    """Write what one training cost (COST_KEYS), rounded to what is meaningful."""
    path.write_text(json_text({key: round(float(cost[key]), 1) for key in COST_KEYS}))


def read_cost(path: Path) -> dict[str, float]:
    """Read a training's cost: every COST_KEYS a finite number."""
    cost = read_json(path, "train")
    if not all(_is_number(cost.get(key)) and math.isfinite(cost[key]) for key in COST_KEYS):
        raise InputError(path, f"{', '.join(COST_KEYS)} must be numbers", "train")
    return {key: float(cost[key]) for key in COST_KEYS}


def write_aggregate(path: Path, aggregate: Mapping[str, object]) -> None:
    """Write the aggregate stage's metrics: the accuracies over seeds, or the cost."""
    path.write_text(json_text(aggregate))


def read_aggregate(path: Path) -> dict:
    """Read the aggregate stage's metrics: each split's mean accuracy and its interval."""
    aggregate = read_json(path, "aggregate")
    try:
        values = [aggregate[split][key] for split in ("validation", "test")
                  for key in ("accuracy", "low", "high")]  # fmt: skip
        methods = [aggregate[split]["interval"] for split in ("validation", "test")]
    except (KeyError, TypeError) as error:
        raise InputError(
            path, f"not the aggregate metrics ({error!r} missing)", "aggregate"
        ) from None
    if not all(map(_is_number, values)) or not all(isinstance(method, str) for method in methods):
        raise InputError(path, "not the aggregate metrics (accuracies, intervals)", "aggregate")
    return aggregate


def write_curves(path: Path, histories: Mapping[int, Mapping[str, list[float]]]) -> None:
    """Write every seed's per-epoch loss and accuracy, train and validation.

    One row per epoch and curve (``42 train``, ``42 validation``): DVC's plots read a
    long table.
    """
    rows = []
    for seed, history in histories.items():
        for split, prefix in (("train", ""), ("validation", "val_")):
            for epoch, (loss, accuracy_value) in enumerate(
                zip(history[f"{prefix}loss"], history[f"{prefix}accuracy"], strict=True), start=1
            ):
                rows.append((epoch, f"{seed} {split}", round(loss, 6), round(accuracy_value, 6)))
    pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).to_csv(path, index=False)


def write_validation_predictions(
    path: Path, labels: np.ndarray, predicted: Mapping[int, np.ndarray]
) -> None:
    """Write each seed's predicted class of every validation image, with its label.

    One row per image: ``actual``, then a ``seed <seed>`` column per seed; what paired
    comparisons of experiments read (cifar10/compare.py).
    """
    names = np.asarray(CLASS_NAMES)
    columns = {"actual": names[labels]} | {
        f"seed {seed}": names[classes] for seed, classes in predicted.items()
    }
    pd.DataFrame(columns).to_csv(path, index_label="index")


def parse_validation_predictions(
    data: bytes, origin: Path
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Read :func:`write_validation_predictions`' table from ``data`` (the file ``origin``).

    Return the labels, and per seed whether it got each image right.
    """
    try:
        table = pd.read_csv(io.BytesIO(data), index_col="index", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise InputError(origin, f"unreadable ({error})", "aggregate") from None
    seeds = [column.removeprefix("seed ") for column in table.columns[1:]]
    if (
        list(table.columns[:1]) != ["actual"]
        or not seeds
        or not all(seed.isdecimal() and column.startswith("seed ")
                   for seed, column in zip(seeds, table.columns[1:], strict=True))
        or not table.isin(CLASS_NAMES).all().all()
    ):  # fmt: skip
        raise InputError(
            origin, "not the validation predictions (actual, then seed columns of class names)",
            "aggregate",
        )  # fmt: skip
    labels = table["actual"].to_numpy()
    correct = {
        int(seed): table[column].to_numpy() == labels
        for seed, column in zip(seeds, table.columns[1:], strict=True)
    }
    return labels, correct


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


def read_predictions(path: Path, images: int | None = None) -> pd.DataFrame:
    """Read evaluate's predictions of ``images`` images (None: any number), by image."""
    try:
        table = pd.read_csv(io.BytesIO(read_small_file(path, MAX_PREDICTIONS_BYTES, "evaluate")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise InputError(path, f"unreadable ({error})", "evaluate") from None
    if tuple(table.columns) != PREDICTION_COLUMNS:
        raise InputError(
            path, f"columns {list(table.columns)[:8]}, not {list(PREDICTION_COLUMNS)}", "evaluate"
        )
    images = len(table) if images is None else images
    if not (
        pd.api.types.is_integer_dtype(table["index"])
        and np.array_equal(table["index"].to_numpy(), np.arange(images))
        and images > 0
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
