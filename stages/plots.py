"""plots stage: the assignment's figures (2.1, 2.7, 2.9) and a few better ones, as PNG.

Reads only what earlier stages wrote (images, history, predictions), so a changed
plot setting reruns this stage alone. Conventions shared by every figure and by the
DVC plots of dvc.yaml: epochs count from 1; in the confusion matrix, true classes are
rows and predicted classes columns; a right prediction is green and marked with a
check, a wrong one red and marked with a cross, so colour is never the only cue.
"""

from __future__ import annotations

from stages.start import start_command

if __name__ == "__main__":
    start_command()  # before the imports below

import argparse
import io
import math
import reprlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stages.atomic import atomic_outputs
from stages.cifar import IMAGE_SHAPE, Split
from stages.cli import read_json, read_small_file, run_stage, upstream_error
from stages.dataset import load_class_names, load_split
from stages.params import PlotsParams, read_params_file

GRID_COLUMNS = 5  # the assignment's 10 x 5 grids
WRONG_COLOUR = "tab:red"
RIGHT_COLOUR = "tab:green"
RIGHT_MARK, WRONG_MARK = "\u2713", "\u2717"  # check and cross
_GAP = 4  # pixels between the images of a grid
_PIXEL_INCHES = 0.045  # printed size of an image pixel: 32 pixels = 1.44 in
CAPTION_POINTS = 8.5  # font size of the captions above images
# The columns of evaluate's predictions (stages/evaluate.py, which imports scikit-learn,
# a second of start-up this stage does not need) and the series of train's history.
PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")
# evaluate's predictions of the 10,000 test images are 0.4 MB.
MAX_PREDICTIONS_BYTES = 64 << 20


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
) -> tuple[Figure, plt.Axes]:
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
    figure = plt.figure(
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
    figure, axis = plt.subplots(figsize=(7, 4.5), layout="constrained")
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
    figure, axis = plt.subplots(figsize=(8, 7), layout="constrained")
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
            "Cross-entropy (with label smoothing)",
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


def run_summary(metrics: dict, figures: Path, count: int) -> str:
    """Write the lines that end a run (this is the last stage): what it got, where to look."""
    validation, test = metrics["validation"], metrics["test"]
    return (
        f"wrote {count} figures to {figures}\n"
        f"kept model (epoch {validation['epoch']}): validation accuracy "
        f"{validation['accuracy']:.4f}, test accuracy {test['accuracy']:.4f}\n"
        "see them all: dvc plots show (then open dvc_plots/index.html); "
        "compare runs: dvc exp show (README.md, Everyday use, 3. Compare)"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: Path) -> dict:
    """Read evaluate's metrics: the kept epoch and the accuracies the summary prints."""
    metrics = read_json(path, "evaluate")
    try:
        # The kept epoch, as evaluate confirmed it against the model itself.
        epoch = metrics["validation"]["epoch"]
        accuracies = (metrics["validation"]["accuracy"], metrics["test"]["accuracy"])
    except (KeyError, TypeError) as error:
        raise upstream_error(path, "evaluate", f"not evaluate's metrics ({error!r})") from None
    if type(epoch) is not int or epoch < 1 or not all(map(_is_number, accuracies)):
        raise upstream_error(path, "evaluate", "not evaluate's metrics (epoch, accuracies)")
    return metrics


def read_history(path: Path, best_epoch: int) -> dict[str, list[float]]:
    """Read the train stage's history: each series the figures plot, as long as each other."""
    history = read_json(path, "train")
    series = {key: history.get(key) for key in HISTORY_KEYS}
    if (
        not all(
            isinstance(values, list) and values and all(map(_is_number, values))
            for values in series.values()
        )
        or len({len(values) for values in series.values()}) != 1
    ):
        raise upstream_error(
            path, "train", f"{', '.join(HISTORY_KEYS)} must be lists of numbers, one per epoch"
        )
    epochs = len(series["loss"])
    if best_epoch > epochs:
        raise upstream_error(
            path, "train", f"{epochs} epochs, but evaluate kept epoch {best_epoch}"
        )
    return series


def read_predictions(
    path: Path, test: Split, class_names: tuple[str, ...], prepared: Path
) -> pd.DataFrame:
    """Read evaluate's predictions, which must be those of ``prepared``'s test images."""
    try:
        table = pd.read_csv(io.BytesIO(read_small_file(path, MAX_PREDICTIONS_BYTES, "evaluate")))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        raise upstream_error(path, "evaluate", f"unreadable ({error})") from None
    if tuple(table.columns) != PREDICTION_COLUMNS:
        raise upstream_error(
            path,
            "evaluate",
            f"columns {reprlib.repr(list(table.columns))}, not {list(PREDICTION_COLUMNS)}",
        )
    count = len(test.labels)
    if not (
        pd.api.types.is_integer_dtype(table["index"])
        and np.array_equal(table["index"].to_numpy(), np.arange(count))
    ):
        raise upstream_error(path, "evaluate", f"rows must be the test images 0 to {count - 1}")
    confidence = pd.to_numeric(table["confidence"], errors="coerce")
    if not (
        table["actual"].isin(class_names).all()
        and table["predicted"].isin(class_names).all()
        and confidence.between(0, 1).all()
    ):
        raise upstream_error(
            path, "evaluate", "classes must be the class names, confidences from 0 to 1"
        )
    if test.labels.max(initial=0) >= len(class_names) or not np.array_equal(
        table["actual"].to_numpy(), np.asarray(class_names)[test.labels]
    ):
        raise upstream_error(
            path,
            "evaluate",
            f"its true classes are not those of {prepared}'s test images: predictions of "
            "other data",
        )
    return table.set_index("index")


def main() -> None:
    """Render every figure into the output folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="train history JSON")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions CSV")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics JSON")
    parser.add_argument("--output", type=Path, required=True, help="figures folder")
    arguments = parser.parse_args()
    params_file = read_params_file()
    params = params_file.params.plots

    metrics = read_metrics(arguments.metrics)
    best_epoch = metrics["validation"]["epoch"]
    history = read_history(arguments.history, best_epoch)
    class_names = load_class_names(arguments.prepared)
    test = load_split(arguments.prepared, "test")
    predictions = read_predictions(arguments.predictions, test, class_names, arguments.prepared)
    figures = render_figures(
        load_split(arguments.prepared, "train"),
        test,
        predictions=predictions,
        history=history,
        best_epoch=best_epoch,
        class_names=class_names,
        params=params,
    )
    with atomic_outputs(arguments.output, before_commit=params_file.check_unchanged) as (folder,):
        folder.mkdir()
        for name, figure in figures.items():
            # No date in the PNG metadata: the same inputs give the same bytes.
            figure.savefig(folder / name, dpi=params.dpi, metadata={"Software": None})
            plt.close(figure)
    print(run_summary(metrics, arguments.output, len(figures)))


if __name__ == "__main__":
    run_stage(main)
