"""What every stage's command line shares: expected errors end in one line, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class StageError(Exception):
    """An expected failure (bad input, bad params, failed check) reported in one line."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); print a StageError as ``error: ...`` and exit with status 1."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        main()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
