"""The assignment's figures (2.1, 2.7, 2.9) and a few better ones, drawn with matplotlib.

Conventions shared by every figure and by the DVC plots of dvc.yaml: epochs count
from 1; in the confusion matrix, true classes are rows and predicted classes columns;
a right prediction is green and marked with a check, a wrong one red and marked with
a cross, so colour is never the only cue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifar10.archive import IMAGE_SHAPE, Split

if TYPE_CHECKING:
    from cifar10.params import PlotsParams

GRID_COLUMNS = 5  # the assignment's 10 x 5 grids
WRONG_COLOUR = "tab:red"
RIGHT_COLOUR = "tab:green"
RIGHT_MARK, WRONG_MARK = "\u2713", "\u2717"  # check and cross
_GAP = 4  # pixels between the images of a grid
_PIXEL_INCHES = 0.045  # printed size of an image pixel: 32 pixels = 1.44 in
CAPTION_POINTS = 8.5  # font size of the captions above images
# The most pixels a figure is drawn with, whatever plots.dpi asks: matplotlib takes tens
# of bytes a pixel to draw an image, so a long grid at the largest dpi would take
# gigabytes (docs/reliability.md gives the stage's bound).
MAX_FIGURE_PIXELS = 12_000_000


def mosaic(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Tile flat uint8 images row by row into one white-gapped RGB picture."""
    height, width, channels = IMAGE_SHAPE
    picture = np.full(
        (rows * (height + _GAP) - _GAP, columns * (width + _GAP) - _GAP, channels), 255, np.uint8
    )
    for index, image in enumerate(images[: rows * columns]):
        row, column = divmod(index, columns)
        top, left = row * (height + _GAP), column * (width + _GAP)
        picture[top : top + height, left : left + width] = image.reshape(IMAGE_SHAPE)
    return picture


def image_grid(
    images: np.ndarray, rows: int, columns: int, *, caption_lines: int = 0, left: float = 0.1
) -> tuple[Figure, Axes]:
    """One axes showing the images as a grid, with room for captions above each image.

    A single image of the whole grid draws in a fraction of the time of one axes per
    image (the stage spent most of its time laying out 50-axes grids).
    """
    height, width, _ = IMAGE_SHAPE
    # Pixels of room above each row for its captions: lines of text, 72 points an inch.
    caption = (
        math.ceil(caption_lines * CAPTION_POINTS * 1.2 / 72 / _PIXEL_INCHES) + 1
        if caption_lines
        else 0
    )
    row_pixels = height + _GAP + caption
    picture = mosaic(images, rows, columns)
    if caption:
        spaced = np.full((rows * row_pixels, picture.shape[1], 3), 255, np.uint8)
        for row in range(rows):
            source = picture[row * (height + _GAP) : row * (height + _GAP) + height]
            spaced[row * row_pixels + caption : row * row_pixels + caption + height] = source
        picture = spaced
    title_inches = 0.5
    figure = Figure(
        figsize=(
            left + picture.shape[1] * _PIXEL_INCHES + 0.1,
            title_inches + picture.shape[0] * _PIXEL_INCHES + 0.1,
        )
    )
    width_inches, height_inches = figure.get_size_inches()
    axis = figure.add_axes(
        (
            left / width_inches,
            0.1 / height_inches,
            picture.shape[1] * _PIXEL_INCHES / width_inches,
            picture.shape[0] * _PIXEL_INCHES / height_inches,
        )
    )
    axis.imshow(picture, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.row_pixels, axis.caption_pixels, axis.column_pixels = row_pixels, caption, width + _GAP
    return figure, axis


def samples_by_class(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int
) -> Figure:
    """One row per class (named on the left) of the first ``per_class`` training images."""
    blank = np.full(images.shape[1], 255, np.uint8)
    chosen = []
    for label in range(len(class_names)):
        indices = np.flatnonzero(labels == label)[:per_class]
        chosen += [images[index] for index in indices] + [blank] * (per_class - len(indices))
    figure, axis = image_grid(np.stack(chosen), len(class_names), per_class, left=1.1)
    axis.set_yticks(
        [row * (IMAGE_SHAPE[0] + _GAP) + IMAGE_SHAPE[0] / 2 for row in range(len(class_names))],
        labels=class_names,
        fontsize=11,
    )
    axis.tick_params(axis="y", length=0)
    figure.suptitle(f"Training images: {per_class} per class", y=1 - 0.15 / figure.get_figheight())
    return figure


def training_curves(
    history: dict[str, list[float]],
    series: dict[str, str],
    title: str,
    ylabel: str,
    best_epoch: int,
) -> Figure:
    """Plot history keys (key -> legend label) per epoch from 1, marking the kept epoch."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axis = figure.subplots()
    for key, label in series.items():
        values = history[key]
        axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    axis.axvline(best_epoch, color="grey", linestyle=":", label=f"model kept (epoch {best_epoch})")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(0.5, max(len(values) for values in history.values()) + 0.5)
    axis.set_title(title)
    axis.set_xlabel("Epoch")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def labelled_images(
    images: np.ndarray, predictions: pd.DataFrame, title: str, *, with_confidence: bool = False
) -> Figure:
    """Grid of images captioned with truth (GT) and prediction (P).

    Right predictions are green and marked with a check, wrong ones red with a cross.
    """
    rows = max(1, math.ceil(len(predictions) / GRID_COLUMNS))
    chosen = images[predictions.index.to_numpy()] if len(predictions) else images[:0]
    figure, axis = image_grid(chosen, rows, GRID_COLUMNS, caption_lines=2)
    for position, (_, row) in enumerate(predictions.iterrows()):
        grid_row, grid_column = divmod(position, GRID_COLUMNS)
        right = row["actual"] == row["predicted"]
        caption = (
            f"GT: {row['actual']}\n{RIGHT_MARK if right else WRONG_MARK} P: {row['predicted']}"
        )
        if with_confidence:
            caption += f" ({row['confidence']:.0%})"
        axis.text(
            grid_column * axis.column_pixels + IMAGE_SHAPE[1] / 2,
            grid_row * axis.row_pixels + axis.caption_pixels - 1,
            caption,
            ha="center",
            va="bottom",
            fontsize=CAPTION_POINTS,
            linespacing=1.1,
            color=RIGHT_COLOUR if right else WRONG_COLOUR,
        )
    figure.suptitle(title, y=1 - 0.15 / figure.get_figheight())
    return figure


def confusion_counts(predictions: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Count (true class, predicted class) pairs: rows true, columns predicted, every class."""
    counts = pd.crosstab(predictions["actual"], predictions["predicted"])
    return counts.reindex(index=class_names, columns=class_names, fill_value=0)


def confusion_figure(predictions: pd.DataFrame, class_names: Sequence[str]) -> Figure:
    """Confusion matrix of the test set, true classes as rows, with counts."""
    counts = confusion_counts(predictions, class_names).to_numpy()
    figure = Figure(figsize=(8, 7), layout="constrained")
    axis = figure.subplots()
    axis.imshow(counts, cmap="Blues")
    ticks = range(len(class_names))
    axis.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axis.set_yticks(ticks, labels=class_names)
    axis.set_xlabel("Predicted class")
    axis.set_ylabel("True class")
    threshold = counts.max() / 2
    for (row, column), count in np.ndenumerate(counts):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=9,
                  color="white" if count > threshold else "black")  # fmt: skip
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axis.set_title(f"Test confusion matrix (accuracy {accuracy:.1%})")
    return figure


