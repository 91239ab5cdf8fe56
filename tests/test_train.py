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
from stages.dataset import Standardization
from stages.train import build_model, flip_horizontally, load_model, make_dataset

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


def test_shuffle_is_seeded_and_changes_every_epoch() -> None:
    dataset = make_dataset(tiny_split(), standardization(), batch_size=12, shuffle_seed=3)
    first, second = ([labels.numpy() for _, labels in dataset] for _ in range(2))
    again = [
        labels.numpy()
        for _, labels in make_dataset(tiny_split(), standardization(), 12, shuffle_seed=3)
    ]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_flip_mirrors_left_to_right() -> None:
    pictures = np.arange(2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)
    always = tf.constant([0, 0], tf.int64)
    flipped = flip_horizontally(tf.constant(pictures), always).numpy()
    grid, flipped_grid = pictures.reshape(-1, *IMAGE_SHAPE), flipped.reshape(-1, *IMAGE_SHAPE)
    for original, result in zip(grid, flipped_grid, strict=True):
        # Each image is either untouched or mirrored along its width.
        assert np.array_equal(result, original) or np.array_equal(result, original[:, ::-1, :])
    many = flip_horizontally(tf.constant(np.repeat(pictures[:1], 200, axis=0)), always).numpy()
    mirrored = np.all(many.reshape(-1, *IMAGE_SHAPE) == grid[0][:, ::-1, :], axis=(1, 2, 3))
    assert 60 < mirrored.sum() < 140  # about half


def test_flip_needs_a_seed() -> None:
    with pytest.raises(ValueError, match="shuffle_seed"):
        make_dataset(tiny_split(), standardization(), 4, horizontal_flip=True)


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
