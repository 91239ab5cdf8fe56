"""Every scaling mode: fitted on train images, applied, saved and loaded; ZCA against numpy's.

The unit tests fit each mode once on the tiny archive's train split (ZCA, which takes a
second or more on 3072 features, is the prepared fixture's); the grid of ZCA settings,
and the property test of the per-pixel statistics, are integration tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from helpers import params_with
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cifar10.archive import FEATURES
from cifar10.errors import InputError, PipelineError
from cifar10.params import PrepareParams, Scaling
from cifar10.prepared import read_preprocessing, read_split
from cifar10.preprocessing import (
    ARRAYS_FILE,
    CODE_RANGE_STDS,
    FITTERS,
    RECORD_FILE,
    Preprocessing,
    Whitening,
    fit_preprocessing,
    fit_whitening,
)

SCALINGS: tuple[str, ...] = get_args(Scaling)


def prepare_params(scaling: str, **changes: object) -> PrepareParams:
    return params_with({"prepare": {"scaling": scaling, **changes}}).prepare


def random_images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)


def smooth_images(rows: int, seed: int = 0) -> np.ndarray:
    """32 x 32 x 3 images with a decaying spectrum like real ones: blurred noise plus grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(128, 50, size=(rows, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
    grain = rng.normal(0, 6, size=(rows, 32, 32, 3))
    return np.clip(coarse + grain, 0, 255).astype(np.uint8).reshape(rows, FEATURES)


@pytest.fixture(scope="module")
def train_images(prepared: Path) -> np.ndarray:
    """The train split of the tiny archive (160 images), as the prepared fixture split it."""
    return read_split(prepared, "train").images


@pytest.fixture(scope="module")
def fitted(prepared: Path, train_images: np.ndarray) -> dict[str, Preprocessing]:
    """Every mode of the schema fitted on the train images.

    ZCA as the prepared fixture fitted it, with the committed ZCA params, on the same
    images: each ZCA fit of 3072 features takes a second or more.
    """
    preprocessings = {
        scaling: fit_preprocessing(train_images, prepare_params(scaling))
        for scaling in SCALINGS
        if scaling != "zca"
    }
    return {**preprocessings, "zca": read_preprocessing(prepared)}


def test_every_scaling_of_the_schema_has_a_fitter() -> None:
    assert set(FITTERS) == set(SCALINGS)


def check_unit(images: np.ndarray, preprocessing: Preprocessing, features: np.ndarray) -> None:
    # The assignment's x / 255, of the images themselves.
    np.testing.assert_array_equal(preprocessing.model_inputs(images), images)
    np.testing.assert_array_equal(features, images.astype(np.float32) / np.float32(255))


def check_per_pixel(images: np.ndarray, preprocessing: Preprocessing, features: np.ndarray) -> None:
    np.testing.assert_array_equal(preprocessing.model_inputs(images), images)
    np.testing.assert_allclose(features.mean(axis=0, dtype=np.float64), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0, dtype=np.float64), 1.0, atol=1e-4)


def check_per_channel(
    images: np.ndarray, preprocessing: Preprocessing, features: np.ndarray
) -> None:
    np.testing.assert_array_equal(preprocessing.model_inputs(images), images)
    by_channel = features.reshape(-1, 3).astype(np.float64)  # height-width-channel rows
    np.testing.assert_allclose(by_channel.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(by_channel.std(axis=0), 1.0, atol=1e-4)
    # One mean and one scale per channel, for every pixel.
    np.testing.assert_array_equal(preprocessing.mean, np.tile(preprocessing.mean[:3], 1024))
    np.testing.assert_array_equal(preprocessing.scale, np.tile(preprocessing.scale[:3], 1024))


def check_zca(images: np.ndarray, preprocessing: Preprocessing, features: np.ndarray) -> None:
    # The features are the whitened values over their spread, to half a code step
    # (1/64 std), clipped at 4 std: mean 0, std 1 over them all.
    assert preprocessing.encodes_images
    standardized = preprocessing.whitening.whiten(images) / preprocessing.whitening.std
    clipped = np.clip(standardized, -CODE_RANGE_STDS, CODE_RANGE_STDS)
    assert np.abs(features - clipped).max() <= CODE_RANGE_STDS / 255 + 1e-5
    assert abs(features.mean(dtype=np.float64)) < 0.01
    assert abs(features.std(dtype=np.float64) - 1) < 0.01


# What each mode's features of its own train images must be: a mode added to the
# schema's Scaling fails here until it has its check.
FEATURE_CHECKS: dict[str, Callable[[np.ndarray, Preprocessing, np.ndarray], None]] = {
    "unit": check_unit,
    "per_pixel": check_per_pixel,
    "per_channel": check_per_channel,
    "zca": check_zca,
}


@pytest.mark.parametrize("scaling", SCALINGS)
def test_every_scaling_gives_the_features_it_promises(
    train_images: np.ndarray, fitted: dict[str, Preprocessing], scaling: str
) -> None:
    assert scaling in FEATURE_CHECKS, f"no check of what {scaling!r} gives"
    preprocessing = fitted[scaling]
    assert preprocessing.scaling == scaling
    inputs = preprocessing.model_inputs(train_images)
    assert inputs.dtype == np.uint8
    assert inputs.shape == train_images.shape
    features = preprocessing.features(inputs)
    assert features.dtype == np.float32
    FEATURE_CHECKS[scaling](train_images, preprocessing, features)


def assert_same_whitening(loaded: Whitening | None, saved: Whitening | None) -> None:
    assert (loaded is None) == (saved is None)
    if saved is not None:
        for name in ("mean", "components", "gains"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
        assert (loaded.epsilon, loaded.std) == (saved.epsilon, saved.std)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_every_scaling_round_trips_through_save_and_load(
    tmp_path: Path, fitted: dict[str, Preprocessing], scaling: str
) -> None:
    saved = fitted[scaling]
    saved.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([ARRAYS_FILE, RECORD_FILE])
    loaded = Preprocessing.load(tmp_path, "prepare")
    assert loaded.scaling == saved.scaling
    np.testing.assert_array_equal(loaded.mean, saved.mean)
    np.testing.assert_array_equal(loaded.scale, saved.scale)
    assert_same_whitening(loaded.whitening, saved.whitening)
    # Applied to images it never saw, as evaluate and predict apply it.
    images = random_images(20, seed=5)
    np.testing.assert_array_equal(loaded.model_inputs(images), saved.model_inputs(images))
    assert loaded.report() == saved.report()


def test_a_missing_or_damaged_record_names_the_file_and_the_stage(
    tmp_path: Path, fitted: dict[str, Preprocessing]
) -> None:
    with pytest.raises(InputError, match=rf"{RECORD_FILE}: missing; run `dvc repro prepare`"):
        Preprocessing.load(tmp_path, "prepare")
    fitted["per_pixel"].save(tmp_path)
    # A record that promises a whitening the arrays do not hold.
    (tmp_path / RECORD_FILE).write_text('{"scaling": "zca", "whitening": {"epsilon": 0.3}}')
    with pytest.raises(
        InputError,
        match=rf"{ARRAYS_FILE}: not a preprocessing record .*'whitening_mean' missing.*"
        "dvc repro train",
    ):
        Preprocessing.load(tmp_path, "train")


def test_an_unknown_scaling_is_refused() -> None:
    with pytest.raises(ValueError, match="scaling 'minmax' is not one of"):
        Preprocessing("minmax", np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32))


def test_per_channel_statistics_match_numpy_float64() -> None:
    images = random_images(50)
    preprocessing = fit_preprocessing(images, prepare_params("per_channel"))
    by_channel = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(preprocessing.mean[:3], by_channel.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(preprocessing.scale[:3], by_channel.std(axis=0), rtol=1e-6)


def test_constant_pixels_get_unit_scale() -> None:
    images = np.full((10, FEATURES), 7, np.uint8)
    preprocessing = fit_preprocessing(images, prepare_params("per_pixel"))
    np.testing.assert_array_equal(preprocessing.scale, 1.0)
    assert np.isfinite(preprocessing.features(images)).all()


@pytest.mark.integration
@settings(max_examples=15, deadline=None)
@given(images=arrays(np.uint8, st.tuples(st.integers(2, 40), st.just(FEATURES))))
def test_per_pixel_statistics_match_numpy_float64(images: np.ndarray) -> None:
    preprocessing = fit_preprocessing(images, prepare_params("per_pixel"))
    reference = images.astype(np.float64)
    np.testing.assert_allclose(preprocessing.mean, reference.mean(axis=0), rtol=1e-6)
    std = reference.std(axis=0)
    np.testing.assert_allclose(preprocessing.scale, np.where(std < 1e-3, 1.0, std), rtol=1e-5)


def exact_train_zca(images: np.ndarray, epsilon: float) -> np.ndarray:
    """The textbook ZCA of the train images, U (Lambda + epsilon)^-1/2 U^T of the centred
    pixels / 255, in float64, by the SVD of the centred pixels (whose span they lie in).
    """
    pixels = images / 255.0
    centred = pixels - pixels.mean(axis=0)
    _, singular_values, vectors = np.linalg.svd(centred, full_matrices=False)
    variances = singular_values**2 / len(pixels)
    return centred @ (vectors.T * (1 / np.sqrt(variances + epsilon))) @ vectors


def error_bound(share: float) -> float:
    """The most a left-out component's whitened value is off, as a share of the exact one.

    It is scaled by epsilon^-1/2 instead of (lambda + epsilon)^-1/2, with lambda below
    share * epsilon: off by (1 + lambda / epsilon)^1/2 - 1 of its exact value.
    """
    return np.sqrt(1 + share) - 1


def relative_rms_error(whitened: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sqrt(np.mean((whitened - expected) ** 2) / np.mean(expected**2)))


def test_whitening_matches_the_exact_zca(
    train_images: np.ndarray, fitted: dict[str, Preprocessing]
) -> None:
    whitening = fitted["zca"].whitening
    share = prepare_params("zca").zca_component_share  # as the prepared fixture fitted it
    assert 0 < len(whitening.gains) < FEATURES
    expected = exact_train_zca(train_images, whitening.epsilon)
    assert relative_rms_error(whitening.whiten(train_images), expected) <= error_bound(share)


def test_whitened_spread_is_that_of_the_whitened_train_images(
    train_images: np.ndarray, fitted: dict[str, Preprocessing]
) -> None:
    whitening = fitted["zca"].whitening
    np.testing.assert_allclose(whitening.std, whitening.whiten(train_images).std(), rtol=1e-4)


def test_codes_round_trip_to_standardized_whitened_values(
    fitted: dict[str, Preprocessing],
) -> None:
    preprocessing = fitted["zca"]
    whitening = preprocessing.whitening
    # Images the whitening was not fitted on: some values fall outside +-4 std.
    images = random_images(200, seed=2)
    codes = preprocessing.model_inputs(images)
    assert codes.dtype == np.uint8
    standardized = whitening.whiten(images) / whitening.std
    decoded = preprocessing.features(codes)
    inside = np.abs(standardized) < CODE_RANGE_STDS
    # Rounding error: half a code step, 1/64 of a standard deviation.
    assert np.max(np.abs(decoded - standardized)[inside]) <= CODE_RANGE_STDS / 255 + 1e-5
    np.testing.assert_array_equal(codes[standardized > CODE_RANGE_STDS + 0.01], 255)
    np.testing.assert_array_equal(codes[standardized < -CODE_RANGE_STDS - 0.01], 0)


def test_whitening_needs_a_positive_epsilon() -> None:
    with pytest.raises(ValueError, match="epsilon must be positive"):
        fit_whitening(random_images(10), 0.0, 0.2)


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_whitening_needs_a_component_share_in_0_1(share: float) -> None:
    with pytest.raises(ValueError, match="component_share must be in"):
        fit_whitening(random_images(10), 0.3, share)


def test_identical_images_cannot_be_whitened() -> None:
    with pytest.raises(PipelineError, match="the train split's images are all the same"):
        fit_whitening(np.full((10, FEATURES), 9, np.uint8), 0.3, 0.2)


# The integration tests' ZCA settings, each fitted once; their oracle is computed once.
@functools.cache
def grid_images() -> tuple[np.ndarray, np.ndarray]:
    """The train images of the grid (more than the tiny archive's), and others."""
    return smooth_images(1000, seed=4), smooth_images(200, seed=5)


@functools.cache
def grid_fit(epsilon: float, share: float) -> Whitening:
    return fit_whitening(grid_images()[0], epsilon, share)


@functools.cache
def grid_eigenbasis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid's train mean, and the eigenpairs of the covariance of their pixels / 255
    that are not 0 (numpy, float64), strongest first: by the SVD of the centred pixels.
    """
    pixels = grid_images()[0] / 255.0
    mean = pixels.mean(axis=0)
    _, singular_values, vectors = np.linalg.svd(pixels - mean, full_matrices=False)
    return mean, singular_values**2 / len(pixels), vectors.T


@functools.cache
def exact_zca(epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """The textbook ZCA, U (Lambda + epsilon)^-1/2 U^T of the centred pixels / 255, of the
    grid's images: along the eigenvectors of eigenvalues above 0, and epsilon^-1/2 times
    the rest (eigenvalue 0).
    """
    mean, variances, vectors = grid_eigenbasis()
    whitened = []
    for images in grid_images():
        centred = images / 255.0 - mean
        projected = centred @ vectors
        rest = centred - projected @ vectors.T
        whitened.append(
            (projected / np.sqrt(variances + epsilon)) @ vectors.T + rest / np.sqrt(epsilon)
        )
    return tuple(whitened)


@pytest.mark.integration
@pytest.mark.parametrize(("epsilon", "share"), [(0.01, 0.05), (0.3, 0.2), (0.01, 1.0)])
def test_whitening_matches_the_exact_zca_on_train_and_other_images(
    epsilon: float, share: float
) -> None:
    whitening = grid_fit(epsilon, share)
    train_images = grid_images()[0]
    # The weak components were left out: fewer than the 999 of the train images that vary.
    assert 0 < len(whitening.gains) < len(train_images) - 1
    for images, expected in zip(grid_images(), exact_zca(epsilon), strict=True):
        assert relative_rms_error(whitening.whiten(images), expected) <= error_bound(share)
    np.testing.assert_allclose(whitening.std, whitening.whiten(train_images).std(), rtol=1e-4)


@pytest.mark.integration
def test_a_larger_component_share_computes_fewer_components() -> None:
    counts = [len(grid_fit(0.01, share).gains) for share in (0.05, 1.0)]
    assert counts[0] > counts[1]


@pytest.mark.integration
def test_whitening_decorrelates_the_strong_components() -> None:
    epsilon = 0.01
    _, variances, vectors = grid_eigenbasis()
    whitened = grid_fit(epsilon, 0.05).whiten(grid_images()[0]).astype(np.float64)
    # The whitened train images along the covariance's 10 strongest eigenvectors: ZCA
    # makes them uncorrelated, of variance lambda / (lambda + epsilon).
    strong = whitened @ vectors[:, :10]
    covariance = strong.T @ strong / len(strong)
    strongest = variances[:10]
    np.testing.assert_allclose(
        covariance, np.diag(strongest / (strongest + epsilon)), rtol=0, atol=1e-4
    )
