"""Scoring the kept model: hand-checked metrics, and the evaluate stage on a model folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import MODEL, SEED_REPORTS, run_stage, write_params
from models import numpy_outputs, write_model_folder

from cifar10 import evaluation  # its test_metrics is no test: imported as the module's
from cifar10.archive import CLASS_NAMES
from cifar10.command import run as run_command
from cifar10.model import load_classifier
from cifar10.prepared import read_model_inputs
from cifar10.reports import PREDICTION_COLUMNS, read_predictions

# Four test images: two airplanes (one taken for an automobile), an automobile, a bird.
LABELS = np.array([0, 0, 1, 2])
PREDICTED = [0, 1, 1, 2]


def confident_probabilities() -> np.ndarray:
    probabilities = np.full((4, 10), 0.01)
    for row, predicted in enumerate(PREDICTED):
        probabilities[row, predicted] = 0.91
    return probabilities


def test_metrics_on_a_hand_checked_case() -> None:
    metrics = evaluation.test_metrics(LABELS, confident_probabilities())
    assert metrics["accuracy"] == 0.75
    assert metrics["loss"] == pytest.approx(-(3 * np.log(0.91) + np.log(0.01)) / 4)
    # F1 per class: airplane 2/3 (precision 1, recall 1/2), automobile 2/3 (1/2, 1),
    # bird 1, the seven classes never seen nor predicted 0; their mean over ten classes:
    assert metrics["macro_f1"] == pytest.approx(0.2333333333)


def test_accuracy_is_the_share_of_likeliest_classes_that_are_the_labels() -> None:
    assert evaluation.accuracy(LABELS, confident_probabilities()) == 0.75
    assert evaluation.accuracy(np.array([3]), np.eye(10)[[3]]) == 1.0


def test_per_class_accuracy_is_recall_with_zero_for_absent_classes() -> None:
    table = evaluation.per_class_accuracy(LABELS, confident_probabilities())
    assert table["class"].tolist() == list(CLASS_NAMES)
    assert table["accuracy"].tolist() == [0.5, 1.0, 1.0] + [0.0] * 7


REPORTS = SEED_REPORTS.evaluation
EVALUATE_OUTPUTS = (REPORTS.metrics, REPORTS.test_predictions, REPORTS.per_class,
                    REPORTS.validation_predictions)  # fmt: skip
SUMMARY = SEED_REPORTS.train.summary


def evaluate_arguments() -> list[str]:
    return ["--prepared", "data/prepared", "--model", MODEL,
            "--train-reports", str(SEED_REPORTS.train.folder),
            "--output", str(REPORTS.folder)]  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder: params, the session's prepared data, a model folder, a summary."""
    write_params(tmp_path)
    shutil.copytree(prepared, tmp_path / "data" / "prepared")
    write_model_folder(tmp_path / MODEL)
    (tmp_path / SUMMARY).parent.mkdir(parents=True)
    (tmp_path / SUMMARY).write_text(json.dumps({"best_epoch": 3}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def evaluate(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the evaluate stage in this process: its status and stderr."""
    capsys.readouterr()
    status = run_command("stages.evaluate", evaluate_arguments(), environ=dict(os.environ))
    return status, capsys.readouterr().err


def nothing_written(project: Path) -> bool:
    return not (project / REPORTS.folder).exists()


def test_the_stage_scores_the_model_folder_on_the_prepared_splits(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = evaluate(capsys)
    assert status == 0, err
    # The oracle: the numpy reference on the inputs the prepare stage wrote.
    classifier = load_classifier(project / MODEL)
    expected = {}
    for split in ("validation", "test"):
        inputs = read_model_inputs(project / "data" / "prepared", split, classifier.preprocessing)
        expected[split] = inputs.labels, numpy_outputs(classifier.model, inputs.images)
    metrics = json.loads((project / EVALUATE_OUTPUTS[0]).read_text())
    assert metrics["validation"] == {
        "accuracy": pytest.approx(evaluation.accuracy(*expected["validation"])),
        "epoch": 3,
        "images": len(expected["validation"][0]),
    }
    assert metrics["test"] == pytest.approx(
        evaluation.test_metrics(*expected["test"]) | {"images": len(expected["test"][0])},
        abs=1e-5,
    )
    validation = read_predictions(project / EVALUATE_OUTPUTS[3])
    assert validation["predicted"].tolist() == [
        CLASS_NAMES[index] for index in expected["validation"][1].argmax(axis=1)
    ]
    labels, probabilities = expected["test"]
    predictions = read_predictions(project / EVALUATE_OUTPUTS[1], len(labels))
    assert tuple(pd.read_csv(project / EVALUATE_OUTPUTS[1]).columns) == PREDICTION_COLUMNS
    assert predictions["predicted"].tolist() == [
        CLASS_NAMES[index] for index in probabilities.argmax(axis=1)
    ]
    np.testing.assert_allclose(predictions["confidence"], probabilities.max(axis=1), atol=1e-5)
    per_class = pd.read_csv(project / EVALUATE_OUTPUTS[2])
    pd.testing.assert_frame_equal(per_class, evaluation.per_class_accuracy(labels, probabilities))


def test_a_truncated_input_names_the_stage_to_rerun_and_nothing_is_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = project / "data" / "prepared" / "test_codes.npy"
    codes.write_bytes(codes.read_bytes()[:1000])
    status, err = evaluate(capsys)
    assert status == 1
    assert err.startswith("error: data/prepared/test_codes.npy: truncated or padded: 1,000 bytes")
    assert err.count("\n") == 1
    assert "run `dvc repro prepare`" in err
    assert nothing_written(project)


def test_prepared_data_without_the_inputs_the_model_reads_is_named(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A model folder whose preprocessing encodes images (ZCA), on data prepared without.
    (project / "data" / "prepared" / "validation_codes.npy").unlink()
    status, err = evaluate(capsys)
    assert status == 1
    assert err == (
        "error: data/prepared/validation_codes.npy: missing; run `dvc repro prepare` to write "
        "it again\n"
    )
    assert nothing_written(project)


def test_a_tampered_model_folder_is_one_line_and_nothing_is_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / MODEL / "model.keras").write_bytes(b"not a zip")
    status, err = evaluate(capsys)
    assert status == 1
    assert err.startswith(f"error: {MODEL}/model.keras: not a model Keras can load")
    assert err.count("\n") == 1
    assert "run `dvc repro train`" in err
    assert nothing_written(project)


def test_a_summary_without_the_kept_epoch_is_one_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / SUMMARY).write_text(json.dumps({"best_epoch": "3"}))
    status, err = evaluate(capsys)
    assert status == 1
    assert err == (
        f"error: {SUMMARY}: best_epoch = '3' is not an epoch; run `dvc repro train` to write "
        "it again\n"
    )
    assert nothing_written(project)


@pytest.mark.integration
def test_the_stage_measures_the_kept_epochs_validation_accuracy(
    trained: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder, symlinks=True)
    run_stage("evaluate", evaluate_arguments(), folder)
    metrics = json.loads((folder / EVALUATE_OUTPUTS[0]).read_text())
    assert set(metrics) == {"test", "validation"}
    assert set(metrics["test"]) == {"accuracy", "loss", "macro_f1", "images"}
    # The oracle: what training logged for the epoch whose weights it kept.
    summary = json.loads((folder / SUMMARY).read_text())
    history = json.loads((folder / SEED_REPORTS.train.history).read_text())
    kept = history["val_accuracy"][summary["best_epoch"] - 1]
    assert metrics["validation"] == {"accuracy": pytest.approx(kept, abs=1e-6),
                                     "epoch": summary["best_epoch"], "images": 40}  # fmt: skip
    predictions = (folder / EVALUATE_OUTPUTS[1]).read_text().splitlines()
    assert predictions[0] == ",".join(PREDICTION_COLUMNS)
    assert len(predictions) == 1 + 40
