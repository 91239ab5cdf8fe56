"""aggregate stage: every seed's results in one place, with their uncertainty.

For the seeds of train.seeds, it writes the metrics people sort experiments by (each
accuracy's mean over the seeds, standard deviation, n and 95 % interval:
cifar10/uncertainty.py), what the trainings cost, every seed's per-epoch curves, and
every validation image's prediction by each seed (what `cifar10-compare` pairs).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from cifar10.archive import CLASS_NAMES
from cifar10.atomic import atomic_outputs
from cifar10.errors import InputError
from cifar10.params import read_params
from cifar10.reports import (
    SeedReports,
    read_cost,
    read_history,
    read_metrics,
    read_predictions,
    write_aggregate,
    write_curves,
    write_validation_predictions,
)
from cifar10.uncertainty import accuracy_interval, seed_spread


def accuracy_summary(accuracies: list[float], images: int) -> dict[str, object]:
    """Return the accuracy's mean over seeds, their spread, n and 95 % interval (and its kind)."""
    interval = accuracy_interval(accuracies, images)
    return {
        "accuracy": round(interval.mean, 6),
        "std": round(seed_spread(accuracies), 6),
        "low": round(interval.low, 6),
        "high": round(interval.high, 6),
        "n": len(accuracies),
        "interval": interval.method,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Aggregate the seeds' reports into the metrics, cost, curves and predictions."""
    parser = argparse.ArgumentParser(prog="python -m stages aggregate", description=__doc__)
    parser.add_argument("--seeds", type=Path, required=True, help="the seeds' report folder")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--cost", type=Path, required=True, help="cost JSON to write")
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV to write")
    parser.add_argument(
        "--validation-predictions", type=Path, required=True, help="predictions CSV to write"
    )
    arguments = parser.parse_args(argv)
    params_file = read_params()
    seeds = params_file.params.train.seeds

    reports = [SeedReports(arguments.seeds, seed) for seed in seeds]
    metrics = [read_metrics(report.evaluation.metrics) for report in reports]
    costs = [read_cost(report.cost) for report in reports]
    histories = {report.seed: read_history(report.train.history) for report in reports}
    predictions = [read_predictions(report.evaluation.validation_predictions) for report in reports]
    actual = predictions[0]["actual"]
    for report, table in zip(reports[1:], predictions[1:], strict=True):
        if not table["actual"].equals(actual):
            raise InputError(
                report.evaluation.validation_predictions,
                f"its validation labels differ from seed {seeds[0]}'s: evaluated on another split",
                "evaluate",
            )
    classes = {name: index for index, name in enumerate(CLASS_NAMES)}
    validation_images, test_images = len(actual), metrics[0]["test"]["images"]
    aggregate = {
        "validation": accuracy_summary(
            [seed_metrics["validation"]["accuracy"] for seed_metrics in metrics], validation_images
        ),
        "test": accuracy_summary(
            [seed_metrics["test"]["accuracy"] for seed_metrics in metrics], test_images
        )
        | {
            name: round(statistics.fmean(seed_metrics["test"][name] for seed_metrics in metrics), 6)
            for name in ("loss", "macro_f1")
        },
    }
    cost = {
        "fit_seconds": round(sum(seed_cost["fit_seconds"] for seed_cost in costs), 1),
        "wall_seconds": round(sum(seed_cost["wall_seconds"] for seed_cost in costs), 1),
        "peak_memory_mib": max(seed_cost["peak_memory_mib"] for seed_cost in costs),
        "samples_per_second": round(
            statistics.fmean(seed_cost["samples_per_second"] for seed_cost in costs), 1
        ),
        "trainings": len(costs),
    }
    outputs = (
        arguments.metrics,
        arguments.cost,
        arguments.curves,
        arguments.validation_predictions,
    )
    with atomic_outputs(*outputs, before_commit=params_file.check_unchanged) as staged:
        metrics_file, cost_file, curves_file, predictions_file = staged
        write_aggregate(metrics_file, aggregate)
        write_aggregate(cost_file, cost)
        write_curves(curves_file, histories)
        write_validation_predictions(
            predictions_file,
            actual.map(classes).to_numpy(),
            {
                seed: table["predicted"].map(classes).to_numpy()
                for seed, table in zip(seeds, predictions, strict=True)
            },
        )
    validation = aggregate["validation"]
    print(
        f"validation accuracy {validation['accuracy']:.4f} "
        f"[{validation['low']:.4f}, {validation['high']:.4f}] ({validation['interval']}); "
        f"{cost['trainings']} trainings, {cost['fit_seconds']:.1f} s of fit"
    )
