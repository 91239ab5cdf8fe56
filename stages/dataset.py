"""The prepared-data folder that the prepare stage writes and later stages read.

Everything stays compact: images are uint8 on disk and in memory. The model's inputs
are uint8 too: the images themselves, or with ZCA whitening their whitened values
quantized to uint8 codes. A :class:`Standardization` maps inputs to the model's float32
features (the model applies it, batch by batch), so no float copy of a dataset exists.

Layout of the folder: ``{split}_images.npy`` and ``{split}_labels.npy`` per split,
``{split}_codes.npy`` with whitening, ``preprocessing.json`` (the scaling mode) with
``whitening.npz`` for ZCA, ``standardization.npz`` and ``classes.json``. The model folder
carries the same preprocessing record (see :class:`Preprocessing`).
"""

from __future__ import annotations

import json
import math
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from stages.cifar import FEATURES, Split
from stages.cli import MAX_JSON_BYTES, read_small_file, upstream_error

SplitName = Literal["train", "validation", "test"]
# prepare.scaling: how images become the model's inputs (stages/prepare.py fits them).
SCALINGS = ("unit", "per_channel", "per_pixel", "zca")
STAGE = "prepare"
CLASSES_FILE = "classes.json"
PREPROCESSING_FILE = "preprocessing.json"
_STANDARDIZATION_FILE = "standardization.npz"
WHITENING_FILE = "whitening.npz"
# Whitened values map to codes 0-255 over +-4 standard deviations: about 0.15 % of the
# values of real images fall outside and are clipped; the rounding error is 1/64 std.
CODE_RANGE_STDS = 4.0
_CODE_CENTRE = 127.5
# Rows per float32 chunk when whitening: 12 MB, so the elementwise work stays in cache.
_CHUNK_ROWS = 1024
# The .npz files hold a few arrays, the largest the whitening's at most 3072 x 3072
# float32 components (36 MiB).
_MAX_NPZ_ARRAYS = 8
_MAX_NPZ_ARRAY_BYTES = 64 << 20


@dataclass(frozen=True)
class Standardization:
    """Per-feature float32 ``mean`` and ``scale``: features = (inputs - mean) / scale."""

    mean: np.ndarray  # (3072,) float32
    scale: np.ndarray  # (3072,) float32

    def __post_init__(self) -> None:
        for name in ("mean", "scale"):
            value = getattr(self, name)
            if value.dtype != np.float32 or value.shape != (FEATURES,):
                raise ValueError(
                    f"{name} must be float32 of shape ({FEATURES},), got {value.dtype}{value.shape}"
                )
        if not np.all(self.scale > 0):
            raise ValueError("scale must be positive everywhere")

    def transform(self, inputs: np.ndarray) -> np.ndarray:
        """Standardize uint8 inputs with numpy, as float32 (the model does it in training)."""
        return (inputs.astype(np.float32) - self.mean) / self.scale


CODES_STANDARDIZATION = Standardization(
    np.full(FEATURES, _CODE_CENTRE, np.float32),
    np.full(FEATURES, _CODE_CENTRE / CODE_RANGE_STDS, np.float32),
)


