"""The figures: every one renders from small inputs, with readable labels; the plots stage."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPOSITORY, params_with, run_stage, write_params
from PIL import Image

from cifar10.archive import CLASS_NAMES, FEATURES, Split
from cifar10.command import run as run_command
from cifar10.figures import (
    MAX_FIGURE_PIXELS,
    confusion_counts,
    drawing_dpi,
    labelled_images,
    mosaic,
    render_figures,
    samples_by_class,
)
from cifar10.params import PlotsParams
from cifar10.prepared import write_prepared
from cifar10.preprocessing import fit_preprocessing
from cifar10.reports import (
    EvaluationReports,
    TrainReports,
    write_aggregate,
    write_history,
    write_metrics,
    write_predictions,
)
from stages.plots import run_summary

FIGURES = {"samples.png", "training_loss.png", "loss.png", "accuracy.png",
           "test_predictions.png", "confusion_matrix.png", "confident_errors.png"}  # fmt: skip
HISTORY = {"loss": [2.0, 1.5], "accuracy": [0.2, 0.4], "val_loss": [2.1, 1.7],
           "val_accuracy": [0.2, 0.3]}  # fmt: skip


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


def test_the_sample_grid_has_a_named_row_per_class(split: Split) -> None:
    figure = samples_by_class(split.images, split.labels, CLASS_NAMES, per_class=4)
    (axis,) = figure.axes
    assert [label.get_text() for label in axis.get_yticklabels()] == list(CLASS_NAMES)
    picture = axis.images[0].get_array()
    # Three images per class exist: the fourth column of each row stays white.
    first_row = picture[:32]
    np.testing.assert_array_equal(first_row[:, :32].reshape(-1), split.images[0])
    assert (first_row[:, 3 * 36 :] == 255).all()


def test_the_mosaic_places_images_row_by_row_with_gaps(split: Split) -> None:
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
    params = PlotsParams(samples_per_class=2, n_predictions=10, n_confident_errors=3, dpi=50)
    figures = render_figures(
        split, split, predictions=predictions, history=HISTORY, best_epoch=2,
        class_names=CLASS_NAMES, params=params, label_smoothing=0.1,
    )  # fmt: skip
    assert set(figures) == FIGURES
    loss_axis = figures["loss.png"].axes[0]
    assert loss_axis.get_xlabel() == "Epoch"
    assert loss_axis.get_ylabel() == "Cross-entropy, label smoothing 0.1"
    assert [text.get_text() for text in loss_axis.get_legend().get_texts()][:2] == [
        "Training loss", "Validation loss",
    ]  # fmt: skip
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    most_confident = f"({wrong['confidence'].max():.0%})"
    assert figures["confident_errors.png"].axes[0].texts[0].get_text().endswith(most_confident)
    low, high = loss_axis.get_xlim()
    assert [tick for tick in loss_axis.get_xticks() if low <= tick <= high] == [1, 2]


def largest_plots_params() -> PlotsParams:
    """Every plots key at the top of its range: the figures' largest sizes and dpi."""
    return PlotsParams(**{
        name: next(bound.le for bound in field.metadata if hasattr(bound, "le"))
        for name, field in PlotsParams.model_fields.items()
    })  # fmt: skip


def test_at_the_largest_settings_no_figure_is_drawn_with_more_than_its_pixels(
    split: Split, predictions: pd.DataFrame
) -> None:
    params = largest_plots_params()
    many = pd.concat([predictions] * 7, ignore_index=True)  # more than n_predictions
    figures = render_figures(
        split, Split(np.repeat(split.images, 7, axis=0), np.repeat(split.labels, 7)),
        predictions=many, history=HISTORY, best_epoch=2, class_names=CLASS_NAMES,
        params=params, label_smoothing=0.1,
    )  # fmt: skip
    pixels = {}
    for name, figure in figures.items():
        width, height = figure.get_size_inches()
        dpi = drawing_dpi(figure, params.dpi)
        pixels[name] = (dpi, width * dpi * height * dpi)
        assert pixels[name][1] <= MAX_FIGURE_PIXELS, name
        # As close to the bound as a whole dpi allows, or the dpi asked.
        assert dpi == params.dpi or width * height * (dpi + 1) ** 2 > MAX_FIGURE_PIXELS
    assert pixels["loss.png"][0] == params.dpi  # a small figure keeps its resolution
    assert pixels["test_predictions.png"][0] < params.dpi  # 40 rows of images do not


def test_the_loss_says_label_smoothing_only_when_there_is_some(
    split: Split, predictions: pd.DataFrame
) -> None:
    figures = render_figures(
        split, split, predictions=predictions, history=HISTORY, best_epoch=2,
        class_names=CLASS_NAMES, params=PlotsParams(samples_per_class=1, n_predictions=1,
        n_confident_errors=1, dpi=30), label_smoothing=0,
    )  # fmt: skip
    assert figures["loss.png"].axes[0].get_ylabel() == "Cross-entropy"


