"""The CIFAR-10 python archive format: safe, strict reading in bounded memory.

The official ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with five
``data_batch_N`` files, a ``test_batch`` and ``batches.meta``: pickles (protocol 2,
bytes keys) of uint8 rows of 3072 channel-planar pixels (R, G, B planes of 32x32).

The archive is read once, front to back: the gzip stream is decompressed as the tar is
read, and to its end, so the gzip CRC and length are checked and any changed byte is
refused. Nothing is extracted (so no path traversal): each batch is unpickled as it
arrives, by an unpickler that makes nothing but dicts, lists, numbers, bytes and numpy
arrays of plain numbers, once a scan of its opcodes has bounded what it can allocate.
Every size is bounded by the format before it is read or allocated, so memory is
bounded whatever the input; whatever does not fit the format is one ArchiveError.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import pickletools
import reprlib
import stat
import tarfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from isal import igzip, isal_zlib

from cifar10.errors import PipelineError, one_line

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

# Bounds by the format, with room for archives re-pickled by Python 3 (whose bytes are
# _codecs.encode calls, half as long again), and far below what would exhaust memory.
MAX_FILE_BYTES = 256 << 20  # the official archive is 170,498,071 bytes (163 MiB)
MAX_ARCHIVE_BYTES = 320 << 20  # the tar inside: 178 MiB official, 257 MiB re-pickled
MAX_MEMBER_BYTES = 64 << 20  # a batch of 10,000 images: 30 MiB official, 43 MiB re-pickled
MAX_MEMBERS = 64  # the official archive has 9 (the folder, 7 pickles, a readme)
MAX_IMAGES_PER_BATCH = 10_000
MAX_SPLIT_IMAGES = len(TRAIN_BATCHES) * MAX_IMAGES_PER_BATCH  # the most any split can hold
# Opcodes in one pickle: a batch of 10,000 images has 40,000 (official) to 90,000
# (re-pickled), a few per label and file name. Each opcode makes at most one object,
# and the unpickler's memo is as long as the largest index a pickle names (8 bytes an
# entry), so this bounds the unpickler's memory too.
MAX_PICKLE_OPCODES = 200_000
_PLAIN_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"})
_MAX_ARRAY_DIMENSIONS = 2
_MEMO_WRITES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_CHUNK_BYTES = 1 << 20


class ArchiveError(PipelineError):
    """The archive is unreadable, unsafe or not in the CIFAR-10 format."""


class _PickledDtype:
    """A numpy dtype as a pickle describes it: a plain number type, checked before it is made."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        # Python 2's pickles give bytes and 0 or 1, Python 3's str and booleans.
        text = code.decode("ascii", "replace") if isinstance(code, bytes) else code
        if not (isinstance(text, str) and text in _PLAIN_DTYPES) or not (
            align in (0, 1) and copy in (0, 1)
        ):
            raise pickle.UnpicklingError(
                f"numpy.dtype{reprlib.repr((code, align, copy))} is not part of the CIFAR-10 format"
            )
        self.dtype = np.dtype(text)

    def __setstate__(self, state: object) -> None:
        """Take numpy's state of a plain dtype: (3, byte order, None, None, None, -1, -1, 0)."""
        order = state[1] if isinstance(state, tuple) and len(state) == 8 else None  # noqa: PLR2004
        if isinstance(order, bytes):
            order = order.decode("ascii", "replace")
        if (
            order not in ("<", ">", "|", "=")
            or state[0] != 3  # noqa: PLR2004 (numpy's state version)
            or state[2:] != (None, None, None, -1, -1, 0)
        ):
            raise pickle.UnpicklingError(
                f"dtype state {reprlib.repr(state)} is not a plain number type's"
            )
        self.dtype = self.dtype.newbyteorder(order)


