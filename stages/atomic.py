"""Write outputs atomically: to a temporary name beside the target, then rename.

A crash or a failed check never leaves a file or folder that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it onto ``target`` on success.

    On any exception the temporary file or folder is removed and ``target`` is left as
    it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if directory:
        temporary = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(handle)
        temporary = Path(name)
    try:
        yield temporary
        if directory and target.exists():
            shutil.rmtree(target)
        temporary.chmod(0o755 if directory else 0o644)
        temporary.replace(target)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> None:
    """Atomically write ``text`` to ``target``."""
    with atomic_path(target) as temporary:
        temporary.write_text(text)


def write_json(target: Path, data: object) -> None:
    """Atomically write ``data`` as indented JSON with a trailing newline."""
    write_text(target, json.dumps(data, indent=2) + "\n")
