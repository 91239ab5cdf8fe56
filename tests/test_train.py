"""The train stage: model shape, input pipeline, determinism, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from stages.cifar import FEATURES, IMAGE_SHAPE, Split
from stages.cli import StageError
from stages.dataset import Standardization
from stages.params import load_params
from stages.train import (
    build_model,
    load_model,
    make_dataset,
    make_strategy,
    mirror_batch,
    steps_per_call,
    train,
)

REPOSITORY = Path(__file__).resolve().parent.parent


def tiny_split(rows: int = 12, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)
    return Split(images, (np.arange(rows) % 10).astype(np.uint8))


def standardization() -> Standardization:
    rng = np.random.default_rng(1)
    return Standardization(
        rng.uniform(100, 150, FEATURES).astype(np.float32),
        rng.uniform(40, 80, FEATURES).astype(np.float32),
    )


def test_default_model_has_the_assignments_parameter_counts() -> None:
    model = build_model(FEATURES, [128, 64], 10, "relu", 0.0)
    assert [layer.count_params() for layer in model.layers] == [393_344, 8_256, 650]
    assert model.count_params() == 402_250
    assert model.output_shape == (None, 10)


def test_dropout_adds_layers_but_no_parameters() -> None:
    model = build_model(FEATURES, [128, 64], 10, "relu", 0.3)
    assert model.count_params() == 402_250
    assert [layer.name for layer in model.layers] == [
        "hidden_1", "dropout_1", "hidden_2", "dropout_2", "output",
    ]  # fmt: skip


def test_softmax_output_sums_to_one() -> None:
    model = build_model(FEATURES, [16], 10, "relu", 0.0)
    output = model(standardization().transform(tiny_split().images)).numpy()
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)


def test_dataset_standardizes_like_numpy_and_keeps_every_image() -> None:
    split, scaling = tiny_split(), standardization()
    batches = list(make_dataset(split, scaling, batch_size=5))
    images = np.concatenate([batch[0].numpy() for batch in batches])
    assert [len(batch[1]) for batch in batches] == [5, 5, 2]
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, scaling.transform(split.images))


def epoch_labels(dataset: tf.data.Dataset) -> list[np.ndarray]:
    return [labels.numpy() for _, labels in dataset]


def test_shuffle_is_seeded_and_changes_every_epoch() -> None:
    split, scaling = tiny_split(), standardization()
    first, second = epoch_labels(make_dataset(split, scaling, 12, shuffle_seed=3, epochs=2))
    again, _ = epoch_labels(make_dataset(split, scaling, 12, shuffle_seed=3, epochs=2))
    other, _ = epoch_labels(make_dataset(split, scaling, 12, shuffle_seed=4, epochs=2))
    assert sorted(first) == sorted(second) == sorted(split.labels)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    ("steps_per_epoch", "limit", "expected"),
    [(1250, 128, 125), (250, 128, 125), (256, 128, 128), (7, 128, 7), (127, 64, 1), (10, 4, 2)],
)
def test_steps_per_call_divides_the_epoch(steps_per_epoch: int, limit: int, expected: int) -> None:
    assert steps_per_call(steps_per_epoch, limit) == expected


def test_epochs_stay_aligned_with_several_steps_per_call() -> None:
    """Keras runs whole calls: 10 steps in calls of 4 would make epochs of 12 and 8 steps.

    Keras then warns that the input ran out of data, which this suite turns into an error.
    """
    params = load_params(REPOSITORY / "params.yaml").train.model_copy(
        update={"epochs": 2, "batch_size": 4, "steps_per_execution": 4, "hidden_units": [8]}
    )
    result = train(
        tiny_split(rows=40),
        tiny_split(rows=8, seed=1),
        standardization=standardization(),
        n_classes=10,
        params=params,
        validation_batch_size=8,
        strategy=make_strategy("none"),
        live=None,
    )
    assert int(result.model.optimizer.iterations) == 2 * 10
    assert len(result.history["loss"]) == 2


def test_multi_worker_without_tf_config_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StageError, match="multi_worker needs TF_CONFIG"):
        make_strategy("multi_worker")


def mirror_images(images: np.ndarray) -> np.ndarray:
    """Reference: flat height-width-channel rows mirrored left to right, with numpy."""
    return images.reshape(-1, *IMAGE_SHAPE)[:, :, ::-1, :].reshape(images.shape)


def test_mirror_batch_reverses_the_width_of_the_chosen_rows() -> None:
    images = np.arange(3 * FEATURES).astype(np.uint8).reshape(3, FEATURES)
    flip = np.array([False, True, True])
    mirrored = mirror_batch(tf.constant(images), tf.constant(flip)).numpy()
    np.testing.assert_array_equal(mirrored[0], images[0])
    np.testing.assert_array_equal(mirrored[1:], mirror_images(images[1:]))
    pictures, originals = mirrored.reshape(-1, *IMAGE_SHAPE), images.reshape(-1, *IMAGE_SHAPE)
    row, column, channel = 4, 9, 1
    assert pictures[1, row, column, channel] == originals[1, row, 31 - column, channel]


def test_flip_shows_each_image_plain_or_mirrored_about_half_the_time() -> None:
    rng = np.random.default_rng(5)
    split = Split(
        rng.integers(0, 256, size=(400, FEATURES), dtype=np.uint8), np.zeros(400, np.uint8)
    )
    unit = Standardization(np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32))
    dataset = make_dataset(split, unit, 50, shuffle_seed=0, horizontal_flip=True)
    seen = np.concatenate([features.numpy() for features, _ in dataset]).astype(np.uint8)
    plain = {row.tobytes() for row in split.images}
    mirrored = {row.tobytes() for row in mirror_images(split.images)}
    kinds = [(row.tobytes() in plain, row.tobytes() in mirrored) for row in seen]
    assert all(any(kind) for kind in kinds)
    assert 150 < sum(is_mirrored for _, is_mirrored in kinds) < 250
    assert len({row.tobytes() for row in seen}) == 400  # every image once per epoch


@pytest.fixture
def prepared_project(tmp_path: Path, tiny_archive: Path) -> Path:
    """A folder with params.yaml (2 quick epochs, flips on) and the tiny archive prepared."""
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    params["train"].update(
        epochs=2, hidden_units=[32, 16], horizontal_flip=True, early_stopping_patience=1
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepare = [sys.executable, "-m", "stages.prepare", "--archive", str(tiny_archive),
               "--output", "data/prepared", "--report", "reports/data.json"]  # fmt: skip
    subprocess.run(prepare, cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def run_train(project: Path, name: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "stages.train", "--prepared", "data/prepared",
               "--model", f"{name}/model", "--live", f"{name}/live",
               "--summary", f"{name}/summary.json",
               "--history", f"{name}/history.json"]  # fmt: skip
    return subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)


def test_training_twice_gives_bit_identical_outputs(prepared_project: Path) -> None:
    for name in ("first", "second"):
        result = run_train(prepared_project, name)
        assert result.returncode == 0, result.stderr
    first, second = prepared_project / "first", prepared_project / "second"
    for relative in ("model/model.weights.h5", "model/model.json", "history.json", "summary.json",
                     "live/metrics.json", "live/plots/metrics/eval/accuracy.tsv"):  # fmt: skip
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative

    summary = json.loads((first / "summary.json").read_text())
    assert summary["total_parameters"] == 3072 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert summary["first_sample_output_sum"] == pytest.approx(1.0, abs=1e-5)
    assert 1 <= summary["best_epoch"] <= 2
    assert summary["jit_compile"] is True  # Keras silently drops XLA under op determinism
    history = json.loads((first / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == summary["epochs_run"]
    tsv = (first / "live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert tsv[0] == "step\tloss"
    assert len(tsv) == 1 + summary["epochs_run"]
    assert load_model(first / "model").count_params() == summary["total_parameters"]


@pytest.mark.slow
def test_other_seed_gives_other_weights(prepared_project: Path) -> None:
    assert run_train(prepared_project, "first").returncode == 0
    params_file = prepared_project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["seed"] = 7
    params_file.write_text(yaml.safe_dump(params))
    assert run_train(prepared_project, "other").returncode == 0
    weights = "model/model.weights.h5"
    assert (prepared_project / "first" / weights).read_bytes() != (
        prepared_project / "other" / weights
    ).read_bytes()
