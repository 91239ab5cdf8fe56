"""The plots stage: every figure renders from small inputs, with readable labels."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPOSITORY, run_stage, write_params
from matplotlib import pyplot as plt

from stages import evaluate
from stages.cifar import CLASS_NAMES, FEATURES, Split
from stages.cli import StageError
from stages.dataset import load_split
from stages.params import PlotsParams
from stages.plots import (
    PREDICTION_COLUMNS,
    confusion_counts,
    labelled_images,
    mosaic,
    read_history,
    read_metrics,
    read_predictions,
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
    metrics = {"test": {"accuracy": 0.58124}, "validation": {"accuracy": 0.59006, "epoch": 27}}
    summary = run_summary(metrics, Path("reports/figures"), 7)
    figures = re.search(r"wrote (\d+) figures to (\S+)", summary)
    assert figures is not None
    assert figures.groups() == ("7", "reports/figures")
    kept = re.search(
        r"epoch (\d+)\D+validation accuracy ([\d.]+)\D+test accuracy ([\d.]+)", summary
    )
    assert kept is not None
    assert (int(kept[1]), float(kept[2]), float(kept[3])) == (27, 0.5901, 0.5812)
    # The README section it points to exists.
    pointer = re.search(r"\(README\.md, ([^,]+), ([^)]+)\)", summary)
    assert pointer is not None
    readme = (REPOSITORY / "README.md").read_text()
    assert f"## {pointer[1]}" in readme
    assert f"**{pointer[2]}.**" in readme


def test_the_predictions_read_are_those_evaluate_writes() -> None:
    assert PREDICTION_COLUMNS == evaluate.PREDICTION_COLUMNS


@pytest.fixture
def predictions_file(tmp_path: Path, split: Split) -> Path:
    probabilities = np.eye(10)[(split.labels + 1) % 10] * 0.5 + 0.05
    path = tmp_path / "predictions.csv"
    evaluate.predictions_table(split.labels, probabilities, CLASS_NAMES).to_csv(path, index=False)
    return path


def test_evaluates_predictions_of_the_same_test_images_are_read(
    predictions_file: Path, split: Split
) -> None:
    table = read_predictions(predictions_file, split, CLASS_NAMES, Path("prepared"))
    assert table.index.tolist() == list(range(30))
    assert table["actual"].tolist() == [CLASS_NAMES[label] for label in split.labels]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda table: table.drop(columns="confidence"), r"columns \['index', 'actual', "),
        (lambda table: table.assign(index=table["index"] + 100), "rows must be the test images"),
        (lambda table: table.assign(index=table["index"] * 1.0), "rows must be the test images"),
        (lambda table: table.head(20), "rows must be the test images 0 to 29"),
        (lambda table: table.assign(predicted="unicorn"), "classes must be the class names"),
        (lambda table: table.assign(confidence=1.5), "confidences from 0 to 1"),
        (lambda table: table.assign(confidence="high"), "confidences from 0 to 1"),
        (
            lambda table: table.assign(actual=table["actual"].to_numpy()[::-1]),
            "its true classes are not those of prepared's test images: predictions of other",
        ),
    ],
)
def test_predictions_that_do_not_fit_the_test_images_are_one_error(
    predictions_file: Path,
    split: Split,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    message: str,
) -> None:
    change(pd.read_csv(predictions_file)).to_csv(predictions_file, index=False)
    with pytest.raises(StageError, match=message) as caught:
        read_predictions(predictions_file, split, CLASS_NAMES, Path("prepared"))
    assert "run `dvc repro evaluate`" in str(caught.value)
    assert "\n" not in str(caught.value)


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


HISTORY = {"loss": [2.0, 1.5], "val_loss": [2.1, 1.8], "accuracy": [0.2, 0.4],
           "val_accuracy": [0.2, 0.3]}  # fmt: skip


@pytest.mark.parametrize(
    ("history", "best_epoch", "message"),
    [
        ({**HISTORY, "val_loss": None}, 1, "loss, val_loss, accuracy, val_accuracy must be lists"),
        ({**HISTORY, "loss": [2.0, "x"]}, 1, "must be lists of numbers"),
        ({**HISTORY, "loss": [2.0]}, 1, "one per epoch"),
        (HISTORY, 3, "2 epochs, but evaluate kept epoch 3"),
    ],
)
def test_a_history_without_what_the_figures_plot_is_one_error(
    tmp_path: Path, history: dict, best_epoch: int, message: str
) -> None:
    path = write_json(tmp_path / "history.json", history)
    with pytest.raises(StageError, match=message):
        read_history(path, best_epoch)
    assert read_history(write_json(tmp_path / "good.json", HISTORY), 2) == HISTORY


@pytest.mark.parametrize(
    "metrics",
    [
        {"validation": {"epoch": 1, "accuracy": 0.5}},
        {"validation": {"epoch": "1", "accuracy": 0.5}, "test": {"accuracy": 0.4}},
        {"validation": {"epoch": 1, "accuracy": "high"}, "test": {"accuracy": 0.4}},
        {"validation": [1], "test": {"accuracy": 0.4}},
    ],
)
def test_metrics_without_the_kept_epoch_and_accuracies_are_one_error(
    tmp_path: Path, metrics: dict
) -> None:
    with pytest.raises(StageError, match="not evaluate's metrics"):
        read_metrics(write_json(tmp_path / "metrics.json", metrics))


def test_the_command_refuses_predictions_of_another_archive_and_writes_nothing(
    tmp_path: Path, prepared: Path
) -> None:
    write_params(tmp_path)
    test = load_split(prepared, "test")
    probabilities = np.full((len(test.labels), 10), 0.1)
    other_labels = (test.labels + 1) % 10  # the test images of another archive
    evaluate.predictions_table(other_labels, probabilities, CLASS_NAMES).to_csv(
        tmp_path / "predictions.csv", index=False
    )
    write_json(tmp_path / "history.json", HISTORY)
    metrics = {"validation": {"epoch": 2, "accuracy": 0.3}, "test": {"accuracy": 0.3}}
    write_json(tmp_path / "metrics.json", metrics)
    arguments = ["--prepared", str(prepared), "--history", "history.json",
                 "--predictions", "predictions.csv", "--metrics", "metrics.json",
                 "--output", "figures"]  # fmt: skip
    result = run_stage("plots", arguments, tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: predictions.csv: its true classes are not those of {prepared}'s test images: "
        "predictions of other data; run `dvc repro evaluate` to write it again\n"
    )
    assert not (tmp_path / "figures").exists()
