"""The plots stage: every figure renders from small inputs, with readable labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt

from stages.cifar import CLASS_NAMES, FEATURES, Split
from stages.params import PlotsParams
from stages.plots import (
    confusion_counts,
    labelled_images,
    mosaic,
    render_figures,
    run_summary,
    samples_by_class,
)


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
    (axis,) = figure.axes
    assert [label.get_text() for label in axis.get_yticklabels()] == list(CLASS_NAMES)
    picture = axis.images[0].get_array()
    # Three images per class exist: the fourth column of each row stays white.
    first_row = picture[:32]
    np.testing.assert_array_equal(first_row[:, :32].reshape(-1), split.images[0])
    assert (first_row[:, 3 * 36 :] == 255).all()
    plt.close(figure)


def test_mosaic_places_images_row_by_row_with_gaps(split: Split) -> None:
    picture = mosaic(split.images[:6], rows=2, columns=3)
    assert picture.shape == (2 * 32 + 4, 3 * 32 + 2 * 4, 3)
    second_row_first = picture[36:68, 0:32].reshape(-1)
    np.testing.assert_array_equal(second_row_first, split.images[3])
    assert (picture[32:36] == 255).all()


def test_prediction_captions_mark_right_and_wrong_beyond_colour(
    split: Split, predictions: pd.DataFrame
) -> None:
    figure = labelled_images(split.images, predictions.head(10), "first ten")
    (axis,) = figure.axes
    captions = axis.texts
    assert len(captions) == 10  # a 2 x 5 grid
    assert captions[0].get_text() == f"GT: {CLASS_NAMES[0]}\n\u2717 P: {CLASS_NAMES[1]}"
    assert captions[0].get_color() == "tab:red"  # wrong prediction
    assert captions[1].get_text() == f"GT: {CLASS_NAMES[1]}\n\u2713 P: {CLASS_NAMES[1]}"
    assert captions[1].get_color() == "tab:green"
    plt.close(figure)


def test_confusion_counts_have_true_rows_and_every_class(predictions: pd.DataFrame) -> None:
    counts = confusion_counts(predictions, CLASS_NAMES)
    assert list(counts.index) == list(counts.columns) == list(CLASS_NAMES)
    # Rows true, columns predicted: every fourth image was taken for the next class.
    assert (
        counts.loc["airplane", "automobile"]
        == (predictions["actual"] == "airplane").iloc[::4].sum()
    )
    assert counts.to_numpy().sum() == len(predictions)
    assert np.trace(counts.to_numpy()) == (predictions["actual"] == predictions["predicted"]).sum()


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
    assert figures["confident_errors.png"].axes[0].texts[0].get_text().endswith(most_confident)
    low, high = loss_axis.get_xlim()
    assert [tick for tick in loss_axis.get_xticks() if low <= tick <= high] == [1, 2]
    for figure in figures.values():
        plt.close(figure)


def test_the_run_ends_with_the_kept_models_figures_and_where_to_look() -> None:
    metrics = {"test": {"accuracy": 0.5812}, "validation": {"accuracy": 0.5901, "epoch": 27}}
    lines = run_summary(metrics, Path("reports/figures"), 7).splitlines()
    assert lines == [
        "wrote 7 figures to reports/figures",
        "kept model (epoch 27): validation accuracy 0.5901, test accuracy 0.5812",
        (
            "see them all: dvc plots show (then open dvc_plots/index.html); "
            "compare runs: dvc exp show (README.md, Everyday use, 3. Compare)"
        ),
    ]
