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

import signal
import sys
from types import FrameType

INTERRUPTED_MESSAGE = "error: interrupted; no output was changed"
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report an interrupted command


def _exit_interrupted(signal_number: int, frame: FrameType | None) -> None:  # noqa: ARG001
    print(INTERRUPTED_MESSAGE, file=sys.stderr)
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
