"""The dev set split into train and validation, stratified and seeded, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with

from cifar10.archive import (
    CLASS_NAMES,
    FEATURES,
    Split,
    load_cifar_archive,
)
from cifar10.errors import PipelineError
from cifar10.prepared import read_preprocessing, read_split
from cifar10.preprocessing import fit_preprocessing
from cifar10.split import check_splittable, data_report, split_dev


def test_split_is_stratified_seeded_and_disjoint(tiny_archive: Path) -> None:
    dev = load_cifar_archive(tiny_archive).dev
    train, validation = split_dev(dev, val_fraction=0.2, seed=42)
    assert (len(train.labels), len(validation.labels)) == (160, 40)
    assert np.bincount(validation.labels).tolist() == [4] * 10
    again_train, _ = split_dev(dev, val_fraction=0.2, seed=42)
    np.testing.assert_array_equal(train.images, again_train.images)
    other_train, _ = split_dev(dev, val_fraction=0.2, seed=7)
    assert not np.array_equal(train.labels, other_train.labels)
    # Every dev image lands in exactly one split, with its own label.
    rows = {(row.tobytes(), label) for row, label in zip(dev.images, dev.labels, strict=True)}
    both = np.concatenate([train.images, validation.images])
    labels = np.concatenate([train.labels, validation.labels])
    assert rows == {(row.tobytes(), label) for row, label in zip(both, labels, strict=True)}
    assert len(rows) == len(dev.labels)


def test_split_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Split(np.zeros((2, FEATURES), np.float32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="labels of shape"):
        Split(np.zeros((2, FEATURES), np.uint8), np.zeros(3, np.uint8))


def test_a_class_with_one_image_cannot_be_split_and_is_named() -> None:
    labels = np.repeat(np.arange(10), 5)
    labels[labels == 3] = 4
    labels[0] = 3  # one cat
    with pytest.raises(PipelineError) as caught:
        check_splittable(labels, 0.2, "archive.tar.gz")
    assert str(caught.value).startswith(
        "archive.tar.gz: 1 development image of class 'cat'; a stratified split"
    )


def test_a_validation_share_too_small_for_every_class_is_refused() -> None:
    # scikit-learn's own error for this is a traceback-worthy ValueError.
    with pytest.raises(PipelineError) as caught:
        check_splittable(np.arange(200) % 10, 0.001, "archive.tar.gz")
    assert str(caught.value) == (
        "prepare.val_fraction = 0.001: 1 of the 200 development images for validation, but a "
        "stratified split of 10 classes needs 10 to 190"
    )


@pytest.mark.parametrize("val_fraction", [0.05, 0.5])
def test_the_smallest_and_largest_shares_that_pass_split_every_class(val_fraction: float) -> None:
    labels = (np.arange(200) % 10).astype(np.uint8)
    check_splittable(labels, val_fraction, "archive.tar.gz")
    images = np.arange(200 * FEATURES, dtype=np.uint32).reshape(200, FEATURES).astype(np.uint8)
    train, validation = split_dev(Split(images, labels), val_fraction, seed=0)
    assert set(validation.labels) == set(train.labels) == set(range(10))


def test_the_data_report_gives_the_assignments_shapes_and_the_class_counts(
    tiny_archive: Path,
) -> None:
    params = params_with({"prepare": {"scaling": "per_channel", "val_fraction": 0.2}}).prepare
    archive = load_cifar_archive(tiny_archive)
    train, validation = split_dev(archive.dev, params.val_fraction, params.seed)
    splits = {"train": train, "validation": validation, "test": archive.test}
    preprocessing = fit_preprocessing(train.images, params)
    report = data_report(archive, splits, preprocessing, params.val_fraction)
    assert report["scaling"] == "per_channel"
    assert report["val_fraction"] == 0.2
    assert report["class_names"] == list(CLASS_NAMES)
    assert report["shapes"] == {
        "x_dev": "(200, 32, 32, 3)",
        "y_dev": "(200, 1)",
        "x_test": "(40, 32, 32, 3)",
        "y_test": "(40, 1)",
        "x_dev_flat": "(200, 3072)",
        "x_test_flat": "(40, 3072)",
        "x_train": "(160, 3072)",
        "y_train": "(160, 1)",
        "x_val": "(40, 3072)",
        "y_val": "(40, 1)",
    }
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=10).tolist()
        assert list(report["class_counts"][name].values()) == counts
    assert report["class_counts"]["validation"]["truck"] == 4
    json.dumps(report)  # as the stage writes it


def test_the_data_report_describes_the_zca_fitted(prepared: Path, tiny_archive: Path) -> None:
    archive = load_cifar_archive(tiny_archive)
    preprocessing = read_preprocessing(prepared)
    splits = {split: read_split(prepared, split) for split in ("train", "validation", "test")}
    report = data_report(archive, splits, preprocessing, 0.2)
    assert report["zca"] == {
        "epsilon": preprocessing.whitening.epsilon,
        "leading_components": len(preprocessing.whitening.gains),
        "whitened_std": preprocessing.whitening.std,
    }
