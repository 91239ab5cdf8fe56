"""The prepare stage: split, standardization and ZCA whitening, report, and its command line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import prepare_into, run_stage, write_params
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stages.cifar import FEATURES, TEST_BATCH, TRAIN_BATCHES, Split, load_cifar_archive
from stages.cli import StageError
from stages.dataset import (
    CODE_RANGE_STDS,
    CODES_STANDARDIZATION,
    Preprocessing,
    load_class_names,
    load_model_inputs,
    load_split,
    load_standardization,
    read_preprocessing,
)
from stages.prepare import check_splittable, compute_standardization, fit_whitening, split_dev
from tools.synthetic_archive import synthetic_members, write_archive


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


def smooth_images(rows: int, seed: int = 0, side: int = 8) -> np.ndarray:
    """Small flat images with a decaying spectrum like real ones: blurred noise plus grain.

    Whitening works at any width; 8 x 8 x 3 keeps the exact eigendecompositions quick.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.normal(128, 50, size=(rows, side // 4, side // 4, 3))
    coarse = coarse.repeat(4, axis=1).repeat(4, axis=2)
    grain = rng.normal(0, 6, size=(rows, side, side, 3))
    return np.clip(coarse + grain, 0, 255).astype(np.uint8).reshape(rows, -1)


def exact_zca(images: np.ndarray, epsilon: float) -> np.ndarray:
    """The textbook ZCA in float64: U (Lambda + epsilon)^-1/2 U^T of the centred pixels / 255."""
    pixels = images / 255.0
    centred = pixels - pixels.mean(axis=0)
    variances, vectors = np.linalg.eigh(centred.T @ centred / len(pixels))
    return centred @ (vectors * (1 / np.sqrt(variances + epsilon))) @ vectors.T


@pytest.mark.parametrize("epsilon", [0.01, 0.3])
@pytest.mark.parametrize("share", [0.05, 0.2, 1.0])
def test_whitening_matches_the_exact_zca(epsilon: float, share: float) -> None:
    images = smooth_images(1500)
    whitening = fit_whitening(images, epsilon, share)
    assert 0 < len(whitening.gains) < images.shape[1]  # the weak components were left out
    expected = exact_zca(images, epsilon)
    error = whitening.whiten(images) - expected
    # Each left-out component is off by at most this share of its exact value.
    bound = 1 - (1 + share) ** -0.5
    assert np.sqrt(np.mean(error**2)) <= bound * np.sqrt(np.mean(expected**2))


def test_a_larger_component_share_computes_fewer_components() -> None:
    images = smooth_images(1500)
    counts = [len(fit_whitening(images, 0.01, share).gains) for share in (0.05, 0.2, 1.0)]
    assert counts[0] >= counts[1] >= counts[2]
    assert counts[0] > counts[2]


def test_whitening_decorrelates_the_strong_components() -> None:
    images = smooth_images(2000, seed=1)
    whitened = fit_whitening(images, 1e-4, 0.05).whiten(images).astype(np.float64)
    covariance = whitened.T @ whitened / len(whitened)
    strongest = np.linalg.eigvalsh(covariance)[-10:]
    # ZCA gives eigenvalues lambda / (lambda + epsilon): 1 where lambda >> epsilon.
    np.testing.assert_allclose(strongest, 1.0, atol=0.02)


@pytest.mark.parametrize("epsilon", [0.01, 0.3])
def test_whitened_spread_is_that_of_the_whitened_train_images(epsilon: float) -> None:
    images = smooth_images(1500, seed=3)
    whitening = fit_whitening(images, epsilon, 0.2)
    np.testing.assert_allclose(whitening.std, whitening.whiten(images).std(), rtol=1e-4)


def test_codes_round_trip_to_standardized_whitened_values() -> None:
    images = smooth_images(500, seed=2)
    whitening = fit_whitening(images, 0.3, 0.2)
    codes = whitening.encode(images)
    assert codes.dtype == np.uint8
    standardized = whitening.whiten(images) / whitening.std
    # Every feature decodes alike: the images here are narrower than CIFAR's 3072 values.
    centre, scale = CODES_STANDARDIZATION.mean[0], CODES_STANDARDIZATION.scale[0]
    decoded = (codes - centre) / scale
    inside = np.abs(standardized) < CODE_RANGE_STDS
    # Rounding error: half a code step, 1/64 of a standard deviation.
    assert np.max(np.abs(decoded - standardized)[inside]) <= CODE_RANGE_STDS / 255 + 1e-5
    np.testing.assert_array_equal(codes[standardized > CODE_RANGE_STDS + 0.01], 255)
    assert 0.9 < decoded.std() < 1.1


def test_whitening_needs_a_positive_epsilon() -> None:
    with pytest.raises(ValueError, match="epsilon must be positive"):
        fit_whitening(smooth_images(10), 0.0, 0.2)


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_whitening_needs_a_component_share_in_0_1(share: float) -> None:
    with pytest.raises(ValueError, match="component_share must be in"):
        fit_whitening(smooth_images(10), 0.3, share)


def run_prepare(workdir: Path, archive: Path) -> object:
    return run_stage(
        "prepare",
        ["--archive", str(archive), "--output", "data/prepared", "--report", "reports/data.json"],
        workdir,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_params(tmp_path)


def test_main_writes_compact_outputs_and_report(prepared: Path, tiny_archive: Path) -> None:
    train = load_split(prepared, "train")
    assert train.images.dtype == np.uint8
    assert train.images.shape == (160, FEATURES)
    assert load_split(prepared, "test").images.shape == (40, FEATURES)
    # With ZCA (the committed default) the model reads whitened uint8 codes.
    preprocessing = read_preprocessing(prepared)
    codes = load_model_inputs(prepared, "train", preprocessing)
    assert codes.images.dtype == np.uint8
    assert not np.array_equal(codes.images, train.images)
    np.testing.assert_array_equal(codes.labels, train.labels)
    assert preprocessing.scaling == "zca"
    assert preprocessing.whitening is not None
    np.testing.assert_array_equal(load_standardization(prepared).scale, CODES_STANDARDIZATION.scale)
    assert load_class_names(prepared)[0] == "airplane"
    report = json.loads((prepared.parent.parent / "reports" / "data.json").read_text())
    assert report["shapes"]["x_dev"] == "(200, 32, 32, 3)"
    assert report["shapes"]["x_train"] == "(160, 3072)"
    assert report["shapes"]["y_val"] == "(40, 1)"
    assert report["class_counts"]["validation"]["truck"] == 4
    assert report["zca"]["epsilon"] == 0.3
    assert [path.name for path in prepared.parent.rglob(".*tmp*")] == []


def test_without_whitening_the_model_reads_the_images(tmp_path: Path, tiny_archive: Path) -> None:
    prepared = prepare_into(tmp_path, tiny_archive, {"prepare": {"scaling": "per_pixel"}})
    preprocessing = read_preprocessing(prepared)
    assert preprocessing == Preprocessing("per_pixel")
    assert not list(prepared.glob("*_codes.npy"))
    inputs = load_model_inputs(prepared, "validation", preprocessing)
    images = load_split(prepared, "validation")
    np.testing.assert_array_equal(inputs.images, images.images)
    assert load_standardization(prepared).scale.min() > 1


def test_main_rejects_bad_archive_in_one_line_and_writes_nothing(workdir: Path) -> None:
    corrupt = workdir / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    result = run_prepare(workdir, corrupt)
    assert result.returncode == 1
    # What it was doing, then one line for the fault.
    assert result.stderr.splitlines() == [
        f"stages.prepare: reading {corrupt}",
        f"error: {corrupt}: corrupt or truncated gzip data (Unknown compression method)",
    ]
    assert not (workdir / "data").exists()
    assert not (workdir / "reports").exists()


def test_main_rejects_bad_params_before_reading_the_archive(workdir: Path) -> None:
    params = workdir / "params.yaml"
    params.write_text(params.read_text().replace("val_fraction: 0.2", "val_fraction: 1.5"))
    result = run_prepare(workdir, workdir / "does-not-exist.tar.gz")
    assert result.returncode == 1
    assert result.stderr == (
        "error: params.yaml: prepare.val_fraction = 1.5: "
        "Input should be less than or equal to 0.5\n"
    )
    assert not (workdir / "data").exists()


def test_a_class_with_one_image_cannot_be_split_and_is_named() -> None:
    labels = np.repeat(np.arange(10), 5)
    labels[labels == 3] = 4
    labels[0] = 3  # one cat
    with pytest.raises(StageError) as caught:
        check_splittable(labels, 0.2, "archive.tar.gz")
    assert str(caught.value) == (
        "archive.tar.gz: 1 development image of class 'cat'; a stratified split into train "
        "and validation needs 2 or more of each class"
    )


def test_a_validation_share_too_small_for_every_class_is_refused() -> None:
    # scikit-learn's own error for this is a traceback-worthy ValueError.
    with pytest.raises(StageError) as caught:
        check_splittable(np.arange(200) % 10, 0.001, "archive.tar.gz")
    assert str(caught.value) == (
        "prepare.val_fraction = 0.001: 1 of the 200 development images for validation, but a "
        "stratified split of 10 classes needs 10 to 190"
    )


@pytest.mark.parametrize("val_fraction", [0.05, 0.5])
def test_the_smallest_and_largest_shares_that_pass_split_every_class(val_fraction: float) -> None:
    labels = (np.arange(200) % 10).astype(np.uint8)
    check_splittable(labels, val_fraction, "archive.tar.gz")
    train, validation = split_dev(Split(random_images(200), labels), val_fraction, seed=0)
    assert set(validation.labels) == set(train.labels) == set(range(10))


def test_identical_images_are_refused_for_zca_on_the_command_line(workdir: Path) -> None:
    members = synthetic_members(20)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = pickle.loads(members[name], encoding="bytes")
        batch[b"data"] = np.zeros_like(batch[b"data"])
        members[name] = pickle.dumps(batch, protocol=2)
    zeros = workdir / "zeros.tar.gz"
    write_archive(zeros, members)
    result = run_prepare(workdir, zeros)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: prepare.scaling = 'zca': the train split's images are all the same, so there "
        "is nothing to whiten; check the archive"
    )
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.splitlines()[-1]
    ]
    assert not (workdir / "data").exists()
    assert not (workdir / "reports").exists()
