"""What every stage's command line shares: one ``error:`` line per fault, never a traceback.

Expected faults (bad params, bad or missing inputs, failed checks, an unwritable
output folder, Ctrl-C) end the stage with a single line that names the file or key
and what to do. Inputs that an earlier stage writes are read through the helpers here,
so a missing or damaged one says which stage to run again.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from stages.interrupt import INTERRUPTED_STATUS, restore_interrupt


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


# What native libraries print at start-up that a user has no use for: TensorFlow's and
# XLA's banners, printed before their logging can be configured.
START_UP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "Unable to register cu",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
)


def quiet_logs() -> None:
    """Keep only what a user needs from the libraries' start-up chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextlib.contextmanager
def quiet_native_start_up() -> Iterator[None]:
    """Hold back what native code writes to stderr in the block; pass on all but START_UP_NOISE.

    Those banners go straight to file descriptor 2, around Python's sys.stderr and
    before any log level applies, so the descriptor itself is redirected meanwhile.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines():
                if not any(noise in line for noise in START_UP_NOISE):
                    print(line, file=sys.stderr)


class _Hidden(importlib.abc.MetaPathFinder):
    """An import hook under which some top-level packages look uninstalled."""

    def __init__(self, packages: frozenset[str]) -> None:
        self.packages = packages

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,  # noqa: ARG002 - the finder protocol's arguments
        target: object = None,  # noqa: ARG002
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.packages:
            raise ModuleNotFoundError(f"No module named {fullname!r} here", name=fullname)
        return None


def keep_unloaded(packages: Iterable[str]) -> None:
    """Make ``packages`` look uninstalled to this process (those not loaded already).

    Keras and TensorFlow import every optional companion that is installed (the
    scikit-learn wrappers, pandas and matplotlib utilities, JAX), seconds of start-up
    for features a stage never uses. A stage's command line calls this before importing
    them; library use (tests) is left as it is.
    """
    hidden = frozenset(package for package in packages if package not in sys.modules)
    if hidden:
        sys.meta_path.insert(0, _Hidden(hidden))


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


def run_stage(main: Callable[[], None], *, skip_teardown: bool = False) -> None:
    """Run a stage's ``main()``, turning expected faults into ``error: ...`` and status 1.

    Ctrl-C ends with status 130; the atomic writers have removed what was half-written.
    Under DVC, a last line says which outputs DVC removed and how to restore them.
    ``skip_teardown``: once ``main()`` has succeeded (its outputs renamed into place),
    end the process at once, without the interpreter's teardown of native libraries,
    which takes TensorFlow 0.7 s and changes nothing on disk.
    """
    # Libraries' own INFO chatter (JAX probing for TPUs, say) stays out; the stages' in.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("stages").setLevel(logging.INFO)
    quiet_logs()
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
    if skip_teardown:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
