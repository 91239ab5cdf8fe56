"""evaluate stage: test-set metrics, per-class accuracy and predictions (assignment 2.8).

Test images go through exactly the preprocessing of training: the prepare stage's
standardization, applied to each uint8 batch (the notebook's 2.9 fed raw pixels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from stages.atomic import atomic_path, write_json
from stages.cli import StageError, run_stage
from stages.dataset import Standardization, load_class_names, load_split, load_standardization
from stages.params import load_params
from stages.train import load_model

PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")


def predict_probabilities(
    model: keras.Model, images: np.ndarray, standardization: Standardization, batch_size: int
) -> np.ndarray:
    """Predict class probabilities of uint8 ``images``, standardizing one batch at a time."""
    batches = [
        model.predict_on_batch(standardization.transform(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches)


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
    labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, object]:
    """Loss, accuracy, macro F1 and per-class accuracy (recall) on the test set."""
    classes = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, labels=classes)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return {
        "loss": float(log_loss(labels, probabilities, labels=classes)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
        "per_class_accuracy": {
            name: float(value) for name, value in zip(class_names, per_class, strict=True)
        },
    }


def best_validation(history: dict[str, list[float]], best_epoch: int) -> dict[str, object]:
    """Look up the validation accuracy of the epoch whose weights the model holds."""
    return {"accuracy": history["val_accuracy"][best_epoch - 1], "epoch": best_epoch}


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

    try:
        summary = json.loads(arguments.summary.read_text())
        history = json.loads(arguments.history.read_text())
    except FileNotFoundError as error:
        raise StageError(f"{error.filename}: missing; run `dvc repro train` first") from None
    class_names = load_class_names(arguments.prepared)
    test = load_split(arguments.prepared, "test")
    model = load_model(arguments.model)
    probabilities = predict_probabilities(
        model, test.images, load_standardization(arguments.prepared), params.batch_size
    )

    metrics = {
        "test": compute_test_metrics(test.labels, probabilities, class_names),
        "validation": best_validation(history, summary["best_epoch"]),
    }
    table = predictions_table(test.labels, probabilities, class_names)
    per_class = pd.DataFrame(
        list(metrics["test"]["per_class_accuracy"].items()), columns=["class", "accuracy"]
    )
    write_json(arguments.metrics, metrics)
    for frame, path in ((table, arguments.predictions), (per_class, arguments.per_class)):
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, index=False)
    print(
        f"test accuracy {metrics['test']['accuracy']:.4f}, loss {metrics['test']['loss']:.4f}, "
        f"macro F1 {metrics['test']['macro_f1']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
