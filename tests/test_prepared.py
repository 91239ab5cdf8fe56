"""The prepared-data folder: its layout written and read, and its one-line errors.

The prepare stage run as a command (its outputs, its one-line errors) is integration-tier.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from helpers import params_with, run_stage, write_params

from cifar10.archive import (
    FEATURES,
    TEST_BATCH,
    TRAIN_BATCHES,
    load_cifar_archive,
)
from cifar10.errors import InputError
from cifar10.prepared import read_model_inputs, read_preprocessing, read_split, write_prepared
from cifar10.preprocessing import fit_preprocessing
from cifar10.split import split_dev
from tools.synthetic_archive import synthetic_members, write_archive


def test_the_folder_holds_the_splits_and_the_model_reads_zca_codes(
    prepared: Path, tiny_archive: Path
) -> None:
    archive = load_cifar_archive(tiny_archive)
    train = read_split(prepared, "train")
    assert train.images.dtype == np.uint8
    assert train.images.shape == (160, FEATURES)
    test = read_split(prepared, "test")
    np.testing.assert_array_equal(test.images, archive.test.images)
    np.testing.assert_array_equal(test.labels, archive.test.labels)
    # With ZCA the model reads the whitened images' uint8 codes, computed from the images.
    preprocessing = read_preprocessing(prepared)
    assert preprocessing.scaling == "zca"
    assert preprocessing.whitening is not None
    for split in ("train", "validation", "test"):
        images, inputs = (
            read_split(prepared, split),
            read_model_inputs(prepared, split, preprocessing),
        )
        assert inputs.images.dtype == np.uint8
        np.testing.assert_array_equal(inputs.images, preprocessing.model_inputs(images.images))
        np.testing.assert_array_equal(inputs.labels, images.labels)
    assert not np.array_equal(
        read_model_inputs(prepared, "train", preprocessing).images, train.images
    )


def test_without_whitening_the_model_reads_the_images(tmp_path: Path, tiny_archive: Path) -> None:
    params = params_with({"prepare": {"scaling": "per_pixel"}}).prepare
    archive = load_cifar_archive(tiny_archive)
    train, validation = split_dev(archive.dev, params.val_fraction, params.seed)
    folder = tmp_path / "prepared"
    splits = {"train": train, "validation": validation, "test": archive.test}
    write_prepared(folder, splits, fit_preprocessing(train.images, params))
    preprocessing = read_preprocessing(folder)
    assert preprocessing.scaling == "per_pixel"
    assert preprocessing.whitening is None
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [f"{split}_{kind}.npy" for split in splits for kind in ("images", "labels")]
        + ["preprocessing.json", "preprocessing.npz"]
    )
    inputs = read_model_inputs(folder, "validation", preprocessing)
    np.testing.assert_array_equal(inputs.images, validation.images)
    np.testing.assert_array_equal(inputs.labels, validation.labels)
    assert preprocessing.scale.min() > 1  # pixel values' spread, not 1 / 255's


def test_a_missing_or_wrong_split_file_names_it_and_the_stage(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"train_images\.npy: missing; run `dvc repro prepare`"):
        read_split(tmp_path, "train")
    np.save(tmp_path / "train_images.npy", np.zeros((3, FEATURES), np.uint8))
    np.save(tmp_path / "train_labels.npy", np.zeros(2, np.uint8))
    with pytest.raises(
        InputError, match=r"train_images\.npy: not a prepared split \(3 images but labels"
    ):
        read_split(tmp_path, "train")


def run_prepare(workdir: Path, archive: Path) -> object:
    return run_stage(
        "prepare",
        ["--archive", str(archive), "--output", "data/prepared", "--report", "reports/data.json"],
        workdir,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_params(tmp_path)


@pytest.mark.integration
def test_the_stage_writes_the_folder_and_the_report(prepared_by_stage: Path) -> None:
    preprocessing = read_preprocessing(prepared_by_stage)
    assert preprocessing.scaling == "zca"
    assert read_split(prepared_by_stage, "train").images.shape == (160, FEATURES)
    assert read_model_inputs(prepared_by_stage, "test", preprocessing).images.shape == (
        40,
        FEATURES,
    )
    report = json.loads((prepared_by_stage.parent.parent / "reports" / "data.json").read_text())
    assert report["shapes"]["x_dev"] == "(200, 32, 32, 3)"
    assert report["shapes"]["y_val"] == "(40, 1)"
    assert report["zca"]["epsilon"] == preprocessing.whitening.epsilon
    assert [path.name for path in prepared_by_stage.parent.parent.rglob(".*tmp*")] == []


@pytest.mark.integration
def test_the_stage_prints_what_it_prepared(tmp_path: Path, tiny_archive: Path) -> None:
    write_params(tmp_path, {"prepare": {"scaling": "unit"}})
    result = run_prepare(tmp_path, tiny_archive)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "prepared train 160, validation 40, test 40 images (unit scaling) into data/prepared\n"
    )
    assert not list((tmp_path / "data" / "prepared").glob("*_codes.npy"))


@pytest.mark.integration
def test_the_stage_rejects_a_bad_archive_in_one_line_and_writes_nothing(workdir: Path) -> None:
    corrupt = workdir / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    result = run_prepare(workdir, corrupt)
    assert result.returncode == 1
    # What it was doing, then one line for the fault.
    assert result.stderr.splitlines() == [
        f"stages.prepare: reading {corrupt}",
        f"error: {corrupt}: corrupt or truncated gzip data (Unknown compression method)",
    ]
    assert not (workdir / "data").exists()
    assert not (workdir / "reports").exists()


@pytest.mark.integration
def test_the_stage_rejects_bad_params_before_reading_the_archive(workdir: Path) -> None:
    params = workdir / "params.yaml"
    params.write_text(params.read_text().replace("val_fraction: 0.2", "val_fraction: 1.5"))
    result = run_prepare(workdir, workdir / "does-not-exist.tar.gz")
    assert result.returncode == 1
    assert result.stderr.startswith("error: params.yaml: prepare.val_fraction = 1.5: ")
    assert len(result.stderr.splitlines()) == 1
    assert not (workdir / "data").exists()


@pytest.mark.integration
def test_identical_images_are_refused_for_zca_on_the_command_line(tmp_path: Path) -> None:
    workdir = write_params(tmp_path, {"prepare": {"scaling": "zca"}})
    members = synthetic_members(20)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = pickle.loads(members[name], encoding="bytes")
        batch[b"data"] = np.zeros_like(batch[b"data"])
        members[name] = pickle.dumps(batch, protocol=2)
    zeros = workdir / "zeros.tar.gz"
    write_archive(zeros, members)
    result = run_prepare(workdir, zeros)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        (
            "error: prepare.scaling = 'zca': the train split's images are all the same, so "
            "there is nothing to whiten; check the archive"
        )
    ]
    assert result.stderr.splitlines()[-1] == errors[0]
    assert not (workdir / "data").exists()
    assert not (workdir / "reports").exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # int64 with a -1: Keras' to_categorical would wrap it into class 9, silently.
        (np.array([3, -1] * 20, dtype=np.int64), "values of type int64, not uint8"),
        (np.array([3, 12] * 20, dtype=np.uint8), "labels must be class indices 0 to 9, got 12"),
        (np.array([3.0, 1.0] * 20), "values of type float64, not uint8"),
        (np.array([], dtype=np.uint8), "an empty split"),
    ],
    ids=["negative", "too large", "float", "empty"],
)
def test_tampered_labels_are_one_line_naming_the_labels_file(
    prepared: Path, tmp_path: Path, labels: np.ndarray, message: str
) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    for path in prepared.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    labels_file = folder / "validation_labels.npy"
    np.save(labels_file, labels)
    preprocessing = read_preprocessing(folder)
    for read in (lambda: read_split(folder, "validation"),
                 lambda: read_model_inputs(folder, "validation", preprocessing)):  # fmt: skip
        with pytest.raises(InputError) as caught:
            read()
        assert str(caught.value).startswith(f"{labels_file}: ")
        assert message in str(caught.value)
        assert str(caught.value).endswith("; run `dvc repro prepare` to write it again")


def _copy(prepared: Path, folder: Path) -> Path:
    folder.mkdir()
    for path in prepared.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _sparse_npy(path: Path, shape: tuple[int, ...]) -> None:
    """A .npy whose header announces ``shape`` and whose values are a hole: no disk taken."""
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": shape}
        )
        file.truncate(file.tell() + math.prod(shape))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # 1.5 GB announced, and there: a sparse file, read whole before the check.
        (lambda path: _sparse_npy(path, (500_000, FEATURES)), "more than the 153,600,000"),
        (lambda path: path.write_bytes(path.read_bytes() + bytes(10)), "truncated or padded"),
        (lambda path: path.write_bytes(path.read_bytes()[:-10]), "truncated or padded"),
        (lambda path: path.write_bytes(b"\x93NUMPY\x07\x00"), "unknown .npy format version"),
        (lambda path: (path.unlink(), os.mkfifo(path)), "not a regular file"),
    ],
    ids=["oversized", "padded", "truncated", "foreign version", "fifo"],
)
def test_an_npy_file_is_judged_by_its_header_before_its_values_are_read(
    prepared: Path, tmp_path: Path, damage: object, message: str
) -> None:
    folder = _copy(prepared, tmp_path / "prepared")
    images_file = folder / "validation_images.npy"
    damage(images_file)
    with pytest.raises(InputError) as caught:
        read_split(folder, "validation")
    assert str(caught.value).startswith(f"{images_file}: ")
    assert message in str(caught.value)
    assert str(caught.value).endswith("; run `dvc repro prepare` to write it again")
