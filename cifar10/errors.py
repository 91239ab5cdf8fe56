"""The errors the pipeline expects, each reported as one ``error:`` line naming what to do."""

from __future__ import annotations

import errno
from pathlib import Path

# What a user's machine can do to a read or a write, and what to do about it.
MACHINE_FAULTS = {
    errno.ENOSPC: "free space on that disk, then run again",
    errno.EDQUOT: "free space within your disk quota, then run again",
    errno.EFBIG: "the file system or `ulimit -f` caps file sizes; raise the limit, then run again",
    errno.EROFS: "the file system is read-only; make it writable, then run again",
    errno.EIO: "the disk or network file system failed; check it, then run again",
}


class PipelineError(Exception):
    """An expected failure (bad input, bad params, a failed check) reported in one line."""


def one_line(text: object) -> str:
    """Join the lines of a message (a library's error, say) into one."""
    return " ".join(str(text).split())


class InputError(PipelineError):
    """A file a stage reads is missing or not in its format.

    ``stage`` is the stage of dvc.yaml that writes the file, which the message says to
    run again; None for a file the user named, which no stage writes.
    """

    def __init__(self, path: Path, problem: str = "missing", stage: str | None = None) -> None:
        message = f"{path}: {one_line(problem)}"
        if stage is not None:
            message += f"; run `dvc repro {stage}` to write it again"
        super().__init__(message)
        self.path = path


def machine_fault(error: BaseException, writing: str | None = None) -> str | None:
    """One line for an OSError a machine causes (a full disk, say); None for any other.

    It names the error's file, else ``writing`` (what was being written), and what to do.
    """
    if not isinstance(error, OSError) or error.errno not in MACHINE_FAULTS:
        return None
    where = error.filename if error.filename is not None else writing
    reason = error.strerror or errno.errorcode[error.errno]
    line = f"{reason}; {MACHINE_FAULTS[error.errno]}"
    return f"{where}: {line}" if where else line


class OutputError(PipelineError):
    """A machine fault while a stage wrote its outputs (cifar10/atomic.py)."""


class ParamsError(PipelineError):
    """params.yaml is missing, unreadable or does not fit its schema (cifar10/params.py)."""
