"""Flips and shifts of flat images as Keras layers: random in training, mirrored at test.

Keras' own ``RandomFlip`` and ``RandomTranslation`` work on (height, width, channels)
images and interpolate, much work for whole-pixel moves. Flips and whole-pixel shifts
are permutations of a flat row's values, so here each image is one gather from its
zero-padded row (and a mask for the columns that a shift brings in from outside).

At test time a model can average its predictions for an image and its mirror image:
``MirroredViews`` before its layers and ``MeanOverViews`` after them. Both pass a batch
through in training, so the model trains as it would without them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cifar10.archive import FEATURES, IMAGE_SHAPE

_HEIGHT, _WIDTH, _CHANNELS = IMAGE_SHAPE
_ROW = _WIDTH * _CHANNELS  # values per row of pixels in a flat height-width-channel image
FLIP_PROBABILITY = 0.5
VIEWS = 2  # an image and its mirror image
# Keras' name for the layers of this module, in model.keras configs.
SERIALIZATION_PACKAGE = "cifar10"


def mirrored_features() -> np.ndarray:
    """Return, for each value of a flat mirrored image, its index in the original."""
    row, column, channel = np.unravel_index(np.arange(FEATURES), IMAGE_SHAPE)
    return ((row * _WIDTH + _WIDTH - 1 - column) * _CHANNELS + channel).astype("int32")


class RandomFlipAndShift(layers.Layer):
    """Mirror a random half of the images and shift each by up to ``max_shift`` pixels.

    Flat (batch, 3072) height-width-channel images in; the same shape out. Pixels that
    a shift brings in take the value ``fill`` (per feature: the training mean, so they
    standardize to 0). Active in training only, like Keras' preprocessing layers.
    """

    def __init__(
        self,
        *,
        horizontal_flip: bool,
        max_shift: int,
        fill: np.ndarray,
        seed: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 <= max_shift < min(_HEIGHT, _WIDTH):
            raise ValueError(
                f"max_shift must be from 0 to {min(_HEIGHT, _WIDTH) - 1}, got {max_shift}"
            )
        self.horizontal_flip = horizontal_flip
        self.max_shift = max_shift
        self.fill = np.asarray(fill, np.float32)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # A flat image padded by max_shift rows and columns of values on each side has
        # index i of the original at i + pad, and a shift by (down, right) moves it by
        # down * _ROW + right * _CHANNELS: one table per flip, and an offset per image.
        self._pad = max_shift * (_ROW + _CHANNELS)
        identity = np.arange(FEATURES, dtype="int32")
        self._sources = np.stack([identity, mirrored_features()]) + self._pad
        row, column, _ = np.unravel_index(identity, IMAGE_SHAPE)
        self._row, self._column = row.astype("int32"), column.astype("int32")

    def call(self, images: object, training: bool = False) -> object:
        """Augment a batch in training; pass it through otherwise."""
        if not training or not (self.horizontal_flip or self.max_shift):
            return images
        batch = ops.shape(images)[0]
        flips = ops.zeros((batch,), "int32")
        if self.horizontal_flip:
            draws = keras.random.uniform((batch,), seed=self.seed_generator)
            flips = ops.cast(draws < FLIP_PROBABILITY, "int32")
        sources = ops.take(self._sources, flips, axis=0)
        if not self.max_shift:
            return ops.take_along_axis(images, sources - self._pad, axis=1)
        shifts = keras.random.randint(
            (2, batch), -self.max_shift, self.max_shift + 1, seed=self.seed_generator
        )
        down, right = shifts[0], shifts[1]
        # A mirrored image's columns run backwards: its source moves the other way.
        sources -= (down * _ROW + (1 - 2 * flips) * right * _CHANNELS)[:, None]
        padded = ops.pad(images, ((0, 0), (self._pad, self._pad)))
        moved = ops.take_along_axis(padded, sources, axis=1)
        # Output pixel (row, column) comes from inside the image, flipped or not, when
        # down <= row < height + down and right <= column < width + right.
        down, right = down[:, None], right[:, None]
        inside = (self._row >= down) & (self._row < _HEIGHT + down)
        inside &= (self._column >= right) & (self._column < _WIDTH + right)
        return ops.where(inside, moved, self.fill)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Augmentation keeps the shape."""
        return input_shape

    def get_config(self) -> dict[str, object]:
        """Everything __init__ needs, for Keras serialization."""
        return {
            **super().get_config(),
            "horizontal_flip": self.horizontal_flip,
            "max_shift": self.max_shift,
            "fill": self.fill.tolist(),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MirroredViews(layers.Layer):
    """At inference, follow a batch of flat images by their mirror images (twice the rows).

    In training it passes the batch through. ``MeanOverViews`` folds the rows back.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._mirrored = mirrored_features()

    def call(self, images: object, training: bool = False) -> object:
        """Return the images, then their mirror images, at inference; in training, the images."""
        if training:
            return images
        return ops.concatenate([images, ops.take(images, self._mirrored, axis=1)], axis=0)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Return the shape at inference: ``VIEWS`` times the rows."""
        rows = input_shape[0]
        return (None if rows is None else VIEWS * rows, *input_shape[1:])


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class MeanOverViews(layers.Layer):
    """At inference, average each image's outputs over the views ``MirroredViews`` made.

    Averaged class probabilities are class probabilities. In training it passes through.
    """

    def call(self, outputs: object, training: bool = False) -> object:
        """Return the mean over views at inference; in training, the outputs."""
        if training:
            return outputs
        return ops.mean(ops.reshape(outputs, (VIEWS, -1, ops.shape(outputs)[-1])), axis=0)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Return the shape at inference: the rows divided by ``VIEWS``."""
        rows = input_shape[0]
        return (None if rows is None else rows // VIEWS, *input_shape[1:])
