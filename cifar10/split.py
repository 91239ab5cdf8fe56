"""Splitting the dev set into train and validation (stratified, seeded), and its report."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from cifar10.archive import CLASS_NAMES, FEATURES, IMAGE_SHAPE, CifarArchive, Split
from cifar10.errors import PipelineError
from cifar10.prepared import SplitName
from cifar10.preprocessing import Preprocessing


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