@dataclass(frozen=True)
class Whitening:
    """ZCA whitening fitted on the train split, kept as its leading principal components.

    With ``x`` = (pixels - ``mean``) / 255 and the covariance's eigenpairs (lambda, u),
    ZCA is the sum over all components of (lambda + epsilon)^-1/2 u u^T x. Components
    with lambda far below epsilon get (nearly) epsilon^-1/2, so ZCA is that times x plus
    a correction ``gains`` (= (lambda + epsilon)^-1/2 - epsilon^-1/2) along the leading
    ``components`` only: a fraction of the cost of the full 3072 x 3072 product.
    ``std`` is the standard deviation of the train split's whitened values, which
    :meth:`encode` maps to uint8 codes (see CODES_STANDARDIZATION).
    """

    mean: np.ndarray  # (3072,) float32, in pixel values 0-255
    components: np.ndarray  # (k, 3072) float32, orthonormal rows
    gains: np.ndarray  # (k,) float32
    epsilon: float
    std: float

    def __post_init__(self) -> None:
        arrays = (self.mean, self.components, self.gains)
        width = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if any(array.dtype != np.float32 for array in arrays) or (
            self.gains.ndim != 1 or self.components.shape != (len(self.gains), width)
        ):
            shapes = ", ".join(f"{array.dtype}{array.shape}" for array in arrays)
            raise ValueError(
                f"mean, components and gains must be float32 of shapes (d,), (k, d) and (k,), "
                f"got {shapes}"
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
    """How images become the model's inputs, as the prepare stage fitted it.

    ``scaling`` is prepare.scaling. With "zca", ``whitening`` turns images into the
    uint8 codes the model reads; otherwise the model reads the images themselves (and
    standardizes them inside, as it does the codes). It is written as data beside the
    prepared splits and in the model folder, and read from there: no stage infers it
    from which files exist.
    """

    scaling: str
    whitening: Whitening | None = None

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling {self.scaling!r} is not one of {', '.join(SCALINGS)}")
        if (self.scaling == "zca") != (self.whitening is not None):
            raise ValueError(
                f"scaling {self.scaling!r} with whitening {self.whitening is not None}"
            )

    def model_inputs(self, images: np.ndarray) -> np.ndarray:
        """Return the model's uint8 inputs for uint8 images: their codes, or the images."""
        return self.whitening.encode(images) if self.whitening is not None else images


def write_preprocessing(directory: Path, preprocessing: Preprocessing) -> None:
    """Write the scaling mode (JSON) and, for ZCA, the whitening into ``directory``."""
    record = {"scaling": preprocessing.scaling}
    (directory / PREPROCESSING_FILE).write_text(json.dumps(record) + "\n")
    if preprocessing.whitening is not None:
        write_whitening(directory / WHITENING_FILE, preprocessing.whitening)


def read_preprocessing(directory: Path, stage: str | None = STAGE) -> Preprocessing:
    """Read what :func:`write_preprocessing` wrote; errors name ``stage`` to rerun."""
    path = directory / PREPROCESSING_FILE
    try:
        record = json.loads(read_small_file(path, MAX_JSON_BYTES, stage))
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, too deeply nested
        raise upstream_error(path, stage, f"not valid JSON ({error})") from None
    scaling = record.get("scaling") if isinstance(record, dict) else None
    if scaling not in SCALINGS:
        raise upstream_error(
            path, stage, f"scaling {scaling!r} is not one of {', '.join(SCALINGS)}"
        )
    whitening = read_whitening(directory / WHITENING_FILE, stage) if scaling == "zca" else None
    return Preprocessing(scaling, whitening)


def load_array(path: Path, stage: str) -> np.ndarray:
    """Load a ``.npy`` array that ``stage`` writes (never a pickle)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise upstream_error(path, stage) from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise upstream_error(path, stage, f"unreadable or truncated ({error})") from None


def _split_files(directory: Path, split: SplitName) -> tuple[Path, Path, Path]:
    return tuple(directory / f"{split}_{kind}.npy" for kind in ("images", "labels", "codes"))


def save_prepared(
    directory: Path,
    splits: dict[SplitName, Split],
    preprocessing: Preprocessing,
    standardization: Standardization,
    class_names: tuple[str, ...],
) -> None:
    """Write every split, the input scaling and the class names into ``directory``."""
    directory.mkdir()
    for split_name, split in splits.items():
        images_file, labels_file, codes_file = _split_files(directory, split_name)
        np.save(images_file, split.images)
        np.save(labels_file, split.labels)
        if preprocessing.whitening is not None:
            np.save(codes_file, preprocessing.whitening.encode(split.images))
    np.savez(
        directory / _STANDARDIZATION_FILE, mean=standardization.mean, scale=standardization.scale
    )
    write_preprocessing(directory, preprocessing)
    write_class_names(directory, class_names)


def write_whitening(path: Path, whitening: Whitening) -> None:
    """Save the whitening as plain arrays (an .npz, read back without pickle)."""
    np.savez(
        path,
        mean=whitening.mean,
        components=whitening.components,
        gains=whitening.gains,
        epsilon=whitening.epsilon,
        std=whitening.std,
    )


def read_whitening(path: Path, stage: str | None = STAGE) -> Whitening:
    """Load a whitening saved by :func:`write_whitening`; errors name ``stage`` to rerun."""
    arrays = _load_npz(path, stage)
    try:
        return Whitening(
            arrays["mean"],
            arrays["components"],
            arrays["gains"],
            float(arrays["epsilon"]),
            float(arrays["std"]),
        )
    except KeyError as error:
        raise upstream_error(path, stage, f"not a whitening ({error} missing)") from None
    except (ValueError, TypeError) as error:
        raise upstream_error(path, stage, f"not a whitening ({error})") from None


def _read_npz_arrays(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    names = archive.namelist()
    if len(names) > _MAX_NPZ_ARRAYS:
        raise ValueError(f"{len(names)} arrays, more than the {_MAX_NPZ_ARRAYS} expected")
    return {name.removesuffix(".npy"): _read_npy(archive, name) for name in names}


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """Read one array of an .npz once its header shows a plain array of a bounded size."""
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{name}: .npy format version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize > _MAX_NPZ_ARRAY_BYTES:
        raise ValueError(f"{name}: an array of shape {shape} and type {dtype}, not a plain one")
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _load_npz(path: Path, stage: str | None = STAGE) -> dict[str, np.ndarray]:
    """Load an .npz of a few plain arrays, each checked in size before it is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_npz_arrays(archive)
    except FileNotFoundError:
        raise upstream_error(path, stage) from None
    # zipfile refuses what it cannot read with NotImplementedError, numpy some damaged
    # headers with tokenize's error.
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        NotImplementedError,
        tokenize.TokenError,
    ) as error:
        raise upstream_error(path, stage, f"unreadable or truncated ({error})") from None


