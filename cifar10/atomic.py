"""Write a stage's outputs atomically, all together: temporary names first, then renames.

Every output is written under a temporary name beside its target. Only when all of
them are complete are they renamed into place, the old versions first moved aside
and restored if any rename fails; so a stage's outputs change together or not at all,
and a crash, an error or Ctrl-C never leaves a file or folder that looks complete.
Temporary names carry the writing process's id: leftovers of a killed run are removed
when the stage runs again, while those of a run still going are left to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from cifar10.errors import OutputError, machine_fault

_TEMPORARY = ".tmp-"
_PREVIOUS = ".old-"


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}{kind}{os.getpid()}-{secrets.token_hex(4)}")


def _writer_is_alive(path: Path, prefix: str) -> bool:
    """Whether the process whose id the temporary ``path`` carries is still running."""
    pid = path.name.removeprefix(prefix).partition("-")[0]
    if not pid.isdigit():
        return False  # a name this module did not make: a leftover
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what interrupted writes of ``target`` left beside it; return those paths.

    Temporary paths of a process that is still running (another run of the same
    stage, writing now) are not leftovers and stay.
    """
    if not target.parent.is_dir():
        return []
    leftovers = [
        path
        for kind in (_TEMPORARY, _PREVIOUS)
        for path in target.parent.glob(f".{target.name}{kind}*")
        if not _writer_is_alive(path, f".{target.name}{kind}")
    ]
    for path in leftovers:
        _remove(path)
    return leftovers


def _commit(staged: dict[Path, Path]) -> None:
    """Rename every temporary path onto its target, restoring the old ones on failure."""
    moved_aside: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for target in staged:
            if target.exists() or target.is_symlink():
                previous = _sibling(target, _PREVIOUS)
                target.rename(previous)
                moved_aside[target] = previous
        for target, temporary in staged.items():
            temporary.rename(target)
            placed.append(target)
    except BaseException:
        for target in placed:
            _remove(target)
        for target, previous in moved_aside.items():
            previous.rename(target)
        raise
    for previous in moved_aside.values():
        _remove(previous)


def _check_written(staged: dict[Path, Path]) -> None:
    unwritten = [str(target) for target, temporary in staged.items() if not temporary.exists()]
    if unwritten:
        raise RuntimeError(f"outputs were not written: {', '.join(unwritten)}")


@contextlib.contextmanager
def atomic_outputs(
    *targets: Path, before_commit: Callable[[], None] | None = None
) -> Iterator[tuple[Path, ...]]:
    """Yield one temporary path per target (not yet created); put them all in place on success.

    The caller creates each temporary path as a file or a folder. ``before_commit``
    runs once they are all written, before any is renamed: its exception (an input
    that changed meanwhile, say) keeps them out. On any exception, every temporary
    path is removed and the targets are left as they were.
    """
    if len(set(targets)) != len(targets):
        raise ValueError(f"each output must be named once: {[str(path) for path in targets]}")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target)
    staged = {target: _sibling(target, _TEMPORARY) for target in targets}
    try:
        yield tuple(staged.values())
        _check_written(staged)
        if before_commit is not None:
            before_commit()
        _commit(staged)
    except BaseException as error:
        for temporary in staged.values():
            _remove(temporary)
        # A full disk (say) fails a write() or close() with no file name: name the outputs.
        fault = machine_fault(error, f"writing {', '.join(map(str, targets))}")
        if fault is not None and getattr(error, "filename", None) is None:
            raise OutputError(fault) from error
        raise


def json_text(data: object) -> str:
    """Indented JSON with a trailing newline, as every report of the pipeline is written."""
    return json.dumps(data, indent=2) + "\n"
