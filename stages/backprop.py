"""backprop stage: Part 1's numpy gradients, checked three ways (cifar10/backprop.py).

Against the assignment's printed values, central finite differences and JAX's
autodiff; every comparison must stay within its tolerance in params.yaml, or nothing is
written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cifar10.atomic import atomic_outputs, json_text
from cifar10.backprop import failures, loss_table, report, summary, verify
from cifar10.errors import PipelineError
from cifar10.params import read_params


def main(argv: Sequence[str] | None = None) -> None:
    """Verify the backward pass; write the report and loss plot only if every check passes."""
    parser = argparse.ArgumentParser(prog="python -m stages backprop", description=__doc__)
    parser.add_argument("--report", type=Path, required=True, help="backprop.json report")
    parser.add_argument("--loss-plot", type=Path, required=True, help="descent loss.tsv plot")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.backprop

    verification = verify(params)
    problems = failures(verification, params)
    if problems:
        raise PipelineError("; ".join(problems))
    with atomic_outputs(
        arguments.report, arguments.loss_plot, before_commit=params_file.check_unchanged
    ) as (report_file, loss_file):
        report_file.write_text(json_text(report(verification, params)))
        loss_file.write_text(loss_table(verification.descent_losses))
    print(summary(verification, params))
