"""The evaluate stage: predictions see the training preprocessing; metrics match sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stages.cifar import CLASS_NAMES, FEATURES
from stages.dataset import Standardization
from stages.evaluate import (
    PREDICTION_COLUMNS,
    best_validation,
    compute_test_metrics,
    predict_probabilities,
    predictions_table,
)
from stages.train import build_model


def test_predictions_use_the_training_standardization() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, FEATURES), dtype=np.uint8)
    scaling = Standardization(
        rng.uniform(100, 150, FEATURES).astype(np.float32),
        rng.uniform(40, 80, FEATURES).astype(np.float32),
    )
    model = build_model(FEATURES, [16], 10, "relu", 0.0)
    probabilities = predict_probabilities(model, images, scaling, batch_size=3)
    expected = model(scaling.transform(images)).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6, atol=1e-7)
    # The notebook's 2.9 bug, raw pixels into the model, gives other outputs.
    raw = model(images.astype(np.float32)).numpy()
    assert not np.allclose(probabilities, raw, atol=1e-3)


def test_metrics_on_a_known_case() -> None:
    labels = np.array([0, 0, 1, 2])
    probabilities = np.full((4, 10), 0.01)
    for row, predicted in enumerate([0, 1, 1, 2]):
        probabilities[row, predicted] = 0.91
    metrics = compute_test_metrics(labels, probabilities, CLASS_NAMES)
    assert metrics["accuracy"] == pytest.approx(0.75)
    per_class = metrics["per_class_accuracy"]
    assert per_class["airplane"] == pytest.approx(0.5)
    assert per_class["automobile"] == pytest.approx(1.0)
    assert per_class["truck"] == 0.0  # no test images of that class
    expected_loss = -np.mean(np.log([0.91, 0.01, 0.91, 0.91]))
    assert metrics["loss"] == pytest.approx(expected_loss)
    expected_f1 = f1_score(labels, [0, 1, 1, 2], labels=range(10), average="macro", zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(expected_f1)


def test_predictions_table_names_classes() -> None:
    probabilities = np.eye(10)[[3, 5]] * 0.8 + 0.02
    table = predictions_table(np.array([3, 4]), probabilities, CLASS_NAMES)
    assert tuple(table.columns) == PREDICTION_COLUMNS
    assert table["actual"].tolist() == ["cat", "deer"]
    assert table["predicted"].tolist() == ["cat", "dog"]
    assert table["confidence"].tolist() == [0.82, 0.82]


def test_best_validation_reads_the_kept_epoch() -> None:
    history = {"val_accuracy": [0.3, 0.5, 0.4]}
    assert best_validation(history, 2) == {"accuracy": 0.5, "epoch": 2}
