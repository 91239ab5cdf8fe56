"""The prepared-data folder that the prepare stage writes and later stages read.

Its layout, written and read here: ``{split}_images.npy`` and ``{split}_labels.npy`` for
the train, validation and test splits (uint8), ``{split}_codes.npy`` where the
preprocessing encodes images (ZCA's uint8 codes), and the preprocessing record
(cifar10/preprocessing.py). The dev set is split into train and validation here too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

from cifar10.archive import CLASS_NAMES, FEATURES, IMAGE_SHAPE, CifarArchive, Split
from cifar10.errors import InputError, PipelineError
from cifar10.files import read_array
from cifar10.preprocessing import Preprocessing

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
STAGE = "prepare"  # the stage of dvc.yaml that writes the folder


def check_splittable(labels: np.ndarray, val_fraction: float, source: str) -> None:
    """Refuse a split that a stratified split cannot make, naming the setting or the data.

    Every class present needs 2 images or more, and train and validation each at least
    one image of every class.
    """
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    present = np.flatnonzero(counts)
    single = present[counts[present] == 1]
    if single.size:
        raise PipelineError(
            f"{source}: 1 development image of class {CLASS_NAMES[single[0]]!r}; a stratified "
            "split into train and validation needs 2 or more of each class"
        )
    validation_size = math.ceil(val_fraction * len(labels))
    if not len(present) <= validation_size <= len(labels) - len(present):
        raise PipelineError(
            f"prepare.val_fraction = {val_fraction}: {validation_size} of the {len(labels)} "
            f"development images for validation, but a stratified split of {len(present)} "
            f"classes needs {len(present)} to {len(labels) - len(present)}"
        )


def split_dev(dev: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Split dev into train and validation, stratified by class and seeded."""
    train_index, validation_index = train_test_split(
        np.arange(len(dev.labels)),
        test_size=val_fraction,
        random_state=seed,
        stratify=dev.labels,
    )
    return (
        Split(dev.images[train_index], dev.labels[train_index]),
        Split(dev.images[validation_index], dev.labels[validation_index]),
    )


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Images per class name."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts, strict=True)}


def data_report(
    archive: CifarArchive,
    splits: dict[SplitName, Split],
    preprocessing: Preprocessing,
    val_fraction: float,
) -> dict[str, object]:
    """Describe the data: the shapes the assignment prints, class counts, the preprocessing."""
    dev_size, test_size = len(archive.dev.labels), len(archive.test.labels)
    shapes = {
        "x_dev": (dev_size, *IMAGE_SHAPE),
        "y_dev": (dev_size, 1),
        "x_test": (test_size, *IMAGE_SHAPE),
        "y_test": (test_size, 1),
        "x_dev_flat": (dev_size, FEATURES),
        "x_test_flat": (test_size, FEATURES),
    }
    for name, prefix in (("train", "train"), ("validation", "val")):
        size = len(splits[name].labels)
        shapes[f"x_{prefix}"] = (size, FEATURES)
        shapes[f"y_{prefix}"] = (size, 1)
    return {
        **preprocessing.report(),
        "val_fraction": val_fraction,
        "class_names": list(archive.class_names),
        # Printed as the assignment prints them: "(50000, 32, 32, 3)".
        "shapes": {name: str(shape) for name, shape in shapes.items()},
        "class_counts": {name: class_counts(split.labels) for name, split in splits.items()},
    }


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


def _checked_split(path: Path, inputs: np.ndarray, labels: np.ndarray) -> Split:
    try:
        return Split(inputs, labels)
    except ValueError as error:
        raise InputError(path, f"not a prepared split ({error})", STAGE) from None


def read_split(directory: Path, split: SplitName) -> Split:
    """One split's uint8 images and labels."""
    images_file, labels_file, _ = _files(directory, split)
    return _checked_split(
        images_file, read_array(images_file, STAGE), read_array(labels_file, STAGE)
    )


def read_model_inputs(directory: Path, split: SplitName, preprocessing: Preprocessing) -> Split:
    """One split as the model reads it: the images' codes where there are some, else the images."""
    images_file, labels_file, codes_file = _files(directory, split)
    inputs_file = codes_file if preprocessing.encodes_images else images_file
    return _checked_split(
        inputs_file, read_array(inputs_file, STAGE), read_array(labels_file, STAGE)
    )
