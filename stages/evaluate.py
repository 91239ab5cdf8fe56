"""evaluate stage: test-set metrics, per-class accuracy and predictions (assignment 2.8).

The saved model runs with numpy alone (stages/inference.py), on the inputs it was
trained on: the prepare stage's uint8 inputs, standardized inside the model (the
notebook's 2.9 fed raw pixels). The stage also measures the validation accuracy of the
model it loads: it must be the kept epoch's, or the model folder is not the one the
train stage wrote.
"""

from __future__ import annotations

from stages.start import start_command

if __name__ == "__main__":
    start_command()  # before the imports below

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from stages.atomic import atomic_outputs, json_text
from stages.cli import StageError, read_json, run_stage, upstream_error
from stages.dataset import (
    Preprocessing,
    Standardization,
    load_class_names,
    load_model_inputs,
    load_standardization,
    read_preprocessing,
)
from stages.inference import DenseNetwork, load_network
from stages.params import read_params_file

PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
HISTORY_SERIES = ("loss", "accuracy", "val_loss", "val_accuracy")
SHA256_HEX_DIGITS = 64
# The validation accuracy measured here and the one Keras logged for the kept epoch:
# the same weights on the same images, up to float rounding near ties.
VALIDATION_AGREEMENT = 0.002


def predictions_table(
    labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> pd.DataFrame:
    """One row per test image: index, actual and predicted class names, confidence."""
    predicted = probabilities.argmax(axis=1)
    names = np.asarray(class_names)
    return pd.DataFrame(
        {
            "index": np.arange(len(labels)),
            "actual": names[labels],
            "predicted": names[predicted],
            "confidence": probabilities.max(axis=1).round(6),
        },
        columns=list(PREDICTION_COLUMNS),
    )


def compute_test_metrics(
    labels: np.ndarray, probabilities: np.ndarray, n_classes: int
) -> dict[str, float]:
    """Loss (cross-entropy), accuracy and macro F1 on the test set."""
    classes = np.arange(n_classes)
    predicted = probabilities.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": float(log_loss(labels, probabilities, labels=classes)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
    }


def per_class_accuracy(
    labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> pd.DataFrame:
    """Accuracy (recall) per class, from the confusion matrix; 0 for an absent class."""
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(len(class_names)))
    accuracy = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return pd.DataFrame({"class": class_names, "accuracy": accuracy.round(6)})


@dataclass(frozen=True)
class KeptModel:
    """What the train stage's summary and history say about the model it kept."""

    weights_sha256: str  # of the kept weights, as stages.inference.weights_sha256 computes it
    epoch: int  # 1-based
    validation_accuracy: float  # as Keras logged it for that epoch


def _checked_history(history: dict, source: Path) -> dict[str, list[float]]:
    """Return the history's series: finite numbers, one length, accuracies from 0 to 1."""
    series = {name: history.get(name) for name in HISTORY_SERIES}
    lengths = {len(values) for values in series.values() if isinstance(values, list)}
    if len(lengths) != 1 or not all(isinstance(values, list) for values in series.values()):
        raise upstream_error(
            source, "train", f"expected the series {', '.join(HISTORY_SERIES)} of one length"
        )
    for name, values in series.items():
        for epoch, value in enumerate(values, start=1):
            high = 1.0 if name.endswith("accuracy") else np.inf
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not np.isfinite(value)
                or not 0 <= value <= high
            ):
                raise upstream_error(
                    source,
                    "train",
                    f"{name} at epoch {epoch} is {value!r}, not a number from 0 to {high}",
                )
    return series


def kept_model(summary: dict, history: dict, source: Path) -> KeptModel:
    """Read the kept model's description from the train stage's summary and history.

    ``source`` is the history file, named in errors; anything out of place (an epoch
    outside the history, a value that is not a finite number) is refused.
    """
    accuracies = _checked_history(history, source)["val_accuracy"]
    epoch, digest = summary.get("best_epoch"), summary.get("weights_sha256")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= len(accuracies):
        raise upstream_error(
            source,
            "train",
            f"best_epoch = {epoch!r} is not an epoch of it (1 to {len(accuracies)})",
        )
    if not isinstance(digest, str) or len(digest) != SHA256_HEX_DIGITS:
        raise upstream_error(source, "train", f"weights_sha256 = {digest!r} is not a sha256")
    return KeptModel(digest, epoch, accuracies[epoch - 1])


