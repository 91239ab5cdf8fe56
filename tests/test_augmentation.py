"""Random flips and shifts: each output image is its input mirrored and moved, nothing else."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cifar10.archive import FEATURES, IMAGE_SHAPE
from cifar10.augmentation import MeanOverViews, MirroredViews, RandomFlipAndShift


def reference(image: np.ndarray, flip: bool, down: int, right: int, fill: np.ndarray) -> np.ndarray:
    """A flat image mirrored (if ``flip``), then moved down and right; ``fill`` comes in."""
    picture = image.reshape(IMAGE_SHAPE)
    if flip:
        picture = picture[:, ::-1]
    moved = fill.reshape(IMAGE_SHAPE).copy()
    height, width = IMAGE_SHAPE[:2]
    rows = slice(max(down, 0), height + min(down, 0))
    columns = slice(max(right, 0), width + min(right, 0))
    source_rows = slice(max(-down, 0), height - max(down, 0))
    source_columns = slice(max(-right, 0), width - max(right, 0))
    moved[rows, columns] = picture[source_rows, source_columns]
    return moved.reshape(FEATURES)


def candidates(image: np.ndarray, max_shift: int, fill: np.ndarray) -> dict[tuple, np.ndarray]:
    shifts = range(-max_shift, max_shift + 1)
    return {
        (flip, down, right): reference(image, flip, down, right, fill)
        for flip in (False, True)
        for down in shifts
        for right in shifts
    }


@pytest.fixture
def images() -> np.ndarray:
    # Distinct values everywhere, so every placement of an image is recognisable.
    rng = np.random.default_rng(0)
    return rng.permutation(64 * FEATURES).reshape(64, FEATURES).astype(np.float32)


def test_each_image_is_a_flip_and_shift_of_itself(images: np.ndarray) -> None:
    fill = np.full(FEATURES, -1.0, np.float32)
    layer = RandomFlipAndShift(horizontal_flip=True, max_shift=2, fill=fill, seed=3)
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    seen = []
    for image, output in zip(images, augmented, strict=True):
        matches = [
            key
            for key, value in candidates(image, 2, fill).items()
            if np.array_equal(value, output)
        ]
        assert len(matches) == 1, "not a flip and shift of its own input"
        seen.append(matches[0])
    flips = sum(flip for flip, _, _ in seen)
    assert 16 < flips < 48  # about half
    assert len({(down, right) for _, down, right in seen}) > 10  # many shifts drawn


def test_shifted_in_pixels_take_the_fill_value(images: np.ndarray) -> None:
    fill = np.arange(FEATURES, dtype=np.float32) * -1 - 1  # negative: never an image value
    layer = RandomFlipAndShift(horizontal_flip=False, max_shift=3, fill=fill, seed=0)
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    from_fill = augmented < 0
    np.testing.assert_array_equal(
        augmented[from_fill], np.broadcast_to(fill, augmented.shape)[from_fill]
    )
    assert from_fill.any()


def test_flips_only_mirror_without_moving(images: np.ndarray) -> None:
    fill = np.zeros(FEATURES, np.float32)
    layer = RandomFlipAndShift(horizontal_flip=True, max_shift=0, fill=fill, seed=1)
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    for image, output in zip(images, augmented, strict=True):
        assert np.array_equal(output, image) or np.array_equal(
            output, reference(image, True, 0, 0, fill)
        )


def test_inference_and_switched_off_layers_pass_images_through(images: np.ndarray) -> None:
    fill = np.zeros(FEATURES, np.float32)
    layer = RandomFlipAndShift(horizontal_flip=True, max_shift=2, fill=fill, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    off = RandomFlipAndShift(horizontal_flip=False, max_shift=0, fill=fill, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(off(images, training=True)), images)


def test_same_seed_same_draws_and_other_seed_other_draws(images: np.ndarray) -> None:
    fill = np.zeros(FEATURES, np.float32)

    def augment(seed: int) -> np.ndarray:
        layer = RandomFlipAndShift(horizontal_flip=True, max_shift=2, fill=fill, seed=seed)
        return keras.ops.convert_to_numpy(layer(images, training=True))

    np.testing.assert_array_equal(augment(5), augment(5))
    assert not np.array_equal(augment(5), augment(6))


def test_shift_beyond_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="max_shift must be from 0 to 31"):
        RandomFlipAndShift(horizontal_flip=True, max_shift=32, fill=np.zeros(FEATURES))


def test_the_views_at_inference_are_each_image_then_its_mirror_image(images: np.ndarray) -> None:
    views = keras.ops.convert_to_numpy(MirroredViews()(images))
    expected = [reference(image, flip, 0, 0, np.zeros(FEATURES)) for flip in (False, True)
                for image in images]  # fmt: skip
    np.testing.assert_array_equal(views, expected)
    # Their mean folds the rows back, each image with its own mirror image.
    outputs = np.arange(len(views) * 10, dtype=np.float32).reshape(len(views), 10)
    mean = keras.ops.convert_to_numpy(MeanOverViews()(outputs))
    np.testing.assert_allclose(mean, (outputs[: len(images)] + outputs[len(images) :]) / 2)


def test_the_views_pass_a_batch_through_in_training(images: np.ndarray) -> None:
    for layer in (MirroredViews(), MeanOverViews()):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=True)),
                                      images)  # fmt: skip