class _PickledArray:
    """A numpy array as a pickle describes it; ``array`` is set once its bytes are checked."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        """Take numpy's state of protocols 2 to 4: (1, shape, dtype, Fortran order, bytes)."""
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):  # noqa: PLR2004
            raise pickle.UnpicklingError(f"array state {reprlib.repr(state)} is not numpy's")
        _, shape, dtype, fortran_order, raw = state
        if fortran_order not in (0, 1):
            raise pickle.UnpicklingError(f"array order {reprlib.repr(fortran_order)} is not a flag")
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran_order else "C")


def _array_from_bytes(raw: object, dtype: object, shape: object, order: str) -> np.ndarray:
    """View ``raw`` as an array once it is known to hold exactly the array described."""
    if not isinstance(raw, (bytes, bytearray)) or not isinstance(dtype, _PickledDtype):
        raise pickle.UnpicklingError("an array must be made of bytes and a plain number type")
    if not (
        isinstance(shape, tuple)
        and len(shape) <= _MAX_ARRAY_DIMENSIONS
        and all(type(length) is int and length >= 0 for length in shape)
    ):
        raise pickle.UnpicklingError(
            f"array shape {reprlib.repr(shape)}: not 1 to {_MAX_ARRAY_DIMENSIONS} lengths"
        )
    if math.prod(shape) * dtype.dtype.itemsize != len(raw):
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and type {dtype.dtype} cannot be {len(raw):,} bytes"
        )
    return np.frombuffer(raw, dtype.dtype).reshape(shape, order=order)


def _reconstruct(subtype: object, shape: object, code: object) -> _PickledArray:
    """Stand-in for numpy's ``_reconstruct``: an empty array for the pickle's BUILD to fill."""
    if subtype is not _PickledArray or shape != (0,) or code not in (b"b", "b"):
        raise pickle.UnpicklingError(
            f"_reconstruct{reprlib.repr((subtype, shape, code))} is not how numpy pickles an array"
        )
    return _PickledArray()


def _frombuffer(buffer: object, dtype: object, shape: object, order: object) -> _PickledArray:
    """Stand-in for numpy's ``_frombuffer``, which protocol 5 calls with an array's bytes."""
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"array order {reprlib.repr(order)} is not 'C' or 'F'")
    pickled = _PickledArray()
    pickled.array = _array_from_bytes(buffer, dtype, shape, order)
    return pickled


def _empty_bytes() -> bytes:
    """Stand-in for ``bytes()``, which Python 3's protocol 2 pickles an empty bytes as."""
    return b""


# Each global that CIFAR-10 pickles name, and the checked stand-in it loads as: numpy.core
# in the official pickles (Python 2, numpy 1), numpy._core in numpy 2's.
_STAND_INS: Mapping[tuple[str, str], object] = {
    ("__builtin__", "bytes"): _empty_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _PickledArray,
    ("numpy", "dtype"): _PickledDtype,
}
# What a hostile pickle can make the unpickler or the stand-ins raise; Python warns of
# invalid escapes in protocol 0 strings (and will refuse them), raised here as errors.
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    OverflowError,
    DeprecationWarning,
)


class _Latin1Encoder:
    """Stand-in for ``_codecs.encode``: Python 3 pickles bytes as encode(str, 'latin1').

    It makes no more bytes in all than the pickle holds, however often a pickle passes
    it the same string.
    """

    def __init__(self, max_bytes: int) -> None:
        self._bytes_left = max_bytes

    def __call__(self, text: object, encoding: object) -> bytes:
        """Return ``text`` as bytes, one for each character."""
        if not isinstance(text, str) or encoding != "latin1":
            raise pickle.UnpicklingError(
                f"_codecs.encode(..., {reprlib.repr(encoding)}) is not part of the CIFAR-10 format"
            )
        self._bytes_left -= len(text)
        if self._bytes_left < 0:
            raise pickle.UnpicklingError("_codecs.encode makes more bytes than the pickle holds")
        return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that loads the globals a CIFAR batch names as checked stand-ins, no others."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        # Not a method of this unpickler: its memo would hold the unpickler, and so the
        # pickle's contents, in a cycle until the garbage collector runs.
        self._encode = _Latin1Encoder(len(data))

    def find_class(self, module: str, name: str) -> object:
        """Return the stand-in for ``module.name``; refuse any other global."""
        if (module, name) == ("_codecs", "encode"):
            return self._encode
        try:
            return _STAND_INS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of the CIFAR-10 format"
            ) from None


