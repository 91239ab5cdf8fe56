"""Scoring a model's class probabilities: accuracy, test metrics, per-class accuracy (2.8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss

from cifar10.archive import CLASS_NAMES


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Return the share of images whose likeliest class is their label."""
    return float(accuracy_score(labels, probabilities.argmax(axis=1)))


def test_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Loss (cross-entropy), accuracy and macro F1 on the test set."""
    classes = np.arange(len(CLASS_NAMES))
    predicted = probabilities.argmax(axis=1)
    return {
        "accuracy": accuracy(labels, probabilities),
        "loss": float(log_loss(labels, probabilities, labels=classes)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
    }


def per_class_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """Accuracy (recall) per class, from the confusion matrix; 0 for an absent class."""
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(len(CLASS_NAMES)))
    recall = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return pd.DataFrame({"class": CLASS_NAMES, "accuracy": recall.round(6)})
