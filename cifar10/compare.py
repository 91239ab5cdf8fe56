"""Compare two experiments' validation accuracy, paired over images and seeds.

``cifar10-compare A B`` reads, at each revision (a git revision, a `dvc exp` name, or
``workspace``), the validation predictions of every seed that the aggregate stage wrote
(cached by DVC, so no run is needed), and prints the difference A - B with its 95 %
intervals and a verdict: "A is better", "B is better", or "not distinguishable at N
seeds" with how many seeds would resolve it (cifar10/uncertainty.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import dvc.api
import numpy as np
from dvc.exceptions import DvcException
from ruamel.yaml import YAML, YAMLError

from cifar10.errors import PipelineError
from cifar10.reports import parse_validation_predictions
from cifar10.uncertainty import Run, compare_runs

WORKSPACE = "workspace"  # DVC's name for the working tree, as in `dvc exp show`
PIPELINE = "dvc.yaml"
PREDICTIONS_VARIABLE = "validation_predictions"  # dvc.yaml's name for the aggregate's table


def read_at(path: str, revision: str) -> bytes:
    """Return a file's bytes at ``revision`` (git-tracked or DVC-cached); one line if not."""
    try:
        return dvc.api.read(path, rev=None if revision == WORKSPACE else revision, mode="rb")
    except (DvcException, OSError) as error:
        raise PipelineError(f"{revision}: cannot read {path}: {error}") from None


def predictions_path(revision: str) -> str:
    """Return where ``revision``'s dvc.yaml puts the aggregate's validation predictions."""
    try:
        pipeline = YAML(typ="safe").load(read_at(PIPELINE, revision))
        for variables in pipeline.get("vars", []):
            if isinstance(variables, dict) and PREDICTIONS_VARIABLE in variables:
                return str(variables[PREDICTIONS_VARIABLE])
    except (YAMLError, AttributeError):
        pass
    raise PipelineError(
        f"{revision}: its {PIPELINE} names no {PREDICTIONS_VARIABLE} (a revision from before "
        "the aggregate stage); run the pipeline on it first"
    )


def load_run(revision: str) -> tuple[Run, np.ndarray]:
    """Return ``revision``'s per-seed validation correctness and its validation labels."""
    path = predictions_path(revision)
    labels, correct = parse_validation_predictions(
        read_at(path, revision), Path(f"{revision}:{path}")
    )
    return Run(revision, correct), labels


def main(argv: Sequence[str] | None = None) -> None:
    """Print the paired comparison of two revisions' validation accuracies."""
    parser = argparse.ArgumentParser(prog="cifar10-compare", description=__doc__)
    parser.add_argument("first", help="a git revision, a dvc exp name, or workspace")
    parser.add_argument("second", help="the revision to compare it with")
    arguments = parser.parse_args(argv)
    first, first_labels = load_run(arguments.first)
    second, second_labels = load_run(arguments.second)
    if not np.array_equal(first_labels, second_labels):
        raise PipelineError(
            f"{arguments.first} and {arguments.second} were validated on different images "
            "(other prepare params or archive): a paired comparison needs the same split"
        )
    print(compare_runs(first, second).report(arguments.first, arguments.second))
