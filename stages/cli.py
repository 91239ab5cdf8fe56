"""What every stage's command line shares: one ``error:`` line per fault, never a traceback.

Expected faults (bad params, bad or missing inputs, failed checks, an unwritable
output folder, Ctrl-C) end the stage with a single line that names the file or key
and what to do. Inputs that an earlier stage writes are read through the helpers here,
so a missing or damaged one says which stage to run again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from stages.start import INTERRUPTED_STATUS, restore_interrupt


class StageError(Exception):
    """An expected failure (bad input, bad params, failed check) reported in one line."""


# The JSON files stages write (summaries, histories, metrics) are kilobytes.
MAX_JSON_BYTES = 16 << 20


def one_line(text: object) -> str:
    """Join the lines of a message (a library's error, say) into one."""
    return " ".join(str(text).split())


def upstream_error(path: Path, stage: str | None, problem: str = "missing") -> StageError:
    """Build the error for an input, written by ``stage``, that is missing or damaged.

    ``stage`` None: a file the user named, which no stage of the pipeline wrote for it.
    """
    problem = one_line(problem)
    if stage is None:
        return StageError(f"{path}: {problem}")
    return StageError(f"{path}: {problem}; run `dvc repro {stage}` to write it again")


def regular_file_size(path: Path, stage: str | None) -> int:
    """Return the size of a file that ``stage`` writes; refuse it missing or not a plain file.

    A device or a pipe could be read forever.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise upstream_error(path, stage) from None
    if not stat.S_ISREG(status.st_mode):
        raise upstream_error(path, stage, "not a regular file")
    return status.st_size


def read_small_file(path: Path, max_bytes: int, stage: str | None) -> bytes:
    """Read a plain file that ``stage`` writes, refusing it unread if over ``max_bytes``."""
    size = regular_file_size(path, stage)
    if size > max_bytes:
        raise upstream_error(path, stage, f"{size:,} bytes, more than the {max_bytes:,} it can be")
    return path.read_bytes()


def read_json(path: Path, stage: str) -> dict:
    """Read a JSON object that ``stage`` writes."""
    try:
        content = json.loads(read_small_file(path, MAX_JSON_BYTES, stage))
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, too deeply nested
        raise upstream_error(path, stage, f"not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise upstream_error(path, stage, f"expected a JSON object, got {type(content).__name__}")
    return content


def outputs_removed_by_dvc(environ: Mapping[str, str]) -> str:
    """Say what DVC removed before the stage ran and how to put it back ("" if nothing).

    Under ``dvc repro`` or ``dvc exp run`` only; a stage run by itself gets "".
    DVC deletes a stage's outputs before running its command. Every output of this
    pipeline is in DVC's cache, and dvc.lock records the versions of the last run
    until a run succeeds, so ``dvc checkout <stage>`` restores them.
    """
    stage = environ.get("DVC_STAGE")
    if not stage:
        return ""
    root = Path(environ.get("DVC_ROOT", "."))
    try:
        recorded = YAML(typ="safe").load((root / "dvc.lock").read_text())["stages"][stage]["outs"]
        paths = [str(output["path"]) for output in recorded]
    except (OSError, YAMLError, KeyError, TypeError):
        return ""  # no run of this stage recorded: nothing to put back
    removed = [path for path in paths if not (root / path).exists()]
    if not removed:
        return ""
    return (
        f"DVC removed {', '.join(removed)} before running {stage}; "
        f"`dvc checkout {stage}` puts back the versions dvc.lock records"
    )


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main()``, turning expected faults into ``error: ...`` and status 1.

    Ctrl-C ends with status 130; the atomic writers have removed what was half-written.
    Under DVC, a last line says which outputs DVC removed and how to restore them.
    """
    # Libraries' own INFO chatter (JAX probing for TPUs, say) stays out; the stages' in.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("stages").setLevel(logging.INFO)
    restore_interrupt()
    try:
        main()
    except StageError as error:
        _fail(str(error), status=1)
    except KeyboardInterrupt:
        _fail("interrupted", status=INTERRUPTED_STATUS)
    except OSError as error:
        if error.filename is None:  # not about a file: unexpected
            _fail_unexpectedly()
        _fail(f"{error.filename}: {error.strerror or error}", status=1)
    except Exception:
        _fail_unexpectedly()


def _fail_unexpectedly() -> None:
    """Print the traceback of the exception being handled (a bug), then what DVC removed."""
    traceback.print_exc()
    removed = outputs_removed_by_dvc(os.environ)
    if removed:
        print(f"error: {removed}", file=sys.stderr)
    sys.exit(1)


def _fail(message: str, status: int) -> None:
    """Print ``message`` as ``error:`` lines, then what DVC removed, if anything; exit."""
    removed = outputs_removed_by_dvc(os.environ)
    if status == INTERRUPTED_STATUS and not removed:
        message += "; no output was changed"
    for line in message.splitlines():
        print(f"error: {line}", file=sys.stderr)
    if removed:
        print(f"error: {removed}", file=sys.stderr)
    sys.exit(status)
