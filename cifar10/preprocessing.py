"""How images become the model's inputs: every scaling mode fitted, applied, saved and loaded.

A mode (``prepare.scaling``) is fitted on the train split's uint8 images and gives a
:class:`Preprocessing`: the uint8 inputs the model reads (the images themselves, or with
ZCA whitening their whitened values quantized to uint8 codes) and the per-feature mean
and scale that the model's first layer standardizes them with, so that no float copy of
a dataset exists. It is saved beside the prepared splits and in the model folder, and
read back from there: nothing infers it from which files exist.

A new mode is a name in the params schema's ``Scaling`` (and its keys, if any) and a
function in :data:`FITTERS` here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg

from cifar10.archive import FEATURES, IMAGE_SHAPE
from cifar10.errors import InputError, PipelineError
from cifar10.files import read_arrays, read_json
from cifar10.params import PrepareParams, Scaling

logger = logging.getLogger(__name__)

RECORD_FILE = "preprocessing.json"
ARRAYS_FILE = "preprocessing.npz"
# Whitened values map to codes 0-255 over +-4 standard deviations: about 0.15 % of the
# values of real images fall outside and are clipped; the rounding error is 1/64 std.
CODE_RANGE_STDS = 4.0
_CODE_CENTRE = 127.5
# Rows per float32 chunk when whitening or summing: 12 MB, so the work stays in cache.
_CHUNK_ROWS = 1024
# Rows per chunk of the covariance's products: few chunks, as each adds a 3072 x 3072 sum.
_PRODUCT_CHUNK_ROWS = 8192
# A pixel that never varies gets scale 1 rather than a division by ~0.
_MIN_STD = 1e-3


@dataclass(frozen=True)
class Whitening:
    """ZCA whitening fitted on the train split, kept as its leading principal components.

    With ``x`` = (pixels - ``mean``) / 255 and the covariance's eigenpairs (lambda, u),
    ZCA is the sum over all components of (lambda + epsilon)^-1/2 u u^T x. Components
    with lambda far below epsilon get (nearly) epsilon^-1/2, so ZCA is that times x plus
    a correction ``gains`` (= (lambda + epsilon)^-1/2 - epsilon^-1/2) along the leading
    ``components`` only: a fraction of the cost of the full 3072 x 3072 product.
    ``std`` is the standard deviation of the train split's whitened values, which
    :meth:`encode` maps to uint8 codes.
    """

    mean: np.ndarray  # (3072,) float32, in pixel values 0-255
    components: np.ndarray  # (k, 3072) float32, orthonormal rows
    gains: np.ndarray  # (k,) float32
    epsilon: float
    std: float

    def __post_init__(self) -> None:
        arrays = (self.mean, self.components, self.gains)
        if any(array.dtype != np.float32 for array in arrays) or (
            self.mean.shape != (FEATURES,)
            or self.gains.ndim != 1
            or self.components.shape != (len(self.gains), FEATURES)
        ):
            shapes = ", ".join(f"{array.dtype}{array.shape}" for array in arrays)
            raise ValueError(
                f"mean, components and gains must be float32 of shapes ({FEATURES},), "
                f"(k, {FEATURES}) and (k,), got {shapes}"
            )
        if not all(np.isfinite(array).all() for array in arrays) or not (
            0 < self.epsilon < math.inf and 0 < self.std < math.inf
        ):
            raise ValueError("values must be finite, epsilon and std positive")

    def _whiten_chunk(self, images: np.ndarray) -> np.ndarray:
        # The 1 / 255 of x folds into the two scale factors.
        centred = images.astype(np.float32)
        centred -= self.mean
        # (rows, k) @ (k, 3072): the correction along the leading components
        whitened = (
            (centred @ self.components.T) * (self.gains / np.float32(255))
        ) @ self.components
        centred *= np.float32(1 / (255 * np.sqrt(self.epsilon)))
        whitened += centred
        return whitened

    def whiten(self, images: np.ndarray) -> np.ndarray:
        """ZCA-whitened float32 values of uint8 images (not divided by ``std``)."""
        return np.concatenate(
            [self._whiten_chunk(images[start : start + _CHUNK_ROWS])
             for start in range(0, len(images), _CHUNK_ROWS)]
        )  # fmt: skip

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Whiten uint8 images and quantize to uint8 codes, +-4 ``std`` over 0-255."""
        codes = np.empty(images.shape, np.uint8)
        for start in range(0, len(images), _CHUNK_ROWS):
            chunk = self._whiten_chunk(images[start : start + _CHUNK_ROWS])
            chunk *= _CODE_CENTRE / (CODE_RANGE_STDS * self.std)
            chunk += _CODE_CENTRE
            np.clip(np.rint(chunk, out=chunk), 0, 255, out=chunk)
            codes[start : start + len(chunk)] = chunk
        return codes


