"""Summarize a DVC sweep: each setting's validation accuracy with its interval, the best marked.

Reads ``dvc exp show --json`` (every finished experiment, of every commit), one row per
experiment: the params given, its seeds (train.seeds), the mean validation accuracy
over them with its 95 % interval (the aggregate stage's), and what its trainings cost.
The best mean is marked ``best``; every experiment that the paired comparison
(cifar10-compare, over the same images and seeds) cannot tell from it is marked ``~``;
an unmarked one is worse. Each experiment's predictions are read from DVC's cache:

    python -m tools.sweep_table train.batch_size train.learning_rate
    python -m tools.sweep_table train.weight_decay --where train.batch_size=512
    python -m tools.sweep_table train.epochs --rev HEAD   # experiments on one commit only
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cifar10.compare import load_run
from cifar10.uncertainty import Run, compare_runs

METRICS_FILE = "reports/metrics.json"
COST_FILE = "reports/cost.json"


@dataclass(frozen=True)
class Experiment:
    """A finished experiment as `dvc exp show` records it."""

    name: str
    rev: str
    params: dict
    metrics: dict
    cost: dict


def finished_experiments(shown: list[dict]) -> Iterator[Experiment]:
    """Yield each experiment that ran to the end."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                metrics = data.get("metrics") or {}
                accuracy = metrics.get(METRICS_FILE, {}).get("data")
                # Queued and running experiments show as "workspace", with no timestamp.
                if accuracy and data.get("timestamp") and data.get("rev") != "workspace":
                    yield Experiment(
                        name=revision.get("name") or data["rev"][:7],
                        rev=data["rev"],
                        params=data["params"]["params.yaml"]["data"],
                        metrics=accuracy,
                        cost=metrics.get(COST_FILE, {}).get("data") or {},
                    )


def param(params: dict, key: str) -> object:
    """Look up a dotted key (``train.batch_size``) in nested params."""
    section, name = key.split(".", 1)
    return params[section][name]


def order(value: object) -> tuple[bool, float | str]:
    """Sort numbers by value, before anything else by its text."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return (not number, value if number else str(value))


def sweep_table(
    shown: list[dict],
    keys: Sequence[str],
    where: dict[str, str],
    load: Callable[[str], Run],
) -> list[str]:
    """One line per experiment: its setting, seeds, accuracy with interval, cost, mark.

    ``load`` gives an experiment's per-seed validation correctness from its revision.
    """
    chosen = [
        experiment
        for experiment in finished_experiments(shown)
        if all(str(param(experiment.params, key)) == value for key, value in where.items())
    ]
    header = [*keys, "seeds", "validation accuracy [95 % interval]", "fit s", "", "experiment"]
    lines = [" | ".join(header)]
    if not chosen:
        return lines
    best = max(chosen, key=lambda experiment: experiment.metrics["validation"]["accuracy"])
    best_run = load(best.rev)
    for experiment in sorted(
        chosen, key=lambda item: [order(param(item.params, key)) for key in keys]
    ):
        validation = experiment.metrics["validation"]
        if experiment is best:
            mark = "best"
        else:
            verdict = compare_runs(best_run, load(experiment.rev)).verdict
            mark = "~" if verdict.startswith("not distinguishable") else ""
        cells = [
            *(str(param(experiment.params, key)) for key in keys),
            ", ".join(map(str, experiment.params["train"]["seeds"])),
            f"{validation['accuracy']:.4f} [{validation['low']:.4f}, {validation['high']:.4f}]",
            f"{experiment.cost.get('fit_seconds', float('nan')):.1f}",
            mark,
            experiment.name,
        ]
        lines.append(" | ".join(cells))
    return lines


def main() -> None:
    """Print the table for the params given on the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("keys", nargs="+", help="params to show, as section.key")
    parser.add_argument(
        "--where", action="append", default=[], help="only runs with section.key=value"
    )
    parser.add_argument(
        "--rev", help="only experiments based on this commit (default: on any commit)"
    )
    arguments = parser.parse_args()
    where = dict(condition.split("=", 1) for condition in arguments.where)
    commits = ["--rev", arguments.rev] if arguments.rev else ["--all-commits"]
    shown = json.loads(
        subprocess.run(  # noqa: S603 - a fixed command; the revision is the user's own
            ["dvc", "exp", "show", *commits, "--json"],  # noqa: S607 - the venv's dvc
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    print("\n".join(sweep_table(shown, arguments.keys, where, lambda rev: load_run(rev)[0])))


if __name__ == "__main__":
    main()
