"""plots stage: the assignment's figures (2.1, 2.7, 2.9) and a few better ones, as PNG.

Reads only what earlier stages wrote (images, history, predictions), so a changed
plot setting reruns this stage alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from stages.atomic import atomic_outputs
from stages.cifar import IMAGE_SHAPE, Split
from stages.cli import read_json, run_stage, upstream_error
from stages.dataset import load_class_names, load_split
from stages.params import PlotsParams, load_params

GRID_COLUMNS = 5  # the assignment's 10 x 5 grids
WRONG_COLOUR = "tab:red"
RIGHT_COLOUR = "tab:green"


def as_picture(row: np.ndarray) -> np.ndarray:
    """Reshape one flat uint8 row to a 32 x 32 x 3 picture."""
    return row.reshape(IMAGE_SHAPE)


def image_grid(
    rows: int, columns: int, *, image_inches: float, title_lines: int = 0, left: float = 0.1
) -> tuple[Figure, np.ndarray]:
    """Make a figure of ``rows`` x ``columns`` square image axes under a figure title.

    Spacing is fixed in inches (``left`` for row labels, ``title_lines`` of small text
    above each image) rather than left to a layout engine: constrained layout took over
    a second per 50-image grid, most of this stage's time.
    """
    gap, figure_title = 0.1, 0.5
    image_title = gap + 0.16 * title_lines
    width = left + columns * image_inches + columns * gap
    height = figure_title + rows * (image_title + image_inches) + gap
    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    figure.subplots_adjust(
        left=left / width,
        right=1 - gap / width,
        bottom=gap / height,
        top=1 - (figure_title + image_title) / height,
        wspace=gap / image_inches,
        hspace=image_title / image_inches,
    )
    return figure, axes


def samples_by_class(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int
) -> Figure:
    """Grid with one row per class (named on the left) and ``per_class`` samples each."""
    figure, axes = image_grid(len(class_names), per_class, image_inches=1.1, left=1.1)
    for row, name in enumerate(class_names):
        indices = np.flatnonzero(labels == row)[:per_class]
        for column, axis in enumerate(axes[row]):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(indices):
                axis.imshow(as_picture(images[indices[column]]))
            else:
                axis.axis("off")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=11)
    figure.suptitle(f"Training images: {per_class} per class")
    return figure


def training_curves(
    history: dict[str, list[float]],
    series: dict[str, str],
    title: str,
    ylabel: str,
    best_epoch: int,
) -> Figure:
    """Plot history keys (key -> legend label) per epoch, marking the restored epoch."""
    figure, axis = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for key, label in series.items():
        values = history[key]
        axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    axis.axvline(best_epoch, color="grey", linestyle=":", label=f"model kept (epoch {best_epoch})")
    axis.set_title(title)
    axis.set_xlabel("Epoch")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend()
    return figure


def labelled_images(
    images: np.ndarray, predictions: pd.DataFrame, title: str, extra_label: bool = False
) -> Figure:
    """Grid of images titled "GT: ... / P: ...": right in green, wrong in red."""
    rows = max(1, math.ceil(len(predictions) / GRID_COLUMNS))
    figure, axes = image_grid(rows, GRID_COLUMNS, image_inches=2.1, title_lines=2)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (image_index, row) in zip(axes.flat, predictions.iterrows(), strict=False):
        axis.imshow(as_picture(images[image_index]))
        wrong = row["actual"] != row["predicted"]
        label = f"GT: {row['actual']}\nP: {row['predicted']}"
        if extra_label:
            label += f" ({row['confidence']:.0%})"
        axis.set_title(label, fontsize=9, color=WRONG_COLOUR if wrong else RIGHT_COLOUR)
    figure.suptitle(title)
    return figure


def confusion_figure(predictions: pd.DataFrame, class_names: Sequence[str]) -> Figure:
    """Confusion matrix of the test set, rows = actual class, with class names."""
    figure, axis = plt.subplots(figsize=(8, 7), layout="constrained")
    ConfusionMatrixDisplay.from_predictions(
        predictions["actual"],
        predictions["predicted"],
        labels=list(class_names),
        ax=axis,
        cmap="Blues",
        colorbar=False,
        xticks_rotation=45,
    )
    accuracy = float((predictions["actual"] == predictions["predicted"]).mean())
    axis.set_title(f"Test confusion matrix (accuracy {accuracy:.1%})")
    return figure


def render_figures(
    train: Split,
    test: Split,
    *,
    predictions: pd.DataFrame,
    history: dict[str, list[float]],
    best_epoch: int,
    class_names: tuple[str, ...],
    params: PlotsParams,
) -> dict[str, Figure]:
    """Build every figure, keyed by file name."""
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
            "Sparse categorical cross-entropy",
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
            extra_label=True,
        ),
    }


def main() -> None:
    """Render every figure into the output folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True, help="train summary JSON")
    parser.add_argument("--history", type=Path, required=True, help="train history JSON")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions CSV")
    parser.add_argument("--output", type=Path, required=True, help="figures folder")
    arguments = parser.parse_args()
    params = load_params().plots

    best_epoch = read_json(arguments.summary, "train")["best_epoch"]
    history = read_json(arguments.history, "train")
    try:
        predictions = pd.read_csv(arguments.predictions).set_index("index")
    except FileNotFoundError:
        raise upstream_error(arguments.predictions, "evaluate") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError) as error:
        raise upstream_error(arguments.predictions, "evaluate", f"unreadable ({error})") from None
    figures = render_figures(
        load_split(arguments.prepared, "train"),
        load_split(arguments.prepared, "test"),
        predictions=predictions,
        history=history,
        best_epoch=best_epoch,
        class_names=load_class_names(arguments.prepared),
        params=params,
    )
    with atomic_outputs(arguments.output) as (folder,):
        folder.mkdir()
        for name, figure in figures.items():
            # No date in the PNG metadata: the same inputs give the same bytes.
            figure.savefig(folder / name, dpi=params.dpi, metadata={"Software": None})
            plt.close(figure)
    print(f"wrote {len(figures)} figures to {arguments.output}")


if __name__ == "__main__":
    run_stage(main)