def test_the_run_ends_with_the_accuracies_intervals_and_where_to_look() -> None:
    aggregate = {
        "validation": {"accuracy": 0.59006, "low": 0.5801, "high": 0.6001,
                       "interval": "t over 3 seeds"},
        "test": {"accuracy": 0.58124, "low": 0.571, "high": 0.591, "interval": "t over 3 seeds"},
    }  # fmt: skip
    kept = {"validation": {"accuracy": 0.59, "epoch": 27}}
    summary = run_summary(aggregate, kept, 42, Path("reports/figures"), 7)
    figures = re.search(r"wrote (\d+) figures to (\S+)", summary)
    assert figures is not None
    assert figures.groups() == ("7", "reports/figures")
    assert (
        "validation accuracy 0.5901 [0.5801, 0.6001] (t over 3 seeds), "
        "test accuracy 0.5812 [0.5710, 0.5910] (t over 3 seeds)"
    ) in summary
    assert "kept model: seed 42, epoch 27" in summary
    # The README section it points to exists.
    pointer = re.search(r"\(README\.md, ([^)]+)\)", summary)
    assert pointer is not None
    assert f"\n## {pointer[1]}\n" in (REPOSITORY / "README.md").read_text()


PLOTS_ARGUMENTS = ["--prepared", "prepared", "--train-reports", "train",
                   "--evaluation", "evaluate", "--metrics", "metrics.json"]  # fmt: skip
AGGREGATE = {
    "validation": {"accuracy": 0.3, "low": 0.2, "high": 0.4, "n": 1, "interval": "binomial"},
    "test": {"accuracy": 0.25, "low": 0.15, "high": 0.35, "n": 1, "interval": "binomial"},
}


@pytest.fixture
def plots_inputs(tmp_path: Path, split: Split, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder: params, prepared data and the reports the plots stage reads."""
    write_params(tmp_path, {"plots": {"dpi": 40}})
    splits = {"train": split, "validation": split, "test": split}
    unit = fit_preprocessing(split.images, params_with({"prepare": {"scaling": "unit"}}).prepare)
    write_prepared(tmp_path / "prepared", splits, unit)
    train, evaluation = TrainReports(tmp_path / "train"), EvaluationReports(tmp_path / "evaluate")
    train.folder.mkdir()
    evaluation.folder.mkdir()
    write_history(train.history, HISTORY)
    write_metrics(
        evaluation.metrics,
        {"accuracy": 0.3, "epoch": 2, "images": 20},
        {"accuracy": 0.25, "images": 20},
    )
    write_aggregate(tmp_path / "metrics.json", AGGREGATE)
    probabilities = np.eye(10)[(split.labels + split.labels % 2) % 10] * 0.5 + 0.05
    write_predictions(evaluation.test_predictions, split.labels, probabilities)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "content", "message", "stage"),
    [
        (
            "evaluate/predictions.csv",
            "index,actual\n0,cat\n",
            "columns ['index', 'actual']",
            "evaluate",
        ),
        ("train/history.json", '{"loss": [1.0]}', "must be lists of numbers", "train"),
        ("evaluate/metrics.json", '{"test": {}}', "not evaluate's metrics", "evaluate"),
        ("metrics.json", '{"test": {}}', "not the aggregate metrics", "aggregate"),
    ],
)
def test_a_malformed_input_is_one_line_naming_it_and_no_figure_is_written(
    plots_inputs: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    name: str,
    content: str,
    message: str,
    stage: str,
) -> None:
    (plots_inputs / name).write_text(content)
    capsys.readouterr()
    arguments = [*PLOTS_ARGUMENTS, "--output", "figures"]
    status = run_command("stages.plots", arguments, environ=dict(os.environ))
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"error: {name}: ")
    assert message in err
    assert err.endswith(f"; run `dvc repro {stage}` to write it again\n")
    assert err.count("\n") == 1
    assert not (plots_inputs / "figures").exists()


@pytest.mark.integration
def test_the_stage_writes_every_figure_the_same_way_each_run(plots_inputs: Path) -> None:
    outputs = {}
    for name in ("first", "second"):
        result = run_stage("plots", [*PLOTS_ARGUMENTS, "--output", name], plots_inputs)
        assert result.stdout.startswith(f"wrote 7 figures to {name}\n")
        assert "validation accuracy 0.3000 [0.2000, 0.4000] (binomial)" in result.stdout
        assert "kept model: seed 42, epoch 2" in result.stdout
        outputs[name] = {path.name: path.read_bytes() for path in (plots_inputs / name).iterdir()}
    assert set(outputs["first"]) == FIGURES
    assert outputs["first"] == outputs["second"]  # no date in the PNGs
    for path in (plots_inputs / "first").iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert min(image.size) > 100, path.name


@pytest.mark.integration
def test_at_the_largest_settings_the_stage_says_which_figures_it_drew_smaller(
    plots_inputs: Path,
) -> None:
    largest = largest_plots_params()
    write_params(plots_inputs, {"plots": largest.model_dump()})
    result = run_stage("plots", [*PLOTS_ARGUMENTS, "--output", "figures"], plots_inputs)
    smaller = re.findall(
        r"^(\S+): drawn at (\d+) dpi, not plots.dpi = 400", result.stdout, re.MULTILINE
    )
    assert {name for name, _ in smaller} >= {"samples.png", "test_predictions.png"}
    for path in (plots_inputs / "figures").iterdir():
        with Image.open(path) as image:
            assert image.width * image.height <= MAX_FIGURE_PIXELS, path.name
