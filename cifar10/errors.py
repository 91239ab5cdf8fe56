"""The errors the pipeline expects, each reported as one ``error:`` line naming what to do."""

from __future__ import annotations

from pathlib import Path


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


class ParamsError(PipelineError):
    """params.yaml is missing, unreadable or does not fit its schema (cifar10/params.py)."""