@dataclass(frozen=True)
class Preprocessing:
    """A fitted scaling mode: what the model reads, and how its first layer standardizes it.

    The model's features are (inputs - ``mean``) / ``scale``, its inputs the images
    themselves or, with a ``whitening``, their uint8 codes.
    """

    scaling: Scaling
    mean: np.ndarray  # (3072,) float32
    scale: np.ndarray  # (3072,) float32, positive
    whitening: Whitening | None = None

    def __post_init__(self) -> None:
        if self.scaling not in FITTERS:
            raise ValueError(f"scaling {self.scaling!r} is not one of {', '.join(FITTERS)}")
        for name in ("mean", "scale"):
            value = getattr(self, name)
            if value.dtype != np.float32 or value.shape != (FEATURES,):
                raise ValueError(
                    f"{name} must be float32 of shape ({FEATURES},), got {value.dtype}{value.shape}"
                )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all()) or not np.all(
            self.scale > 0
        ):
            raise ValueError("mean and scale must be finite, scale positive everywhere")

    @property
    def encodes_images(self) -> bool:
        """Whether the model's inputs are codes computed from the images, not the images."""
        return self.whitening is not None

    def model_inputs(self, images: np.ndarray) -> np.ndarray:
        """Return the model's uint8 inputs for uint8 images: their codes, or the images."""
        return self.whitening.encode(images) if self.whitening is not None else images

    def features(self, inputs: np.ndarray) -> np.ndarray:
        """Standardize model inputs with numpy, as float32 (the model's first layer does it)."""
        return (inputs.astype(np.float32) - self.mean) / self.scale

    def report(self) -> dict[str, object]:
        """Describe it for the prepare stage's data report."""
        report: dict[str, object] = {"scaling": self.scaling}
        if self.whitening is not None:
            report["zca"] = {
                "epsilon": self.whitening.epsilon,
                "leading_components": len(self.whitening.gains),
                "whitened_std": self.whitening.std,
            }
        return report

    def save(self, directory: Path) -> None:
        """Write the record (JSON) and the fitted arrays (.npz) into ``directory``."""
        record: dict[str, object] = {"scaling": self.scaling}
        arrays = {"mean": self.mean, "scale": self.scale}
        if self.whitening is not None:
            record["whitening"] = {"epsilon": self.whitening.epsilon, "std": self.whitening.std}
            arrays |= {
                "whitening_mean": self.whitening.mean,
                "components": self.whitening.components,
                "gains": self.whitening.gains,
            }
        (directory / RECORD_FILE).write_text(json.dumps(record) + "\n")
        np.savez(directory / ARRAYS_FILE, **arrays)

    @classmethod
    def load(cls, directory: Path, stage: str | None) -> Preprocessing:
        """Read what :meth:`save` wrote; errors name ``stage`` to run again."""
        record_path, arrays_path = directory / RECORD_FILE, directory / ARRAYS_FILE
        record = read_json(record_path, stage)
        arrays = read_arrays(arrays_path, stage)
        try:
            whitening = None
            if "whitening" in record:
                scalars = record["whitening"]
                whitening = Whitening(
                    arrays["whitening_mean"],
                    arrays["components"],
                    arrays["gains"],
                    float(scalars["epsilon"]),
                    float(scalars["std"]),
                )
            return cls(record["scaling"], arrays["mean"], arrays["scale"], whitening)
        except (KeyError, TypeError, ValueError) as error:
            problem = f"{error} missing" if isinstance(error, KeyError) else str(error)
            raise InputError(
                arrays_path, f"not a preprocessing record with {RECORD_FILE} ({problem})", stage
            ) from None


