"""The CIFAR-10 python archive format: safe reading, validation, and a synthetic maker.

The official ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with five
``data_batch_N`` files, a ``test_batch`` and ``batches.meta``: pickles (protocol 2,
bytes keys) of uint8 rows of 3072 channel-planar pixels (R, G, B planes of 32x32).

Batches are read straight out of the tar.gz (nothing is extracted, so no path
traversal) with an unpickler that admits only what those pickles need.
"""

from __future__ import annotations

import argparse
import codecs
import gzip
import hashlib
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy._core import multiarray

from stages.cli import StageError, run_stage

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
IMAGE_SHAPE = (32, 32, 3)  # height, width, channels: the layout Keras' cifar10 loader gives
FEATURES = 32 * 32 * 3

# Every global the official pickles (written by Python 2 with numpy.core) and the
# Python 3 re-pickled copies (bytes via _codecs.encode, numpy._core) refer to.
_ALLOWED_GLOBALS: Mapping[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class ArchiveError(StageError):
    """The archive is unreadable, unsafe or not in the CIFAR-10 format."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but the few a CIFAR batch needs."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of the CIFAR-10 format"
            ) from None


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` admitting only numpy array reconstruction and bytes."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@dataclass(frozen=True)
class Split:
    """Images as uint8 rows of 3072 pixels in height-width-channel order, and labels."""

    images: np.ndarray  # (N, 3072) uint8
    labels: np.ndarray  # (N,) uint8

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 2:  # noqa: PLR2004
            raise ValueError(f"images must be a 2-D uint8 array, got {self.images.dtype}")
        if self.images.shape[1] != FEATURES:
            raise ValueError(f"images must have {FEATURES} columns, got {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but labels of shape {self.labels.shape}")


@dataclass(frozen=True)
class CifarArchive:
    """The development (train) and test sets of an archive, and its class names."""

    dev: Split
    test: Split
    class_names: tuple[str, ...]


def file_md5(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the md5 of a file, read in chunks (DVC 3 and the CIFAR site both use md5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def planar_to_interleaved(rows: np.ndarray) -> np.ndarray:
    """Reorder (N, 3072) channel-planar rows to height-width-channel rows (a uint8 copy)."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, FEATURES)


def interleaved_to_planar(rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`planar_to_interleaved`."""
    return rows.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2).reshape(-1, FEATURES)


def _read_members(path: Path) -> dict[str, bytes]:
    wanted = {f"{FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH, META_FILE)}
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    file = archive.extractfile(member)
                    if file is not None:
                        members[member.name.rsplit("/", 1)[1]] = file.read()
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ArchiveError(
            f"{path}: not a readable tar.gz archive, corrupt or truncated ({error})"
        ) from None
    missing = sorted({name.rsplit("/", 1)[1] for name in wanted} - members.keys())
    if missing:
        raise ArchiveError(f"{path}: missing {', '.join(f'{FOLDER}/{name}' for name in missing)}")
    return members


def _unpickle_dict(path: Path, name: str, data: bytes) -> dict[bytes, object]:
    try:
        content = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ArchiveError(f"{path}: {FOLDER}/{name}: unreadable pickle ({error})") from None
    if not isinstance(content, dict):
        raise ArchiveError(
            f"{path}: {FOLDER}/{name}: expected a dict, got {type(content).__name__}"
        )
    return content


def _parse_batch(path: Path, name: str, data: bytes, expected_rows: int) -> Split:
    batch = _unpickle_dict(path, name, data)
    where = f"{path}: {FOLDER}/{name}"
    rows, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(rows, np.ndarray) or rows.dtype != np.uint8 or rows.ndim != 2:  # noqa: PLR2004
        raise ArchiveError(f"{where}: b'data' must be an (N, {FEATURES}) uint8 array")
    if rows.shape != (expected_rows, FEATURES):
        raise ArchiveError(
            f"{where}: data has shape {rows.shape}, expected ({expected_rows}, {FEATURES})"
        )
    if not isinstance(labels, list) or len(labels) != expected_rows:
        raise ArchiveError(f"{where}: b'labels' must be a list of {expected_rows} integers")
    label_array = np.asarray(labels)
    if (
        label_array.dtype.kind not in "iu"
        or label_array.min() < 0
        or label_array.max() >= len(CLASS_NAMES)
    ):
        raise ArchiveError(f"{where}: labels must be integers from 0 to {len(CLASS_NAMES) - 1}")
    return Split(planar_to_interleaved(rows), label_array.astype(np.uint8))


def _parse_meta(path: Path, data: bytes) -> int:
    meta = _unpickle_dict(path, META_FILE, data)
    names = meta.get(b"label_names")
    if (
        not isinstance(names, list)
        or tuple(name.decode() if isinstance(name, bytes) else name for name in names)
        != CLASS_NAMES
    ):
        raise ArchiveError(f"{path}: {FOLDER}/{META_FILE}: label_names must be {list(CLASS_NAMES)}")
    per_batch = meta.get(b"num_cases_per_batch")
    if not isinstance(per_batch, int) or per_batch <= 0:
        raise ArchiveError(
            f"{path}: {FOLDER}/{META_FILE}: num_cases_per_batch must be a positive integer"
        )
    return per_batch


def load_cifar_archive(path: Path) -> CifarArchive:
    """Read and validate a CIFAR-10 python archive without extracting it."""
    members = _read_members(path)
    per_batch = _parse_meta(path, members[META_FILE])
    batches = [_parse_batch(path, name, members.pop(name), per_batch) for name in TRAIN_BATCHES]
    dev = Split(
        np.concatenate([batch.images for batch in batches]),
        np.concatenate([batch.labels for batch in batches]),
    )
    test = _parse_batch(path, TEST_BATCH, members.pop(TEST_BATCH), per_batch)
    return CifarArchive(dev=dev, test=test, class_names=CLASS_NAMES)


def write_archive(path: Path, members: Mapping[str, bytes]) -> None:
    """Write ``members`` (name inside cifar-10-batches-py/ -> bytes) as a reproducible tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    # No name and mtime=0 in the gzip header: the same images give the same bytes and md5.
    with (
        path.open("wb") as file,
        gzip.GzipFile(filename="", fileobj=file, mode="wb", mtime=0) as compressed,
    ):
        compressed.write(buffer.getvalue())


def synthetic_split(size: int, rng: np.random.Generator, templates: np.ndarray) -> Split:
    """Draw ``size`` images around per-class templates: noisy, but learnable."""
    labels = rng.permutation(np.arange(size) % len(CLASS_NAMES)).astype(np.uint8)
    noise = rng.normal(0.0, 40.0, size=(size, FEATURES)).astype(np.float32)
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels)


def make_synthetic_archive(path: Path, images_per_batch: int, seed: int = 0) -> None:
    """Write a CIFAR-10-format archive of 6 x ``images_per_batch`` synthetic images.

    Each class is a random smooth colour pattern plus noise, so a model can learn it;
    the format (pickles, names, planar layout) is exactly the official one.
    """
    if images_per_batch <= 0:
        raise ValueError(f"images_per_batch must be positive, got {images_per_batch}")
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(len(CLASS_NAMES), 4, 4, 3)).astype(np.float32)
    templates = coarse.repeat(8, axis=1).repeat(8, axis=2).reshape(len(CLASS_NAMES), FEATURES)
    members: dict[str, bytes] = {
        META_FILE: pickle.dumps(
            {
                b"num_cases_per_batch": images_per_batch,
                b"label_names": [name.encode() for name in CLASS_NAMES],
                b"num_vis": FEATURES,
            },
            protocol=2,
        )
    }
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        split = synthetic_split(images_per_batch, rng, templates)
        batch = {
            b"batch_label": f"synthetic {name}".encode(),
            b"labels": split.labels.tolist(),
            b"data": interleaved_to_planar(split.images),
            b"filenames": [f"{name}_{index:05d}.png".encode() for index in range(images_per_batch)],
        }
        members[name] = pickle.dumps(batch, protocol=2)
    write_archive(path, members)


def main() -> None:
    """Write a synthetic archive, for tests, demos and benchmarks at any size."""
    parser = argparse.ArgumentParser(description=make_synthetic_archive.__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--images-per-batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    make_synthetic_archive(arguments.output, arguments.images_per_batch, arguments.seed)
    print(f"wrote {arguments.output}: {6 * arguments.images_per_batch} synthetic images")


if __name__ == "__main__":
    run_stage(main)
