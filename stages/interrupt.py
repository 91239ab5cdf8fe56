"""Ctrl-C while a stage starts: the same one ``error:`` line as later, never a traceback.

A stage module imports its libraries (NumPy, scikit-learn, pandas: up to seconds) at its
top, before ``run_stage`` is called to catch anything, so a Ctrl-C meanwhile would end in
a traceback from inside some library. A stage's command line therefore calls
:func:`exit_quietly_on_interrupt` first, before those imports, and ``run_stage`` hands
Ctrl-C back to Python's own handler (KeyboardInterrupt, which it catches and which the
atomic writers clean up after) once they are done. Python's documented way to act on a
signal is a handler (the signal module), and this module imports nothing but the
standard library, so it loads at once.
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


def exit_quietly_on_interrupt() -> None:
    """Until :func:`restore_interrupt`, end on Ctrl-C with the one line and status 130.

    Nothing is written while a stage starts, so nothing needs removing. Ctrl-C stays
    as it is when it is ignored (a background job) or handled by someone else.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_interrupted)


def restore_interrupt() -> None:
    """Let Ctrl-C raise KeyboardInterrupt again, as Python's default handler does."""
    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