def _feature_sums(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sum and sum of squares in float64, one small chunk at a time."""
    total = np.zeros(FEATURES)
    total_squares = np.zeros(FEATURES)
    for start in range(0, len(images), _CHUNK_ROWS):
        chunk = images[start : start + _CHUNK_ROWS].astype(np.float32)
        total += chunk.sum(axis=0, dtype=np.float64)
        total_squares += np.square(chunk).sum(axis=0, dtype=np.float64)
    return total, total_squares


def _z_score(total: np.ndarray, total_squares: np.ndarray, count: float) -> tuple[np.ndarray, ...]:
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0.0))
    scale = np.where(std < _MIN_STD, 1.0, std)
    return mean.astype(np.float32), scale.astype(np.float32)


def _fit_unit(images: np.ndarray, params: PrepareParams) -> Preprocessing:  # noqa: ARG001
    """Fit the assignment's ``x / 255`` (nothing to fit)."""
    return Preprocessing(
        "unit", np.zeros(FEATURES, np.float32), np.full(FEATURES, 255.0, np.float32)
    )


def _fit_per_pixel(images: np.ndarray, params: PrepareParams) -> Preprocessing:  # noqa: ARG001
    """Fit a z-score per feature (pixel and channel)."""
    return Preprocessing("per_pixel", *_z_score(*_feature_sums(images), float(len(images))))


def _fit_per_channel(images: np.ndarray, params: PrepareParams) -> Preprocessing:  # noqa: ARG001
    """Fit a z-score per RGB channel; features are height-width-channel interleaved."""
    channels = IMAGE_SHAPE[2]
    total, total_squares = (
        np.tile(sums.reshape(-1, channels).sum(axis=0), FEATURES // channels)
        for sums in _feature_sums(images)
    )
    count = float(len(images)) * (FEATURES // channels)
    return Preprocessing("per_channel", *_z_score(total, total_squares, count))


def fit_whitening(images: np.ndarray, epsilon: float, component_share: float) -> Whitening:
    """Fit ZCA whitening with regularization ``epsilon`` (pixels in [0, 1]) on uint8 images.

    The principal components whose variance exceeds ``component_share * epsilon`` are
    whitened exactly; the rest are scaled by epsilon^-1/2 alone, at most
    sqrt(1 + component_share) - 1 above the exact ZCA on each of them.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not 0 < component_share <= 1:
        raise ValueError(f"component_share must be in (0, 1], got {component_share}")
    # One pass: the sums and the (3072, 3072) sums of products, per chunk in float32
    # (exact enough for chunks this small) and across chunks in float64.
    total = np.zeros(FEATURES)
    products = np.zeros((FEATURES, FEATURES))
    for start in range(0, len(images), _PRODUCT_CHUNK_ROWS):
        chunk = images[start : start + _PRODUCT_CHUNK_ROWS].astype(np.float32)
        total += chunk.sum(axis=0, dtype=np.float64)
        products += chunk.T @ chunk
    mean = total / len(images)
    # Covariance of the pixels in [0, 1].
    covariance = (products / len(images) - np.outer(mean, mean)) / 255**2
    if not np.trace(covariance) > 0:
        # Nothing varies: the whitened values would all be 0, of spread 0.
        raise PipelineError(
            "prepare.scaling = 'zca': the train split's images are all the same, so there "
            "is nothing to whiten; check the archive"
        )
    # Only the components that ZCA scales apart from the rest (see Whitening).
    variances, vectors = scipy.linalg.eigh(
        covariance.astype(np.float32),
        driver="evr",
        subset_by_value=(component_share * epsilon, np.inf),
    )
    leading = variances.astype(np.float64)
    gains = 1 / np.sqrt(leading + epsilon) - 1 / np.sqrt(epsilon)
    # The whitened train split's overall spread, which the uint8 codes cover +-4 times:
    # ZCA scales a component of variance lambda to lambda / (lambda + epsilon) along the
    # leading ones and by 1 / epsilon along the rest, whose variances sum to the trace
    # less the leading ones. The whitened values' mean is 0.
    whitened_variance = (
        np.sum(leading / (leading + epsilon)) + (np.trace(covariance) - leading.sum()) / epsilon
    ) / FEATURES
    return Whitening(
        mean.astype(np.float32),
        np.ascontiguousarray(vectors.T),
        gains.astype(np.float32),
        epsilon,
        std=float(np.sqrt(whitened_variance)),
    )


def _fit_zca(images: np.ndarray, params: PrepareParams) -> Preprocessing:
    """ZCA whitening, fitted on the first ``zca_fit_images``; the model reads its uint8 codes."""
    fitted_on = images[: params.zca_fit_images]
    logger.info("fitting ZCA whitening on %d train images", len(fitted_on))
    whitening = fit_whitening(fitted_on, params.zca_epsilon, params.zca_component_share)
    # The codes' centre and range: standardized, the whitened values / (4 std).
    return Preprocessing(
        "zca",
        np.full(FEATURES, _CODE_CENTRE, np.float32),
        np.full(FEATURES, _CODE_CENTRE / CODE_RANGE_STDS, np.float32),
        whitening,
    )


# How each mode of prepare.scaling is fitted on the train split's uint8 images.
FITTERS: dict[Scaling, Callable[[np.ndarray, PrepareParams], Preprocessing]] = {
    "unit": _fit_unit,
    "per_channel": _fit_per_channel,
    "per_pixel": _fit_per_pixel,
    "zca": _fit_zca,
}


def fit_preprocessing(images: np.ndarray, params: PrepareParams) -> Preprocessing:
    """Fit ``params.scaling`` on the train split's uint8 images."""
    return FITTERS[params.scaling](images, params)
