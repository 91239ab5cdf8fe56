"""Reading the files one stage writes for another, checked against their format first.

DVC ties each input to the output that made it by its hash, but not a file corrupted in
DVC's cache, nor a stage run by hand on the wrong folder: each reader here checks the
cheap things (a plain file, a size within the format, the type and shape a ``.npy``
header announces) before it reads, so whatever is wrong is one :class:`InputError`
naming the file and the stage that writes it, in bounded memory.
"""

from __future__ import annotations

import json
import stat
import tokenize
import zipfile
from pathlib import Path

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


def read_array(path: Path, stage: str | None) -> np.ndarray:
    """Load a ``.npy`` array of plain numbers (never a pickle)."""
    regular_file_size(path, stage)
    try:
        return np.load(path, allow_pickle=False)
    # MemoryError: a damaged header that announces more than memory holds.
    except (ValueError, EOFError, OSError, MemoryError) as error:
        raise InputError(path, f"unreadable or truncated ({error})", stage) from None


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
