"""The prepared-data folder the prepare stage writes and later stages read.

Images stay uint8 on disk and in memory; a :class:`Standardization` turns a batch
into float32 only when it is fed to the model, so no float copy of the dataset exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from stages.cifar import FEATURES, Split
from stages.cli import StageError

SplitName = Literal["train", "validation", "test"]
_CLASSES_FILE = "classes.json"
_MEAN_FILE = "standardization_mean.npy"
_SCALE_FILE = "standardization_scale.npy"

Features = TypeVar("Features")


@dataclass(frozen=True)
class Standardization:
    """Per-feature float32 ``mean`` and ``scale``: standardized = (pixels - mean) / scale."""

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

    def apply(self, pixels: Features) -> Features:
        """Standardize float32 pixels: a numpy array or a TensorFlow tensor alike."""
        return (pixels - self.mean) / self.scale  # type: ignore[operator]

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Standardize a (small) batch of uint8 images with numpy, as float32."""
        return self.apply(images.astype(np.float32))


def _split_files(directory: Path, split: SplitName) -> tuple[Path, Path]:
    return directory / f"{split}_images.npy", directory / f"{split}_labels.npy"


def save_prepared(
    directory: Path,
    splits: dict[SplitName, Split],
    standardization: Standardization,
    class_names: tuple[str, ...],
) -> None:
    """Write every split, the standardization and the class names into ``directory``."""
    for split_name, split in splits.items():
        images_file, labels_file = _split_files(directory, split_name)
        np.save(images_file, split.images)
        np.save(labels_file, split.labels)
    np.save(directory / _MEAN_FILE, standardization.mean)
    np.save(directory / _SCALE_FILE, standardization.scale)
    (directory / _CLASSES_FILE).write_text(json.dumps(list(class_names)) + "\n")


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `dvc repro prepare` first") from None


def load_split(directory: Path, split: SplitName) -> Split:
    """Load one split's uint8 images and labels."""
    images_file, labels_file = _split_files(directory, split)
    return Split(_load(images_file), _load(labels_file))


def load_standardization(directory: Path) -> Standardization:
    """Load the statistics computed on the train split."""
    return Standardization(_load(directory / _MEAN_FILE), _load(directory / _SCALE_FILE))


def load_class_names(directory: Path) -> tuple[str, ...]:
    """Load the class names, index = label."""
    path = directory / _CLASSES_FILE
    try:
        return tuple(json.loads(path.read_text()))
    except FileNotFoundError:
        raise StageError(f"{path}: missing; run `dvc repro prepare` first") from None