def load_split(directory: Path, split: SplitName) -> Split:
    """Load one split's uint8 images and labels."""
    images_file, labels_file, _ = _split_files(directory, split)
    return _checked_split(
        images_file, load_array(images_file, STAGE), load_array(labels_file, STAGE)
    )


def load_model_inputs(directory: Path, split: SplitName, preprocessing: Preprocessing) -> Split:
    """Load one split as the model sees it: the whitened codes with ZCA, else the images."""
    images_file, labels_file, codes_file = _split_files(directory, split)
    inputs_file = codes_file if preprocessing.whitening is not None else images_file
    return _checked_split(
        inputs_file, load_array(inputs_file, STAGE), load_array(labels_file, STAGE)
    )


def _checked_split(path: Path, inputs: np.ndarray, labels: np.ndarray) -> Split:
    try:
        return Split(inputs, labels)
    except ValueError as error:
        raise upstream_error(path, STAGE, f"not a prepared split ({error})") from None


def load_standardization(directory: Path) -> Standardization:
    """Load the map from model inputs to features, fitted on the train split."""
    path = directory / _STANDARDIZATION_FILE
    arrays = _load_npz(path)
    try:
        return Standardization(arrays["mean"], arrays["scale"])
    except (KeyError, ValueError) as error:
        raise upstream_error(path, STAGE, f"not a standardization ({error})") from None


def load_class_names(directory: Path, stage: str | None = STAGE) -> tuple[str, ...]:
    """Load the class names, index = label, from a folder that ``stage`` writes."""
    path = directory / CLASSES_FILE
    try:
        names = json.loads(read_small_file(path, MAX_JSON_BYTES, stage))
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, too deeply nested
        raise upstream_error(path, stage, f"not valid JSON ({error})") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise upstream_error(path, stage, "not a list of class names")
    return tuple(names)


def write_class_names(directory: Path, class_names: tuple[str, ...]) -> None:
    """Save the class names, index = label, as a JSON list."""
    (directory / CLASSES_FILE).write_text(json.dumps(list(class_names)) + "\n")