def drawing_dpi(figure: Figure, dpi: int) -> int:
    """Return ``dpi``, or the largest that keeps the figure within MAX_FIGURE_PIXELS."""
    width, height = figure.get_size_inches()
    return min(dpi, math.floor(math.sqrt(MAX_FIGURE_PIXELS / (width * height))))


def render_figures(
    train: Split,
    test: Split,
    *,
    predictions: pd.DataFrame,
    history: dict[str, list[float]],
    best_epoch: int,
    class_names: tuple[str, ...],
    params: PlotsParams,
    label_smoothing: float,
) -> dict[str, Figure]:
    """Build every figure, keyed by file name; ``label_smoothing`` is the loss's (train)."""
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    confident_errors = wrong.sort_values("confidence", ascending=False, kind="stable")
    return {
        "samples.png": samples_by_class(
            train.images, train.labels, class_names, params.samples_per_class
        ),
        "training_loss.png": training_curves(
            history, {"loss": "Training loss"}, "Training loss", "Loss", best_epoch
        ),
        "loss.png": training_curves(
            history,
            {"loss": "Training loss", "val_loss": "Validation loss"},
            "Training and validation loss",
            f"Cross-entropy, label smoothing {label_smoothing:g}"
            if label_smoothing
            else "Cross-entropy",
            best_epoch,
        ),
        "accuracy.png": training_curves(
            history,
            {"accuracy": "Training accuracy", "val_accuracy": "Validation accuracy"},
            "Training and validation accuracy",
            "Accuracy",
            best_epoch,
        ),
        "test_predictions.png": labelled_images(
            test.images,
            predictions.head(params.n_predictions),
            f"First {params.n_predictions} test images: ground truth (GT) and prediction (P)",
        ),
        "confusion_matrix.png": confusion_figure(predictions, class_names),
        "confident_errors.png": labelled_images(
            test.images,
            confident_errors.head(params.n_confident_errors),
            "Most confidently wrong test predictions",
            with_confidence=True,
        ),
    }
