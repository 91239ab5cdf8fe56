"""The plots stage: every figure renders from small inputs, with readable labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt

from stages.cifar import CLASS_NAMES, FEATURES, Split
from stages.params import PlotsParams
from stages.plots import labelled_images, render_figures, samples_by_class


@pytest.fixture
def split() -> Split:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, FEATURES), dtype=np.uint8)
    return Split(images, (np.arange(30) % 10).astype(np.uint8))


@pytest.fixture
def predictions(split: Split) -> pd.DataFrame:
    names = np.asarray(CLASS_NAMES)
    predicted = split.labels.copy()
    predicted[::4] = (predicted[::4] + 1) % 10
    return pd.DataFrame(
        {
            "actual": names[split.labels],
            "predicted": names[predicted],
            "confidence": np.linspace(0.2, 0.9, 30),
        }
    )


def test_sample_grid_has_a_named_row_per_class(split: Split) -> None:
    figure = samples_by_class(split.images, split.labels, CLASS_NAMES, per_class=4)
    axes = np.array(figure.axes).reshape(10, 4)
    assert [row[0].get_ylabel() for row in axes] == list(CLASS_NAMES)
    # Three images per class exist: the fourth column stays empty.
    assert all(len(row[2].images) == 1 and len(row[3].images) == 0 for row in axes)
    plt.close(figure)


def test_prediction_grid_titles_and_colours(split: Split, predictions: pd.DataFrame) -> None:
    figure = labelled_images(split.images, predictions.head(10), "first ten")
    titles = [axis.title for axis in figure.axes[:10]]
    assert titles[0].get_text() == f"GT: {CLASS_NAMES[0]}\nP: {CLASS_NAMES[1]}"
    assert titles[0].get_color() == "tab:red"  # wrong prediction
    assert titles[1].get_color() == "tab:green"
    assert len(figure.axes) == 10  # a 2 x 5 grid
    plt.close(figure)


def test_every_figure_renders(split: Split, predictions: pd.DataFrame) -> None:
    history = {
        "loss": [2.0, 1.5],
        "val_loss": [2.1, 1.7],
        "accuracy": [0.2, 0.4],
        "val_accuracy": [0.2, 0.3],
    }
    params = PlotsParams(samples_per_class=2, n_predictions=10, n_confident_errors=3, dpi=50)
    figures = render_figures(
        split, split, predictions=predictions, history=history, best_epoch=2,
        class_names=CLASS_NAMES, params=params,
    )  # fmt: skip
    assert set(figures) == {
        "samples.png", "training_loss.png", "loss.png", "accuracy.png",
        "test_predictions.png", "confusion_matrix.png", "confident_errors.png",
    }  # fmt: skip
    loss_axis = figures["loss.png"].axes[0]
    assert loss_axis.get_xlabel() == "Epoch"
    assert [text.get_text() for text in loss_axis.get_legend().get_texts()][:2] == [
        "Training loss", "Validation loss",
    ]  # fmt: skip
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    most_confident = f"({wrong['confidence'].max():.0%})"
    assert most_confident in figures["confident_errors.png"].axes[0].get_title()
    for figure in figures.values():
        plt.close(figure)