def _check_opcodes(data: bytes) -> None:
    """Refuse a pickle whose opcodes would make the unpickler allocate beyond the bounds.

    pickletools parses without allocating what lengths and indexes announce; the C
    unpickler allocates first (a memo of 8 bytes per index, bytes of the length given).
    """
    end = 0
    for count, (opcode, argument, position) in enumerate(pickletools.genops(data), start=1):
        if count > MAX_PICKLE_OPCODES:
            raise pickle.UnpicklingError(
                f"more than {MAX_PICKLE_OPCODES:,} opcodes, more than a CIFAR-10 batch has"
            )
        if opcode.name in _MEMO_WRITES and argument >= MAX_PICKLE_OPCODES:
            raise pickle.UnpicklingError(
                f"memo index {argument:,} at byte {position}, beyond {MAX_PICKLE_OPCODES:,}"
            )
        end = position + 1  # the last opcode is STOP, one byte
    if end != len(data):
        raise pickle.UnpicklingError(f"{len(data) - end:,} bytes after the pickle's end")


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` as a CIFAR-10 pickle, in memory bounded by its length.

    Numpy arrays come back as ``_PickledArray`` stand-ins (their ``array`` set), bytes
    as bytes; anything else the format does not use raises ``pickle.UnpicklingError``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            _check_opcodes(data)
            return _RestrictedUnpickler(data).load()
    except _UNPICKLING_ERRORS as error:
        if isinstance(error, pickle.UnpicklingError):
            raise
        raise pickle.UnpicklingError(f"{type(error).__name__}: {error}") from None


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
        check_labels(self.labels)


def check_labels(labels: np.ndarray) -> None:
    """Refuse labels that are not uint8 class indices (a -1 would wrap into class 9)."""
    if labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 class indices, got {labels.dtype}")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(
            f"labels must be class indices 0 to {len(CLASS_NAMES) - 1}, got {int(labels.max())}"
        )


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

    One strided copy per channel, rather than numpy's general transpose of (N, 3, 1024)
    to (N, 1024, 3), whose innermost axis of 3 defeats its blocking.
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


class _TarStream:
    """The decompressed tar, read front to back: bounded, and where its last non-zero byte is.

    After the first member, tarfile stops without a word at a damaged header as at the
    zeros that end an archive; only zeros may follow the last member it returned.
    """

    def __init__(self, decompressed: BinaryIO, shown: str) -> None:
        self._decompressed = decompressed
        self._shown = shown
        self._error: ArchiveError | None = None  # once a read fails, every later one does
        self.position = 0
        self.data_end = 0  # just past the last non-zero byte read so far

    def read(self, size: int) -> bytes:
        """Read up to ``size`` bytes; refuse corrupt gzip data and a tar beyond the bound."""
        if self._error is None:
            try:
                chunk = self._decompressed.read(min(size, MAX_ARCHIVE_BYTES + 1 - self.position))
            except (OSError, EOFError, isal_zlib.error) as error:
                self._error = ArchiveError(
                    f"{self._shown}: corrupt or truncated gzip data ({one_line(error)})"
                )
            else:
                self.position += len(chunk)
                if self.position > MAX_ARCHIVE_BYTES:
                    self._error = ArchiveError(
                        f"{self._shown}: more than {MAX_ARCHIVE_BYTES >> 20} MiB uncompressed, "
                        "far more than a CIFAR-10 archive holds"
                    )
        if self._error is not None:
            raise self._error
        if data := chunk.rstrip(b"\0"):
            self.data_end = self.position - len(chunk) + len(data)
        return chunk

    def read_to_end(self) -> None:
        """Read what is left, so the gzip reader checks the CRC and length at the end."""
        while self.read(_CHUNK_BYTES):
            pass


def _open_archive_file(path: Path, shown: str) -> BinaryIO:
    """Open the compressed archive once its size and kind fit the format."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ArchiveError(f"{shown}: no such file") from None
    if stat.S_ISDIR(status.st_mode):
        raise ArchiveError(f"{shown}: is a folder, not an archive file")
    if not stat.S_ISREG(status.st_mode):
        raise ArchiveError(f"{shown}: not a regular file (a device, pipe or socket)")
    if status.st_size > MAX_FILE_BYTES:
        raise ArchiveError(
            f"{shown}: {status.st_size:,} bytes, more than the {MAX_FILE_BYTES >> 20} MiB a "
            "CIFAR-10 archive can be (the official one is 163 MiB)"
        )
    return path.open("rb")


def _check_member(shown: str, member: tarfile.TarInfo, seen: set[str]) -> None:
    """Refuse a wanted member that could be misread: not a plain file, repeated, too big."""
    where = f"{shown}: {member.name}"
    if not member.isfile() or member.issparse():
        raise ArchiveError(f"{where}: a link, folder or sparse file, not a plain file")
    if member.name.removeprefix("./") in seen:
        raise ArchiveError(f"{where}: appears twice in the archive; which copy is meant?")
    if member.size > MAX_MEMBER_BYTES:
        raise ArchiveError(
            f"{where}: {member.size:,} bytes, more than the {MAX_MEMBER_BYTES >> 20} MiB a "
            "CIFAR-10 batch can be"
        )


def _bounded_members(archive: tarfile.TarFile, shown: str) -> Iterator[tarfile.TarInfo]:
    """Yield the archive's members, at most MAX_MEMBERS: tarfile keeps each one it reads."""
    for count, member in enumerate(archive, start=1):
        if count > MAX_MEMBERS:
            raise ArchiveError(
                f"{shown}: more than {MAX_MEMBERS} members, far more than a CIFAR-10 archive holds"
            )
        yield member


def _read_members(path: Path, shown: str, take: Callable[[str, bytes], None]) -> None:
    """Pass each wanted member's name in the folder and bytes to ``take``, as they arrive.

    Then the rest of the archive is read and checked: the gzip trailer, nothing but
    zeros after the last member, every wanted member there.
    """
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH, META_FILE)}
    seen: set[str] = set()
    last: tarfile.TarInfo | None = None
    with _open_archive_file(path, shown) as file, igzip.IGzipFile(fileobj=file) as decompressed:
        stream = _TarStream(decompressed, shown)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in _bounded_members(archive, shown):
                    last = member
                    # Archives made with `tar -C folder .` name their members ./...
                    name = member.name.removeprefix("./")
                    if name in wanted:
                        _check_member(shown, member, seen)
                        seen.add(name)
                        take(wanted[name], archive.extractfile(member).read())
        except (tarfile.TarError, ArchiveError) as error:
            # Damaged gzip data garbles whatever follows it: the gzip check at the end
            # names that cause, when it is the cause.
            stream.read_to_end()
            if isinstance(error, ArchiveError):
                raise
            raise ArchiveError(f"{shown}: corrupt tar data ({one_line(error)})") from None
        stream.read_to_end()
    # tarfile itself refuses a tar that ends before the last member's data does.
    end = 0 if last is None else last.offset_data + last.size
    if stream.data_end > end:
        header = -(-end // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        raise ArchiveError(
            f"{shown}: corrupt tar data (from byte {header:,} of the tar on, neither a valid "
            "header nor the zeros that end an archive)"
        )
    missing = sorted(wanted.keys() - seen)
    if missing:
        raise ArchiveError(
            f"{shown}: a readable archive, but not CIFAR-10's: missing " + ", ".join(missing)
        )


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def _unpickle_dict(where: str, data: bytes) -> dict[bytes, object]:
    """Unpickle a member that must hold a dict; its arrays come out as numpy arrays."""
    try:
        content = restricted_loads(data)
    except pickle.UnpicklingError as error:
        raise ArchiveError(f"{where}: unreadable pickle ({one_line(error)})") from None
    if not isinstance(content, dict):
        raise ArchiveError(f"{where}: expected a dict, got {_describe(content)}")
    return {
        key: value.array if isinstance(value, _PickledArray) else value
        for key, value in content.items()
    }


def _parse_labels(where: str, labels: object, count: int) -> np.ndarray:
    if not isinstance(labels, list) or len(labels) != count:
        raise ArchiveError(
            f"{where}: b'labels' must be a list of {count} integers (one per image), got "
            f"{_describe(labels)}"
        )
    for index, label in enumerate(labels):
        if type(label) is not int or not 0 <= label < len(CLASS_NAMES):
            raise ArchiveError(
                f"{where}: label {index} is {reprlib.repr(label)}; labels are integers from 0 to "
                f"{len(CLASS_NAMES) - 1}"
            )
    return np.array(labels, np.uint8)


def _parse_batch(shown: str, name: str, data: bytes) -> Split:
    where = f"{shown}: {FOLDER}/{name}"
    batch = _unpickle_dict(where, data)
    rows = batch.get(b"data")
    if not (
        isinstance(rows, np.ndarray)
        and rows.dtype == np.uint8
        and rows.ndim == 2  # noqa: PLR2004
        and rows.shape[1] == FEATURES
        and 0 < len(rows) <= MAX_IMAGES_PER_BATCH
    ):
        raise ArchiveError(
            f"{where}: b'data' must be an (N, {FEATURES}) uint8 array of 1 to "
            f"{MAX_IMAGES_PER_BATCH:,} images, got {_describe(rows)}"
        )
    labels = _parse_labels(where, batch.get(b"labels"), len(rows))
    return Split(planar_to_interleaved(rows), labels)


def _parse_meta(shown: str, data: bytes) -> int:
    """Check the class names; return the number of images per batch."""
    where = f"{shown}: {FOLDER}/{META_FILE}"
    meta = _unpickle_dict(where, data)
    names = meta.get(b"label_names")
    if names not in (list(CLASS_NAMES), [name.encode() for name in CLASS_NAMES]):
        raise ArchiveError(
            f"{where}: label_names must be {list(CLASS_NAMES)}, got {reprlib.repr(names)}"
        )
    per_batch = meta.get(b"num_cases_per_batch")
    if type(per_batch) is not int or not 0 < per_batch <= MAX_IMAGES_PER_BATCH:
        raise ArchiveError(
            f"{where}: num_cases_per_batch must be an integer from 1 to "
            f"{MAX_IMAGES_PER_BATCH:,}, got {reprlib.repr(per_batch)}"
        )
    return per_batch


def load_cifar_archive(path: Path, *, name: str | None = None) -> CifarArchive:
    """Read and validate a CIFAR-10 python archive without extracting it.

    ``name`` is how errors refer to the archive (the path or URL the user set, say), if
    not by ``path``. Memory stays within the bounds above whatever the file holds.
    """
    shown = str(path) if name is None else name
    batches: dict[str, Split] = {}
    per_batch = 0

    def take(member: str, data: bytes) -> None:
        nonlocal per_batch
        if member == META_FILE:
            per_batch = _parse_meta(shown, data)
        else:
            batches[member] = _parse_batch(shown, member, data)

    _read_members(path, shown, take)
    for member, batch in batches.items():
        if len(batch.labels) != per_batch:
            raise ArchiveError(
                f"{shown}: {FOLDER}/{member} holds {len(batch.labels):,} images, but "
                f"{META_FILE} says {per_batch:,} per batch"
            )
    dev = [batches.pop(member) for member in TRAIN_BATCHES]
    return CifarArchive(
        dev=Split(
            np.concatenate([batch.images for batch in dev]),
            np.concatenate([batch.labels for batch in dev]),
        ),
        test=batches[TEST_BATCH],
        class_names=CLASS_NAMES,
    )


def check_archive(path: Path, *, name: str | None = None) -> None:
    """Check an archive without an md5 to vouch for it: all of it, as it would be read."""
    load_cifar_archive(path, name=name)
