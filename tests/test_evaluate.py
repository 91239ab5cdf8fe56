"""The evaluate stage: hand-checked metrics, the kept-model check, and its command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_TRAIN, prepare_into, run_stage, train_arguments, write_params

from stages.cifar import CLASS_NAMES, FEATURES
from stages.cli import StageError
from stages.dataset import Preprocessing, Standardization, Whitening
from stages.evaluate import (
    PREDICTION_COLUMNS,
    KeptModel,
    check_kept_model,
    check_same_inputs,
    compute_test_metrics,
    kept_model,
    per_class_accuracy,
    predictions_table,
)
from stages.inference import Dense, DenseNetwork

# Four test images: two airplanes (one taken for an automobile), an automobile, a bird.
LABELS = np.array([0, 0, 1, 2])
PREDICTED = [0, 1, 1, 2]


def confident_probabilities() -> np.ndarray:
    probabilities = np.full((4, 10), 0.01)
    for row, predicted in enumerate(PREDICTED):
        probabilities[row, predicted] = 0.91
    return probabilities


def test_metrics_on_a_hand_checked_case() -> None:
    metrics = compute_test_metrics(LABELS, confident_probabilities(), n_classes=10)
    assert metrics["accuracy"] == 0.75
    assert metrics["loss"] == pytest.approx(-(3 * np.log(0.91) + np.log(0.01)) / 4)
    # F1 per class: airplane 2/3 (precision 1, recall 1/2), automobile 2/3 (1/2, 1),
    # bird 1, the seven classes never seen nor predicted 0; their mean over ten classes:
    assert metrics["macro_f1"] == pytest.approx(0.2333333333)


def test_per_class_accuracy_is_recall_with_zero_for_absent_classes() -> None:
    table = per_class_accuracy(LABELS, confident_probabilities(), CLASS_NAMES)
    assert table["class"].tolist() == list(CLASS_NAMES)
    assert table["accuracy"].tolist() == [0.5, 1.0, 1.0] + [0.0] * 7


def test_predictions_table_names_classes() -> None:
    probabilities = np.eye(10)[[3, 5]] * 0.8 + 0.02
    table = predictions_table(np.array([3, 4]), probabilities, CLASS_NAMES)
    assert tuple(table.columns) == PREDICTION_COLUMNS
    assert table["actual"].tolist() == ["cat", "deer"]
    assert table["predicted"].tolist() == ["cat", "dog"]
    assert table["confidence"].tolist() == [0.82, 0.82]


def network(seed: int) -> DenseNetwork:
    """A small network of random weights: another seed gives other weights of the same shape."""
    rng = np.random.default_rng(seed)
    layers = tuple(
        Dense(
            rng.normal(size=shape).astype(np.float32),
            rng.normal(size=shape[1]).astype(np.float32),
            activation,
        )
        for shape, activation in (((6, 4), "relu"), ((4, 3), "softmax"))
    )
    return DenseNetwork(np.zeros(6, np.float32), np.ones(6, np.float32), layers)


HISTORY = {"loss": [2.1, 1.5, 1.6], "accuracy": [0.2, 0.45, 0.4],
           "val_loss": [1.9, 1.4, 1.5], "val_accuracy": [0.30, 0.52, 0.41]}  # fmt: skip


def summary_of(network: DenseNetwork, best_epoch: int = 2) -> dict:
    return {"best_epoch": best_epoch, "weights_sha256": network.weights_sha256}


def test_the_kept_model_is_read_from_summary_and_history() -> None:
    kept = kept_model(summary_of(network(0)), HISTORY, Path("history.json"))
    assert kept == KeptModel(network(0).weights_sha256, epoch=2, validation_accuracy=0.52)


@pytest.mark.parametrize(
    ("summary_change", "history_change", "message"),
    [
        ({"best_epoch": 0}, {}, "best_epoch = 0 is not an epoch of it (1 to 3)"),
        ({"best_epoch": 4}, {}, "best_epoch = 4 is not an epoch of it (1 to 3)"),
        ({"best_epoch": "2"}, {}, "best_epoch = '2' is not an epoch of it"),
        ({"weights_sha256": None}, {}, "weights_sha256 = None is not a sha256"),
        ({}, {"val_accuracy": [0.3, float("nan"), 0.41]}, "val_accuracy at epoch 2 is nan"),
        ({}, {"loss": [2.1, float("inf"), 1.6]}, "loss at epoch 2 is inf"),
        ({}, {"accuracy": [0.2, 1.5, 0.4]}, "accuracy at epoch 2 is 1.5, not a number from 0"),
        ({}, {"val_loss": [1.9, 1.4]}, "expected the series loss, accuracy, val_loss, val_acc"),
        ({}, {"val_loss": None}, "expected the series"),
    ],
)
def test_a_record_out_of_place_is_refused_in_one_line(
    summary_change: dict, history_change: dict, message: str
) -> None:
    with pytest.raises(StageError) as caught:
        kept_model(
            {**summary_of(network(0)), **summary_change},
            {**HISTORY, **history_change},
            Path("history.json"),
        )
    text = str(caught.value)
    assert text.startswith("history.json: ")
    assert message in text
    assert text.endswith("; run `dvc repro train` to write it again")
    assert "\n" not in text


def test_weights_of_the_same_shape_from_another_run_are_refused() -> None:
    kept = kept_model(summary_of(network(0)), HISTORY, Path("history.json"))
    check_kept_model(network(0), kept, 0.52, Path("model"))
    # Same architecture, other weights (another seed), even with the same accuracy.
    with pytest.raises(StageError, match=r"model: not the weights the train stage kept"):
        check_kept_model(network(1), kept, 0.52, Path("model"))


def test_a_history_that_is_not_the_models_is_refused() -> None:
    kept = kept_model(summary_of(network(0)), HISTORY, Path("history.json"))
    check_kept_model(network(0), kept, 0.5205, Path("model"))
    with pytest.raises(
        StageError, match=r"0\.4100, but training logged 0\.5200 for the kept epoch 2"
    ):
        check_kept_model(network(0), kept, 0.41, Path("model"))


EVALUATE_OUTPUTS = ("reports/metrics.json", "reports/evaluate/predictions.csv",
                    "reports/evaluate/per_class_accuracy.csv")  # fmt: skip


def evaluate(folder: Path) -> object:
    metrics, predictions, per_class = EVALUATE_OUTPUTS
    arguments = ["--prepared", "data/prepared", "--model", "data/model",
                 "--summary", "reports/train/summary.json",
                 "--history", "reports/train/history.json", "--metrics", metrics,
                 "--predictions", predictions, "--per-class", per_class]  # fmt: skip
    return run_stage("evaluate", arguments, folder, check=False)


@pytest.fixture
def copy_of_trained(tmp_path: Path, trained: Path) -> Path:
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder, symlinks=True)
    return folder


def test_evaluate_measures_the_kept_epochs_validation_accuracy(copy_of_trained: Path) -> None:
    result = evaluate(copy_of_trained)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((copy_of_trained / EVALUATE_OUTPUTS[0]).read_text())
    assert set(metrics) == {"test", "validation"}
    assert set(metrics["test"]) == {"accuracy", "loss", "macro_f1"}
    summary = json.loads((copy_of_trained / "reports/train/summary.json").read_text())
    history = json.loads((copy_of_trained / "reports/train/history.json").read_text())
    kept = history["val_accuracy"][summary["best_epoch"] - 1]
    assert metrics["validation"] == {"accuracy": pytest.approx(kept, abs=1e-6),
                                     "epoch": summary["best_epoch"]}  # fmt: skip
    predictions = (copy_of_trained / EVALUATE_OUTPUTS[1]).read_text().splitlines()
    assert predictions[0] == ",".join(PREDICTION_COLUMNS)
    assert len(predictions) == 1 + 40


def test_a_model_trained_with_other_params_is_refused_and_nothing_is_written(
    copy_of_trained: Path,
) -> None:
    # Another model in data/model, while the summary still describes the first one.
    write_params(copy_of_trained / "other", {"train": {**QUICK_TRAIN, "hidden_units": [8]}})
    (copy_of_trained / "other" / "data").mkdir()
    (copy_of_trained / "other" / "data" / "prepared").symlink_to(
        (copy_of_trained / "data" / "prepared").resolve()
    )
    run_stage("train", train_arguments(), copy_of_trained / "other")
    shutil.rmtree(copy_of_trained / "data" / "model")
    shutil.copytree(copy_of_trained / "other/data/model", copy_of_trained / "data/model")
    result = evaluate(copy_of_trained)
    assert result.returncode == 1
    assert result.stderr == (
        "error: data/model: not the weights the train stage kept (their sha256 differs from "
        "its summary's); run `dvc repro train`\n"
    )
    for output in EVALUATE_OUTPUTS:
        assert not (copy_of_trained / output).exists()


def test_a_truncated_input_names_the_stage_to_rerun(copy_of_trained: Path) -> None:
    codes = copy_of_trained / "data" / "prepared"
    local = copy_of_trained / "prepared-copy"
    shutil.copytree(codes.resolve(), local)
    codes.unlink()
    codes.symlink_to(local)
    test_codes = local / "test_codes.npy"
    test_codes.write_bytes(test_codes.read_bytes()[:1000])
    result = evaluate(copy_of_trained)
    assert result.returncode == 1
    assert result.stderr.startswith("error: data/prepared/test_codes.npy: unreadable or truncated")
    assert "run `dvc repro prepare`" in result.stderr


def one_output_network() -> DenseNetwork:
    kernel = np.zeros((FEATURES, 1), np.float32)
    return DenseNetwork(np.full(FEATURES, 120, np.float32), np.full(FEATURES, 60, np.float32),
                        (Dense(kernel, np.zeros(1, np.float32), "softmax"),))  # fmt: skip


def zca(epsilon: float = 0.3) -> Preprocessing:
    whitening = Whitening(np.zeros(FEATURES, np.float32), np.eye(1, FEATURES, dtype=np.float32),
                          np.array([-1.0], np.float32), epsilon, std=2.0)  # fmt: skip
    return Preprocessing("zca", whitening)


@pytest.mark.parametrize(
    ("prepared_preprocessing", "model_preprocessing", "scale", "message"),
    [
        (Preprocessing("per_pixel"), zca(), 1.0, r"\('per_pixel', .*trained on \('zca'\)"),
        (zca(), Preprocessing("unit"), 1.0, r"\('zca', .*trained on \('unit'\)"),
        (zca(0.1), zca(), 1.0, r"\('zca', .*trained on \('zca'\)"),
        (
            Preprocessing("unit"),
            Preprocessing("per_channel"),
            1.0,
            r"\('unit', .*\('per_channel'\)",
        ),
        (Preprocessing("unit"), Preprocessing("unit"), 2.0, r"\('unit', .*trained on \('unit'\)"),
    ],
)
def test_a_prepared_folder_of_other_inputs_is_blamed_not_the_model(
    prepared_preprocessing: Preprocessing,
    model_preprocessing: Preprocessing,
    scale: float,
    message: str,
) -> None:
    model = one_output_network()
    standardization = Standardization(model.mean, model.scale * np.float32(scale))
    inputs = (Path("prepared"), prepared_preprocessing, standardization)
    with pytest.raises(StageError, match=f"^prepared: its input scaling {message}") as caught:
        check_same_inputs(model, ("a",), inputs, (Path("model"), model_preprocessing))
    assert "the prepared data changed since training; `dvc repro` trains" in str(caught.value)
    same = (Path("prepared"), model_preprocessing, Standardization(model.mean, model.scale))
    check_same_inputs(model, ("a",), same, (Path("model"), model_preprocessing))


def test_a_prepared_folder_of_other_classes_is_refused() -> None:
    model = one_output_network()
    unit = Preprocessing("unit")
    inputs = (Path("prepared"), unit, Standardization(model.mean, model.scale))
    with pytest.raises(StageError, match="prepared: 10 classes, but model has 1 outputs"):
        check_same_inputs(model, CLASS_NAMES, inputs, (Path("model"), unit))


def test_a_prepared_folder_of_another_scaling_is_named_on_the_command_line(
    copy_of_trained: Path, tiny_archive: Path
) -> None:
    other = prepare_into(copy_of_trained / "other", tiny_archive, {"prepare": {"scaling": "unit"}})
    (copy_of_trained / "data" / "prepared").unlink()
    (copy_of_trained / "data" / "prepared").symlink_to(other)
    result = evaluate(copy_of_trained)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: data/prepared: its input scaling ('unit', fitted on its train split) is not "
        "the one data/model was trained on ('zca')"
    )
    assert result.stderr.count("\n") == 1


def test_a_tampered_model_folder_is_one_line(copy_of_trained: Path) -> None:
    architecture = copy_of_trained / "data" / "model" / "model.json"
    model = json.loads(architecture.read_text())
    model["config"]["layers"][2]["config"]["units"] = "many"
    architecture.write_text(json.dumps(model))
    result = evaluate(copy_of_trained)
    assert result.returncode == 1
    assert result.stderr.startswith("error: data/model/model.weights.h5: weights of shapes")
    assert result.stderr.count("\n") == 1
    for output in EVALUATE_OUTPUTS:
        assert not (copy_of_trained / output).exists()
