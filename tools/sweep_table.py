"""Summarize a DVC sweep over seeds: validation accuracy per setting, mean and spread.

Reads ``dvc exp show --json`` (every finished experiment, of every commit) and groups
the experiments by the params given, each group's validation accuracies (of the kept
model) over its training seeds:

    python -m tools.sweep_table train.batch_size train.learning_rate train.epochs
    python -m tools.sweep_table train.weight_decay --where train.batch_size=512
    python -m tools.sweep_table train.epochs --rev HEAD   # experiments on one commit only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Iterator, Sequence

METRICS_FILE = "reports/metrics.json"


def finished_experiments(shown: list[dict]) -> Iterator[tuple[dict, dict]]:
    """Yield (params, metrics) of each experiment that ran to the end."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                metrics = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data")
                # Queued and running experiments show as "workspace", with no timestamp.
                if metrics and data.get("timestamp") and data.get("rev") != "workspace":
                    yield data["params"]["params.yaml"]["data"], metrics


def param(params: dict, key: str) -> object:
    """Look up a dotted key (``train.batch_size``) in nested params."""
    section, name = key.split(".", 1)
    return params[section][name]


def sweep_table(shown: list[dict], keys: Sequence[str], where: dict[str, str]) -> list[str]:
    """One line per setting of ``keys``: mean, spread (max - min) and seeds of its runs."""
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for params, metrics in finished_experiments(shown):
        if all(str(param(params, key)) == value for key, value in where.items()):
            setting = tuple(param(params, key) for key in keys)
            groups[setting].append((params["train"]["seed"], metrics["validation"]["accuracy"]))
    lines = [" | ".join([*keys, "runs", "validation accuracy: mean", "spread", "seeds"])]
    for setting, runs in sorted(groups.items(), key=lambda item: [str(v) for v in item[0]]):
        accuracies = [accuracy for _, accuracy in runs]
        seeds = ", ".join(str(seed) for seed, _ in sorted(runs))
        cells = [*map(str, setting), str(len(runs)), f"{statistics.fmean(accuracies):.4f}",
                 f"{max(accuracies) - min(accuracies):.4f}", seeds]  # fmt: skip
        lines.append(" | ".join(cells))
    return lines


def main() -> None:
    """Print the table for the params given on the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("keys", nargs="+", help="params to group by, as section.key")
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
    print("\n".join(sweep_table(shown, arguments.keys, where)))


if __name__ == "__main__":
    main()
