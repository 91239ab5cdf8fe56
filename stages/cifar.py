"""The CIFAR-10 python archive format: safe, strict reading.

The official ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with five
``data_batch_N`` files, a ``test_batch`` and ``batches.meta``: pickles (protocol 2,
bytes keys) of uint8 rows of 3072 channel-planar pixels (R, G, B planes of 32x32).

The archive is decompressed whole, so the gzip CRC and length are checked and any
changed byte is refused; batches are then read straight out of the tar (nothing is
extracted, so no path traversal) with an unpickler that admits only what those
pickles need. Sizes are bounded before anything is read or allocated.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from isal import igzip
from numpy._core import multiarray

from stages.cli import StageError

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

# Bounds far above the official archive (a 10,000-image batch pickles to 31 MB, or 46 MB
# re-pickled by Python 3) and far below what would exhaust memory.
MAX_MEMBER_BYTES = 64 << 20
MAX_ARCHIVE_BYTES = 320 << 20  # decompressed tar: 180 MiB official, 260 MiB re-pickled
MAX_IMAGES_PER_BATCH = 10_000

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


def restricted_loads(data: bytes | memoryview) -> object:
    """Unpickle ``data`` admitting only numpy array reconstruction and bytes."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@dataclass(frozen=True)
class Split:
    """Images as uint8 rows of 3072 values in height-width-channel order, and labels."""

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
    """Reorder (N, 3072) channel-planar rows to height-width-channel rows (a copy).

    One strided copy per channel: three times as fast as numpy's general transpose of
    (N, 3, 1024) to (N, 1024, 3), whose innermost axis of 3 defeats its blocking.
    """
    channels = IMAGE_SHAPE[2]
    interleaved = np.empty_like(rows)
    planes = rows.reshape(len(rows), channels, -1)
    for channel in range(channels):
        interleaved.reshape(len(rows), -1, channels)[:, :, channel] = planes[:, channel]
    return interleaved


