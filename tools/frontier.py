"""The speed and accuracy frontier of a DVC sweep: validation accuracy against repro seconds.

For each setting of the params given (``train.epochs``, say), over its experiments and
their seeds: the mean validation accuracy (``dvc exp show --json``) and the seconds a
one-seed ``dvc repro`` from nothing would take with it: the seconds such a repro spends
outside the train stage's ``fit`` (``--outside-fit``, measured by benchmarks/run.py),
plus the mean ``fit`` seconds of one training, from the cost each experiment recorded
(``reports/cost.json``). Written as a TSV that ``dvc plots show`` draws:

    python -m tools.frontier train.epochs --outside-fit 28.4 --output benchmarks/frontier.tsv
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from tools.sweep_table import finished_experiments, param


def frontier(shown: list[dict], keys: Sequence[str], outside_fit: float) -> list[dict[str, object]]:
    """One row per setting of ``keys``: seeds, mean validation accuracy, repro seconds."""
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for experiment in finished_experiments(shown):
        setting = tuple(param(experiment.params, key) for key in keys)
        cost = experiment.cost
        fit = cost["fit_seconds"] / cost["trainings"] if cost else None
        for _ in experiment.params["train"]["seeds"]:
            groups[setting].append((experiment.metrics["validation"]["accuracy"], fit))
    rows = []
    for setting, runs in sorted(groups.items()):
        accuracies = [accuracy for accuracy, _ in runs]
        fits = [fit for _, fit in runs if fit is not None]
        rows.append({
            **dict(zip(keys, setting, strict=True)),
            "seeds": len(runs),
            "validation_accuracy": round(statistics.fmean(accuracies), 4),
            "repro_seconds": round(outside_fit + statistics.fmean(fits), 1) if fits else None,
        })  # fmt: skip
    return [row for row in rows if row["repro_seconds"] is not None]


def main() -> None:
    """Write the frontier of this repository's experiments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("keys", nargs="+", help="params to group by, as section.key")
    parser.add_argument("--outside-fit", type=float, required=True, help="seconds")
    parser.add_argument("--output", type=Path, required=True, help="TSV to write")
    arguments = parser.parse_args()
    shown = json.loads(
        subprocess.run(
            ["dvc", "exp", "show", "--all-commits", "--json"],  # noqa: S607 - the venv's dvc
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    rows = frontier(shown, arguments.keys, arguments.outside_fit)
    with arguments.output.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} settings to {arguments.output}")


if __name__ == "__main__":
    main()
