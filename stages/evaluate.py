"""evaluate stage: test-set metrics, per-class accuracy and predictions (assignment 2.8).

The saved model runs with numpy alone (stages/inference.py), on the inputs it was
trained on: the prepare stage's uint8 inputs, standardized inside the model (the
notebook's 2.9 fed raw pixels). The stage also measures the validation accuracy of the
model it loads: it must be the kept epoch's, or the model folder is not the one the
train stage wrote.
"""

from __future__ import annotations

from stages.interrupt import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # first: the imports below take up to seconds

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from stages.atomic import atomic_outputs, json_text
from stages.cli import StageError, read_json, run_stage, upstream_error
from stages.dataset import (
    Standardization,
    Whitening,
    load_class_names,
    load_model_inputs,
    load_standardization,
    load_whitening,
)
from stages.inference import DenseNetwork, load_network
from stages.params import load_params

PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
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

    parameters: int
    epoch: int  # 1-based
    validation_accuracy: float  # as Keras logged it for that epoch


def kept_model(summary: dict, history: dict, source: Path) -> KeptModel:
    """Read the kept model's description from the train stage's summary and history."""
    try:
        epoch = int(summary["best_epoch"])
        return KeptModel(
            int(summary["total_parameters"]), epoch, float(history["val_accuracy"][epoch - 1])
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise upstream_error(source, "train", f"not the train stage's record ({error!r})") from None


def check_kept_model(
    network: DenseNetwork, kept: KeptModel, measured_accuracy: float, source: Path
) -> None:
    """Refuse a model folder that is not the train stage's kept model."""
    if network.parameter_count != kept.parameters:
        raise StageError(
            f"{source}: a model of {network.parameter_count:,} parameters, but the train "
            f"stage's summary says {kept.parameters:,}: the folder does not hold the trained "
            "model; run `dvc repro train`"
        )
    if abs(measured_accuracy - kept.validation_accuracy) > VALIDATION_AGREEMENT:
        raise StageError(
            f"{source}: validation accuracy {measured_accuracy:.4f}, but training logged "
            f"{kept.validation_accuracy:.4f} for the kept epoch {kept.epoch}: the weights are "
            "not the kept epoch's; run `dvc repro train`"
        )


def _scaling(whitening: Whitening | None) -> str:
    return "ZCA whitening" if whitening is not None else "standardization alone"


def check_same_inputs(
    network: DenseNetwork,
    class_names: tuple[str, ...],
    prepared: tuple[Path, Standardization, Whitening | None],
    model: tuple[Path, Whitening | None],
) -> None:
    """Refuse a prepared folder that is not what the model was trained on.

    Its input scaling (the standardization inside the model, the whitening in the model
    folder) and its classes must be the model's: else the model is not at fault, the
    prepared data changed since training.
    """
    prepared_folder, standardization, prepared_whitening = prepared
    model_folder, model_whitening = model
    if prepared_whitening is None or model_whitening is None:
        same_whitening = prepared_whitening is model_whitening
    else:
        same_whitening = all(
            np.array_equal(getattr(prepared_whitening, name), getattr(model_whitening, name))
            for name in ("mean", "components", "gains", "epsilon", "std")
        )
    same_standardization = np.allclose(
        network.mean, standardization.mean, rtol=1e-6, atol=0
    ) and np.allclose(network.scale, standardization.scale, rtol=1e-6, atol=0)
    if not (same_whitening and same_standardization):
        raise StageError(
            f"{prepared_folder}: its input scaling ({_scaling(prepared_whitening)}, fitted on "
            f"its train split) is not the one {model_folder} was trained on "
            f"({_scaling(model_whitening)}): the prepared data changed since training; "
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
    params = load_params().evaluate

    kept = kept_model(
        read_json(arguments.summary, "train"),
        read_json(arguments.history, "train"),
        arguments.history,
    )
    class_names = load_class_names(arguments.prepared)
    network = load_network(arguments.model)
    check_same_inputs(
        network,
        class_names,
        (
            arguments.prepared,
            load_standardization(arguments.prepared),
            load_whitening(arguments.prepared),
        ),
        (arguments.model, load_whitening(arguments.model, "train")),
    )
    validation = load_model_inputs(arguments.prepared, "validation")
    validation_accuracy = float(
        accuracy_score(
            validation.labels, network.predict(validation.images, params.batch_size).argmax(axis=1)
        )
    )
    check_kept_model(network, kept, validation_accuracy, arguments.model)
    test = load_model_inputs(arguments.prepared, "test")
    probabilities = network.predict(test.images, params.batch_size)

    metrics = {
        "test": compute_test_metrics(test.labels, probabilities, len(class_names)),
        "validation": {"accuracy": validation_accuracy, "epoch": kept.epoch},
    }
    outputs = (arguments.metrics, arguments.predictions, arguments.per_class)
    with atomic_outputs(*outputs) as (metrics_file, predictions_file, per_class_file):
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
