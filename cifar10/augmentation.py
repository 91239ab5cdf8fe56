"""Random horizontal flips and translations of flat images, as one Keras layer.

Keras' own ``RandomFlip`` and ``RandomTranslation`` work on (height, width, channels)
images and interpolate, much work for whole-pixel moves. Flips and whole-pixel shifts
are permutations of a flat row's values, so here each image is one gather from its
zero-padded row (and a mask for the columns that a shift brings in from outside).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cifar10.archive import FEATURES, IMAGE_SHAPE

_HEIGHT, _WIDTH, _CHANNELS = IMAGE_SHAPE
_ROW = _WIDTH * _CHANNELS  # values per row of pixels in a flat height-width-channel image
FLIP_PROBABILITY = 0.5


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
        row, column, channel = np.unravel_index(np.arange(FEATURES), IMAGE_SHAPE)
        mirrored = (row * _WIDTH + _WIDTH - 1 - column) * _CHANNELS + channel
        self._sources = np.stack([np.arange(FEATURES), mirrored]).astype("int32") + self._pad
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