def interleaved_to_planar(rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`planar_to_interleaved`."""
    return rows.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2).reshape(-1, FEATURES)


def _decompress(path: Path, compressed: bytes) -> bytes:
    """Decompress a whole gzip file, checking its CRC and length; bounded in size.

    Reading to the end makes the gzip reader check the trailer's CRC and length, so a
    change anywhere in the compressed stream is caught, with or without an md5.
    """
    try:
        with igzip.GzipFile(fileobj=io.BytesIO(compressed)) as stream:
            tar = stream.read(MAX_ARCHIVE_BYTES + 1)
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise ArchiveError(f"{path}: corrupt or truncated gzip data ({error})") from None
    if len(tar) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(
            f"{path}: more than {MAX_ARCHIVE_BYTES >> 20} MiB uncompressed, far more than a "
            "CIFAR-10 archive holds"
        )
    return tar


def _read_members(path: Path, tar: bytes) -> dict[str, memoryview]:
    """Return the wanted members' bytes (views into ``tar``, no copies) by short name."""
    wanted = {f"{FOLDER}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH, META_FILE)}
    view = memoryview(tar)
    members: dict[str, memoryview] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            for member in archive:
                if member.name not in wanted or not member.isfile():
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise ArchiveError(
                        f"{path}: {member.name} is {member.size >> 20} MiB, more than a "
                        "CIFAR-10 batch can be"
                    )
                end = member.offset_data + member.size
                if end > len(tar):
                    raise ArchiveError(f"{path}: {member.name} is cut short (truncated archive)")
                members[member.name.rsplit("/", 1)[1]] = view[member.offset_data : end]
            # tarfile stops quietly at a damaged header after the first: where it stopped
            # there must be the archive's end, blocks of zeros.
            stop = archive.offset
    except tarfile.TarError as error:
        raise ArchiveError(f"{path}: corrupt tar data ({error})") from None
    if view[stop : stop + tarfile.BLOCKSIZE].tobytes().strip(b"\0"):
        raise ArchiveError(f"{path}: corrupt tar data (a damaged header at byte {stop})")
    missing = sorted({name.rsplit("/", 1)[1] for name in wanted} - members.keys())
    if missing:
        raise ArchiveError(
            f"{path}: a readable archive, but not CIFAR-10's: missing "
            + ", ".join(f"{FOLDER}/{name}" for name in missing)
        )
    return members


def _unpickle_dict(path: Path, name: str, data: memoryview) -> dict[bytes, object]:
    try:
        content = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ArchiveError(f"{path}: {FOLDER}/{name}: unreadable pickle ({error})") from None
    if not isinstance(content, dict):
        raise ArchiveError(
            f"{path}: {FOLDER}/{name}: expected a dict, got {type(content).__name__}"
        )
    return content


def _parse_batch(path: Path, name: str, data: memoryview, expected_rows: int) -> Split:
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
    if label_array.dtype.kind not in "iu":
        raise ArchiveError(f"{where}: labels must be integers, got {label_array.dtype} values")
    outside = label_array[(label_array < 0) | (label_array >= len(CLASS_NAMES))]
    if outside.size:
        raise ArchiveError(
            f"{where}: label {int(outside[0])} is outside 0-{len(CLASS_NAMES) - 1} "
            f"({outside.size} such labels)"
        )
    return Split(planar_to_interleaved(rows), label_array.astype(np.uint8))


def _parse_meta(path: Path, data: memoryview) -> int:
    meta = _unpickle_dict(path, META_FILE, data)
    names = meta.get(b"label_names")
    if (
        not isinstance(names, list)
        or tuple(name.decode() if isinstance(name, bytes) else name for name in names)
        != CLASS_NAMES
    ):
        raise ArchiveError(f"{path}: {FOLDER}/{META_FILE}: label_names must be {list(CLASS_NAMES)}")
    per_batch = meta.get(b"num_cases_per_batch")
    if not isinstance(per_batch, int) or not 0 < per_batch <= MAX_IMAGES_PER_BATCH:
        raise ArchiveError(
            f"{path}: {FOLDER}/{META_FILE}: num_cases_per_batch must be an integer from 1 "
            f"to {MAX_IMAGES_PER_BATCH}, got {per_batch!r}"
        )
    return per_batch


def _read_archive(path: Path, shown: Path) -> bytes:
    """Return the decompressed tar; errors name ``shown``."""
    if path.is_dir():
        raise ArchiveError(f"{shown}: is a folder, not an archive file")
    try:
        compressed = path.read_bytes()
    except FileNotFoundError:
        raise ArchiveError(f"{shown}: no such file") from None
    return _decompress(shown, compressed)


def check_archive(path: Path, *, name: str | None = None) -> None:
    """Check an archive without an md5 to vouch for it: gzip CRC and length, tar, members.

    ``name`` is how errors refer to the archive (the path the user set, say).
    """
    shown = Path(name) if name is not None else path
    _read_members(shown, _read_archive(path, shown))


def load_cifar_archive(path: Path, *, name: str | None = None) -> CifarArchive:
    """Read and validate a CIFAR-10 python archive without extracting it.

    ``name`` is how errors refer to the archive (the path the user set, say), if not
    by ``path``.
    """
    shown = Path(name) if name is not None else path
    members = _read_members(shown, _read_archive(path, shown))
    per_batch = _parse_meta(shown, members[META_FILE])
    batches = [_parse_batch(shown, batch, members[batch], per_batch) for batch in TRAIN_BATCHES]
    dev = Split(
        np.concatenate([batch.images for batch in batches]),
        np.concatenate([batch.labels for batch in batches]),
    )
    test = _parse_batch(shown, TEST_BATCH, members[TEST_BATCH], per_batch)
    return CifarArchive(dev=dev, test=test, class_names=CLASS_NAMES)
