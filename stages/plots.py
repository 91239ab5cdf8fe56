"""plots stage: the assignment's figures (2.1, 2.7, 2.9) and a few better ones, as PNG.

Reads only what earlier stages wrote (images; the first seed's history, predictions and
metrics: its model is the kept one; the metrics over all seeds), so a changed plot
setting reruns this stage alone (cifar10/figures.py draws them).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cifar10.archive import CLASS_NAMES
from cifar10.atomic import atomic_outputs
from cifar10.figures import MAX_FIGURE_PIXELS, drawing_dpi, render_figures
from cifar10.params import read_params
from cifar10.prepared import read_split
from cifar10.reports import (
    EvaluationReports,
    TrainReports,
    read_aggregate,
    read_history,
    read_metrics,
    read_predictions,
)


def run_summary(aggregate: dict, kept: dict, seed: int, figures: Path, count: int) -> str:
    """Write the lines that end a run (the last stage): what it got, where to look."""
    validation, test = aggregate["validation"], aggregate["test"]
    return (
        f"wrote {count} figures to {figures}\n"
        f"validation accuracy {validation['accuracy']:.4f} "
        f"[{validation['low']:.4f}, {validation['high']:.4f}] ({validation['interval']}), "
        f"test accuracy {test['accuracy']:.4f} [{test['low']:.4f}, {test['high']:.4f}] "
        f"({test['interval']})\nkept model: seed {seed}, epoch {kept['validation']['epoch']}\n"
        "see them all: dvc plots show (then open dvc_plots/index.html); "
        "compare runs: dvc exp show, cifar10-compare (README.md, Everyday use)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Render every figure into the output folder."""
    parser = argparse.ArgumentParser(prog="python -m stages plots", description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument(
        "--train-reports", type=Path, required=True, help="the first seed's train reports"
    )
    parser.add_argument(
        "--evaluation", type=Path, required=True, help="the first seed's evaluate reports"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="the aggregate metrics JSON")
    parser.add_argument("--output", type=Path, required=True, help="figures folder")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.plots

    evaluation = EvaluationReports(arguments.evaluation)
    kept = read_metrics(evaluation.metrics)
    aggregate = read_aggregate(arguments.metrics)
    test = read_split(arguments.prepared, "test")
    figures = render_figures(
        read_split(arguments.prepared, "train"),
        test,
        predictions=read_predictions(evaluation.test_predictions, len(test.labels)),
        history=read_history(TrainReports(arguments.train_reports).history),
        best_epoch=kept["validation"]["epoch"],
        class_names=CLASS_NAMES,
        params=params,
        label_smoothing=params_file.params.train.label_smoothing,
    )
    with atomic_outputs(arguments.output, before_commit=params_file.check_unchanged) as (folder,):
        folder.mkdir()
        for name, figure in figures.items():
            dpi = drawing_dpi(figure, params.dpi)
            if dpi < params.dpi:
                print(
                    f"{name}: drawn at {dpi} dpi, not plots.dpi = {params.dpi}: a figure has "
                    f"at most {MAX_FIGURE_PIXELS:,} pixels"
                )
            # No date in the PNG metadata: the same inputs give the same bytes.
            figure.savefig(folder / name, dpi=dpi, metadata={"Software": None})
    seed = params_file.params.train.seeds[0]
    print(run_summary(aggregate, kept, seed, arguments.output, len(figures)))
