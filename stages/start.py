"""What a stage's command line does first, before its libraries load.

A stage module imports its libraries (NumPy, scikit-learn, Keras: up to seconds) at its
top, before ``run_stage`` is called to catch anything, and some libraries read their
settings when they load. So a stage's command line calls :func:`start_command` before
those imports: a Ctrl-C meanwhile is the same one ``error:`` line as later (Python's
documented way to act on a signal is a handler; ``run_stage`` hands Ctrl-C back to
Python's own once the imports are done), and TensorFlow's C++ INFO and WARNING logs stay
out (its documented TF_CPP_MIN_LOG_LEVEL, unless the user set it). This module imports
nothing but the standard library, so it loads at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType

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


def start_command() -> None:
    """Handle Ctrl-C until :func:`restore_interrupt` and keep TensorFlow's C++ logs quiet.

    Until then, Ctrl-C ends the process with the one line and status 130.
    Nothing is written while a stage starts, so nothing needs removing. Ctrl-C stays
    as it is when it is ignored (a background job) or handled by someone else.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def restore_interrupt() -> None:
    """Let Ctrl-C raise KeyboardInterrupt again, as Python's default handler does."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
