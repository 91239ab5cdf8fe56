"""The prepare stage: split, standardization statistics, report, and its command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stages.cifar import FEATURES, Split, file_md5, load_cifar_archive
from stages.dataset import load_class_names, load_split, load_standardization
from stages.prepare import compute_standardization, split_dev

REPOSITORY = Path(__file__).resolve().parent.parent


def random_images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)


def test_split_is_stratified_seeded_and_disjoint(tiny_archive: Path) -> None:
    dev = load_cifar_archive(tiny_archive).dev
    train, validation = split_dev(dev, val_fraction=0.2, seed=42)
    assert (len(train.labels), len(validation.labels)) == (160, 40)
    assert np.bincount(validation.labels).tolist() == [4] * 10
    again_train, _ = split_dev(dev, val_fraction=0.2, seed=42)
    np.testing.assert_array_equal(train.images, again_train.images)
    other_train, _ = split_dev(dev, val_fraction=0.2, seed=7)
    assert not np.array_equal(train.labels, other_train.labels)
    # Every dev image lands in exactly one split.
    rows = {row.tobytes() for row in dev.images}
    assert rows == {row.tobytes() for row in np.concatenate([train.images, validation.images])}


@settings(max_examples=15, deadline=None)
@given(images=arrays(np.uint8, st.tuples(st.integers(2, 40), st.just(FEATURES))))
def test_per_pixel_statistics_match_numpy_float64(images: np.ndarray) -> None:
    statistics = compute_standardization(images, "per_pixel")
    reference = images.astype(np.float64)
    np.testing.assert_allclose(statistics.mean, reference.mean(axis=0), rtol=1e-6)
    std = reference.std(axis=0)
    expected_scale = np.where(std < 1e-3, 1.0, std)
    np.testing.assert_allclose(statistics.scale, expected_scale, rtol=1e-5)


def test_per_channel_statistics_match_numpy_float64() -> None:
    images = random_images(50)
    statistics = compute_standardization(images, "per_channel")
    by_channel = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(statistics.mean[:3], by_channel.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(statistics.scale[:3], by_channel.std(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(statistics.mean, np.tile(statistics.mean[:3], 1024))


def test_unit_scaling_is_the_assignments_divide_by_255() -> None:
    images = random_images(4)
    standardized = compute_standardization(images, "unit").transform(images)
    np.testing.assert_array_equal(standardized, images.astype(np.float32) / np.float32(255.0))


def test_standardized_train_split_has_zero_mean_unit_variance() -> None:
    images = random_images(300)
    standardized = compute_standardization(images, "per_pixel").transform(images)
    assert standardized.dtype == np.float32
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=0), 1.0, atol=1e-4)


def test_constant_pixels_get_unit_scale() -> None:
    images = np.full((10, FEATURES), 7, np.uint8)
    statistics = compute_standardization(images, "per_pixel")
    np.testing.assert_array_equal(statistics.scale, 1.0)
    assert np.isfinite(statistics.transform(images)).all()


def test_unknown_scaling_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown scaling 'minmax'"):
        compute_standardization(random_images(2), "minmax")


def test_split_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Split(np.zeros((2, FEATURES), np.float32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="labels of shape"):
        Split(np.zeros((2, FEATURES), np.uint8), np.zeros(3, np.uint8))


def run_prepare(workdir: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--archive", str(archive),
         "--output", "data/prepared", "--report", "reports/data.json"],
        cwd=workdir, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(REPOSITORY / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_main_writes_compact_outputs_and_report(workdir: Path, tiny_archive: Path) -> None:
    result = run_prepare(workdir, tiny_archive)
    assert result.returncode == 0, result.stderr
    prepared = workdir / "data" / "prepared"
    train = load_split(prepared, "train")
    assert train.images.dtype == np.uint8
    assert train.images.shape == (160, FEATURES)
    assert load_split(prepared, "test").images.shape == (40, FEATURES)
    assert load_standardization(prepared).mean.dtype == np.float32
    assert load_class_names(prepared)[0] == "airplane"
    report = json.loads((workdir / "reports" / "data.json").read_text())
    assert report["archive_md5"] == file_md5(tiny_archive)
    assert report["shapes"]["x_dev"] == "(200, 32, 32, 3)"
    assert report["shapes"]["x_train"] == "(160, 3072)"
    assert report["shapes"]["y_val"] == "(40, 1)"
    assert report["class_counts"]["validation"]["truck"] == 4
    assert [path.name for path in workdir.rglob(".*tmp*")] == []


def test_main_rejects_bad_archive_in_one_line_and_writes_nothing(workdir: Path) -> None:
    corrupt = workdir / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    result = run_prepare(workdir, corrupt)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "corrupt or truncated" in result.stderr
    assert not (workdir / "data").exists()
    assert not (workdir / "reports").exists()


def test_main_rejects_bad_params_before_reading_the_archive(workdir: Path) -> None:
    params = workdir / "params.yaml"
    params.write_text(params.read_text().replace("val_fraction: 0.2", "val_fraction: 1.5"))
    result = run_prepare(workdir, workdir / "does-not-exist.tar.gz")
    assert result.returncode == 1
    assert (
        result.stderr
        == "error: params.yaml: prepare.val_fraction = 1.5: Input should be less than 1\n"
    )
    assert not (workdir / "data").exists()
