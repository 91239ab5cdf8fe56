"""plots stage: the assignment's figures (2.1, 2.7, 2.9) and a few better ones, as PNG.

Reads only what earlier stages wrote (images, history, predictions, metrics), so a
changed plot setting reruns this stage alone (cifar10/figures.py draws them).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cifar10.archive import CLASS_NAMES
from cifar10.atomic import atomic_outputs
from cifar10.figures import render_figures
from cifar10.params import read_params
from cifar10.prepared import read_split
from cifar10.reports import read_history, read_metrics, read_predictions


def run_summary(metrics: dict, figures: Path, count: int) -> str:
    """Write the lines that end a run (the last stage): what it got, where to look."""
    validation, test = metrics["validation"], metrics["test"]
    return (
        f"wrote {count} figures to {figures}\n"
        f"kept model (epoch {validation['epoch']}): validation accuracy "
        f"{validation['accuracy']:.4f}, test accuracy {test['accuracy']:.4f}\n"
        "see them all: dvc plots show (then open dvc_plots/index.html); "
        "compare runs: dvc exp show (README.md, Everyday use)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Render every figure into the output folder."""
    parser = argparse.ArgumentParser(prog="python -m stages plots", description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True, help="train history JSON")
    parser.add_argument("--predictions", type=Path, required=True, help="predictions CSV")
    parser.add_argument("--metrics", type=Path, required=True, help="evaluate's metrics JSON")
    parser.add_argument("--output", type=Path, required=True, help="figures folder")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.plots

    metrics = read_metrics(arguments.metrics)
    test = read_split(arguments.prepared, "test")
    figures = render_figures(
        read_split(arguments.prepared, "train"),
        test,
        predictions=read_predictions(arguments.predictions, len(test.labels)),
        history=read_history(arguments.history),
        best_epoch=metrics["validation"]["epoch"],
        class_names=CLASS_NAMES,
        params=params,
        label_smoothing=params_file.params.train.label_smoothing,
    )
    with atomic_outputs(arguments.output, before_commit=params_file.check_unchanged) as (folder,):
        folder.mkdir()
        for name, figure in figures.items():
            # No date in the PNG metadata: the same inputs give the same bytes.
            figure.savefig(folder / name, dpi=params.dpi, metadata={"Software": None})
    print(run_summary(metrics, arguments.output, len(figures)))
