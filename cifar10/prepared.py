"""The prepared-data folder that the prepare stage writes and later stages read.

Its layout, written and read here: ``{split}_images.npy`` and ``{split}_labels.npy`` for
the train, validation and test splits (uint8), ``{split}_codes.npy`` where the
preprocessing encodes images (ZCA's uint8 codes), and the preprocessing record
(cifar10/preprocessing.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from cifar10.archive import FEATURES, MAX_SPLIT_IMAGES, Split, check_labels
from cifar10.errors import InputError
from cifar10.files import read_array
from cifar10.preprocessing import Preprocessing

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
STAGE = "prepare"  # the stage of dvc.yaml that writes the folder


def _files(directory: Path, split: SplitName) -> tuple[Path, Path, Path]:
    return tuple(directory / f"{split}_{kind}.npy" for kind in ("images", "labels", "codes"))


def write_prepared(
    directory: Path, splits: dict[SplitName, Split], preprocessing: Preprocessing
) -> None:
    """Write every split and the preprocessing into the new folder ``directory``."""
    directory.mkdir()
    for name, split in splits.items():
        images_file, labels_file, codes_file = _files(directory, name)
        np.save(images_file, split.images)
        np.save(labels_file, split.labels)
        if preprocessing.encodes_images:
            np.save(codes_file, preprocessing.model_inputs(split.images))
    preprocessing.save(directory)


def read_preprocessing(directory: Path) -> Preprocessing:
    """Read the preprocessing fitted on the folder's train split."""
    return Preprocessing.load(directory, STAGE)


def _checked_split(
    inputs_file: Path, labels_file: Path, inputs: np.ndarray, labels: np.ndarray
) -> Split:
    try:
        check_labels(labels)
    except ValueError as error:
        raise InputError(labels_file, f"not a prepared split's labels ({error})", STAGE) from None
    if len(labels) == 0:
        raise InputError(labels_file, "an empty split: no image to train or score on", STAGE)
    try:
        return Split(inputs, labels)
    except ValueError as error:
        raise InputError(inputs_file, f"not a prepared split ({error})", STAGE) from None


def _read_split(inputs_file: Path, labels_file: Path) -> Split:
    # Refused from their headers: more images than an archive's split holds, or another type.
    inputs = read_array(inputs_file, STAGE, np.uint8, MAX_SPLIT_IMAGES * FEATURES)
    labels = read_array(labels_file, STAGE, np.uint8, MAX_SPLIT_IMAGES)
    return _checked_split(inputs_file, labels_file, inputs, labels)


def read_split(directory: Path, split: SplitName) -> Split:
    """One split's uint8 images and labels."""
    images_file, labels_file, _ = _files(directory, split)
    return _read_split(images_file, labels_file)


def read_model_inputs(directory: Path, split: SplitName, preprocessing: Preprocessing) -> Split:
    """One split as the model reads it: the images' codes where there are some, else the images."""
    images_file, labels_file, codes_file = _files(directory, split)
    inputs_file = codes_file if preprocessing.encodes_images else images_file
    return _read_split(inputs_file, labels_file)