def check_kept_model(
    network: DenseNetwork, kept: KeptModel, measured_accuracy: float, source: Path
) -> None:
    """Refuse a model folder that is not the train stage's kept model, exactly."""
    if network.weights_sha256 != kept.weights_sha256:
        raise StageError(
            f"{source}: not the weights the train stage kept (their sha256 differs from its "
            "summary's); run `dvc repro train`"
        )
    # The same weights on the same images: only a history that is not theirs differs.
    if abs(measured_accuracy - kept.validation_accuracy) > VALIDATION_AGREEMENT:
        raise StageError(
            f"{source}: validation accuracy {measured_accuracy:.4f}, but training logged "
            f"{kept.validation_accuracy:.4f} for the kept epoch {kept.epoch}: the history is "
            "not this model's; run `dvc repro train`"
        )


def same_preprocessing(first: Preprocessing, second: Preprocessing) -> bool:
    """Whether two preprocessings make the same inputs: same mode, same fitted whitening."""
    if first.scaling != second.scaling:
        return False
    if first.whitening is None or second.whitening is None:
        return first.whitening is second.whitening
    return all(
        np.array_equal(getattr(first.whitening, name), getattr(second.whitening, name))
        for name in ("mean", "components", "gains", "epsilon", "std")
    )


def check_same_inputs(
    network: DenseNetwork,
    class_names: tuple[str, ...],
    prepared: tuple[Path, Preprocessing, Standardization],
    model: tuple[Path, Preprocessing],
) -> None:
    """Refuse a prepared folder that is not what the model was trained on.

    Its preprocessing (recorded in both folders), its standardization (inside the
    model) and its classes must be the model's: else the model is not at fault, the
    prepared data changed since training.
    """
    prepared_folder, prepared_preprocessing, standardization = prepared
    model_folder, model_preprocessing = model
    same_standardization = np.allclose(
        network.mean, standardization.mean, rtol=1e-6, atol=0
    ) and np.allclose(network.scale, standardization.scale, rtol=1e-6, atol=0)
    if not (
        same_preprocessing(prepared_preprocessing, model_preprocessing) and same_standardization
    ):
        raise StageError(
            f"{prepared_folder}: its input scaling ({prepared_preprocessing.scaling!r}, fitted "
            f"on its train split) is not the one {model_folder} was trained on "
            f"({model_preprocessing.scaling!r}): the prepared data changed since training; "
            "`dvc repro` trains a model on it"
        )
    if network.layers[-1].bias.size != len(class_names):
        raise StageError(
            f"{prepared_folder}: {len(class_names)} classes, but {model_folder} has "
            f"{network.layers[-1].bias.size} outputs; `dvc repro` trains a model on it"
        )


def main() -> None:
    """Evaluate the trained model on the test split and write metrics and tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True, help="train summary JSON")
    parser.add_argument("--history", type=Path, required=True, help="train history JSON")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions CSV")
    parser.add_argument("--per-class", type=Path, required=True, help="per-class accuracy CSV")
    arguments = parser.parse_args()
    params_file = read_params_file()
    params = params_file.params.evaluate

    kept = kept_model(
        read_json(arguments.summary, "train"),
        read_json(arguments.history, "train"),
        arguments.history,
    )
    class_names = load_class_names(arguments.prepared)
    network = load_network(arguments.model)
    preprocessing = read_preprocessing(arguments.prepared)
    check_same_inputs(
        network,
        class_names,
        (arguments.prepared, preprocessing, load_standardization(arguments.prepared)),
        (arguments.model, read_preprocessing(arguments.model, "train")),
    )
    validation = load_model_inputs(arguments.prepared, "validation", preprocessing)
    validation_accuracy = float(
        accuracy_score(
            validation.labels, network.predict(validation.images, params.batch_size).argmax(axis=1)
        )
    )
    check_kept_model(network, kept, validation_accuracy, arguments.model)
    test = load_model_inputs(arguments.prepared, "test", preprocessing)
    probabilities = network.predict(test.images, params.batch_size)

    # Validation first: experiments are chosen by it, and `dvc exp show` keeps this order.
    metrics = {
        "validation": {"accuracy": validation_accuracy, "epoch": kept.epoch},
        "test": compute_test_metrics(test.labels, probabilities, len(class_names)),
    }
    outputs = (arguments.metrics, arguments.predictions, arguments.per_class)
    with atomic_outputs(*outputs, before_commit=params_file.check_unchanged) as (
        metrics_file,
        predictions_file,
        per_class_file,
    ):
        metrics_file.write_text(json_text(metrics))
        predictions_table(test.labels, probabilities, class_names).to_csv(
            predictions_file, index=False
        )
        per_class_accuracy(test.labels, probabilities, class_names).to_csv(
            per_class_file, index=False
        )
    test_figures = metrics["test"]
    print(
        f"test accuracy {test_figures['accuracy']:.4f}, loss {test_figures['loss']:.4f}, "
        f"macro F1 {test_figures['macro_f1']:.4f}; validation accuracy {validation_accuracy:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
