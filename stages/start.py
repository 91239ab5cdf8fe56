"""What a stage's command line does first, before its libraries load.

A stage module imports its libraries (NumPy, scikit-learn, Keras: up to seconds) at its
top, before ``run_stage`` is called to catch anything, and some libraries read their
settings from the environment when they load. So a stage's command line calls
:func:`start_command` before those imports: a Ctrl-C meanwhile is the same one
``error:`` line as later (Python's documented way to act on a signal is a handler;
``run_stage`` hands Ctrl-C back to Python's own once the imports are done), and the
libraries get the settings of :func:`library_settings` unless the user set them. This
module loads at once: it imports little beyond the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import platformdirs

INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report an interrupted command


def interrupted_at_start_up(environ: Mapping[str, str]) -> str:
    """Say, for a Ctrl-C before the stage did anything, what changed and what to do.

    Under ``dvc repro`` (DVC_STAGE is set), DVC has removed the stage's outputs already;
    run_stage names them later on, but reading dvc.lock here would import a YAML parser
    in the middle of the imports that were interrupted.
    """
    stage = environ.get("DVC_STAGE")
    if stage:
        return (
            f"error: interrupted; DVC removed the outputs of {stage} before running it: "
            f"`dvc checkout {stage}` puts back the versions dvc.lock records"
        )
    return "error: interrupted; no output was changed"


def _exit_interrupted(signal_number: int, frame: FrameType | None) -> None:  # noqa: ARG001
    print(interrupted_at_start_up(os.environ), file=sys.stderr)
    # SystemExit unwinds the imports under way and ends quietly, with this status.
    raise SystemExit(INTERRUPTED_STATUS)


def library_settings(cache_root: Path) -> dict[str, str]:
    """Return the environment the libraries read as they load, as the pipeline wants them.

    Each is the library's own documented variable; ``cache_root`` is the user's cache
    directory (``platformdirs.user_cache_dir``).
    """
    return {
        # TensorFlow's C++ INFO and WARNING logs stay out.
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # On a GPU, JAX takes the memory it needs rather than 75 % of the card, so the
        # card can be shared (two experiments at once, say).
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        # JAX's persistent compilation cache: an experiment of the same shapes reuses the
        # compiled training step instead of compiling it again. In the user's cache
        # directory, not the repository's: queued experiments run in copies of it.
        "JAX_COMPILATION_CACHE_DIR": str(cache_root / "jax-compilation"),
        # Cache every compilation: on a CPU each takes well under JAX's default 1 s.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def start_command() -> None:
    """Handle Ctrl-C until :func:`restore_interrupt` and set the libraries' environment.

    Until then, Ctrl-C ends the process with the one line and status 130.
    Nothing is written while a stage starts, so nothing needs removing. Ctrl-C stays
    as it is when it is ignored (a background job) or handled by someone else. Of
    :func:`library_settings`, what the user has set stays as they set it.
    """
    cache_root = Path(platformdirs.user_cache_dir("cifar10-dvc-pipeline"))
    for name, value in library_settings(cache_root).items():
        os.environ.setdefault(name, value)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def restore_interrupt() -> None:
    """Let Ctrl-C raise KeyboardInterrupt again, as Python's default handler does."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
