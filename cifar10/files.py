"""Reading the files one stage writes for another, checked against their format first.

DVC ties each input to the output that made it by its hash, but not a file corrupted in
DVC's cache, nor a stage run by hand on the wrong folder: each reader here checks the
cheap things (a plain file, a size within the format, the type and shape a ``.npy``
header announces) before it reads, so whatever is wrong is one :class:`InputError`
naming the file and the stage that writes it, in bounded memory.
"""

from __future__ import annotations

import json
import math
import stat
import tokenize
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cifar10.errors import InputError, one_line

# The JSON files stages write (summaries, histories, metrics, records) are kilobytes.
MAX_JSON_BYTES = 16 << 20


def regular_file_size(path: Path, stage: str | None) -> int:
    """Return the size of a plain file; refuse one missing, a folder, a device or a pipe.

    A device or a pipe could be read forever.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(path, "missing", stage) from None
    if not stat.S_ISREG(status.st_mode):
        raise InputError(path, "not a regular file", stage)
    return status.st_size


def read_small_file(path: Path, max_bytes: int, stage: str | None) -> bytes:
    """Read a plain file, refusing it unread if it is over ``max_bytes``."""
    size = regular_file_size(path, stage)
    if size > max_bytes:
        raise InputError(path, f"{size:,} bytes, more than the {max_bytes:,} it can be", stage)
    return path.read_bytes()


def read_json(path: Path, stage: str | None, kind: type = dict) -> object:
    """Read a JSON document whose top level is a ``kind`` (a dict, or a list)."""
    try:
        content = json.loads(read_small_file(path, MAX_JSON_BYTES, stage))
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, too deeply nested
        raise InputError(path, f"not valid JSON ({error})", stage) from None
    if not isinstance(content, kind):
        raise InputError(
            path, f"expected a JSON {kind.__name__}, got {type(content).__name__}", stage
        )
    return content


def _npy_problem(file: BinaryIO, size: int, dtype: np.dtype, max_items: int) -> str | None:
    """Say what is wrong with a ``.npy`` header for ``size`` bytes of ``dtype``; None if nothing."""
    version = np.lib.format.read_magic(file)
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        return f"unknown .npy format version {version}"
    shape, _, found = read_header(file)
    items = math.prod(shape)
    if found != dtype:
        return f"values of type {found}, not {dtype}"
    if items > max_items:
        return f"{items:,} values, more than the {max_items:,} it can hold"
    expected = file.tell() + items * found.itemsize
    if size != expected:
        return f"truncated or padded: {size:,} bytes, not the {expected:,} of its header's {shape}"
    return None


def read_array(path: Path, stage: str | None, dtype: type, max_items: int) -> np.ndarray:
    """Load a ``.npy`` array of ``dtype`` and at most ``max_items`` values (never a pickle).

    Its header is read first: a foreign type, more values than the format allows, or a
    file whose size does not match what the header announces (truncated, padded, sparse)
    is refused before any memory is taken for the values.
    """
    size = regular_file_size(path, stage)
    try:
        with path.open("rb") as file:
            problem = _npy_problem(file, size, np.dtype(dtype), max_items)
            if problem is None:
                file.seek(0)
                return np.load(file, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        problem = f"unreadable or truncated ({one_line(error)[:300]})"
    raise InputError(path, problem, stage)


# What numpy and zipfile raise on a damaged .npz, by the damage: a header numpy cannot
# parse (tokenize's error, SyntaxError), zip flags zipfile does not implement or reads as
# encryption, a header announcing more than memory holds.
_NPZ_ERRORS = (
    ValueError, EOFError, OSError, MemoryError, KeyError, zipfile.BadZipFile,
    tokenize.TokenError, SyntaxError, NotImplementedError, RuntimeError,
)  # fmt: skip


def read_arrays(path: Path, stage: str | None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` of plain numbers; its zip CRCs catch a changed byte."""
    regular_file_size(path, stage)
    try:
        with path.open("rb") as file, np.load(file, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except _NPZ_ERRORS as error:
        raise InputError(
            path, f"unreadable or truncated ({one_line(error)[:300]})", stage
        ) from None
