"""The speed and accuracy frontier of a DVC sweep: validation accuracy against repro seconds.

For each setting of the params given (``train.epochs``, say), over its training seeds:
the mean validation accuracy of the kept model (``dvc exp show --json``) and the seconds a
``dvc repro`` from nothing would take with it: the seconds such a repro spends outside the
train stage's ``fit`` (``--outside-fit``, measured by benchmarks/run.py), plus the mean
``fit`` seconds of the setting's experiments (their ``dvc queue logs``). Written as a TSV
that dvc.yaml plots (``dvc plots show``):

    python -m tools.frontier train.epochs --outside-fit 28.4 --output benchmarks/frontier.tsv
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tools.sweep_table import METRICS_FILE, param

# The train stage's last line: "... 20 epochs in 17.8 s (44885 samples/s); ..."
FIT = re.compile(r"\d+ epochs in ([\d.]+) s")


def experiments(shown: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """Yield (name, params, metrics) of each experiment that ran to the end."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision.get("data") or {}
                metrics = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data")
                if metrics and data.get("timestamp") and revision.get("name"):
                    yield revision["name"], data["params"]["params.yaml"]["data"], metrics


def fit_seconds(log: str) -> float | None:
    """Return the fit seconds the train stage printed in an experiment's log, if it trained."""
    match = FIT.search(log)
    return float(match.group(1)) if match else None


def frontier(
    shown: list[dict],
    keys: Sequence[str],
    log_of: Callable[[str], str],
    outside_fit: float,
) -> list[dict[str, object]]:
    """One row per setting of ``keys``: runs, accuracy mean and spread, repro seconds."""
    groups: dict[tuple, list[tuple[float, float | None]]] = defaultdict(list)
    for name, params, metrics in experiments(shown):
        setting = tuple(param(params, key) for key in keys)
        groups[setting].append((metrics["validation"]["accuracy"], fit_seconds(log_of(name))))
    rows = []
    for setting, runs in sorted(groups.items()):
        accuracies = [accuracy for accuracy, _ in runs]
        # An experiment restored from DVC's run-cache trained no time of its own.
        fits = [fit for _, fit in runs if fit is not None]
        rows.append({
            **dict(zip(keys, setting, strict=True)),
            "runs": len(runs),
            "validation_accuracy": round(statistics.fmean(accuracies), 4),
            "spread": round(max(accuracies) - min(accuracies), 4),
            "repro_seconds": round(outside_fit + statistics.fmean(fits), 1) if fits else None,
        })  # fmt: skip
    return [row for row in rows if row["repro_seconds"] is not None]


def dvc(*arguments: str, check: bool = True) -> str:
    """Return the output of a dvc command ("" if it fails and ``check`` is off)."""
    result = subprocess.run(  # noqa: S603 - fixed commands with the sweep's own names
        ["dvc", *arguments],  # noqa: S607 - the venv's dvc
        capture_output=True,
        text=True,
        check=check,
    )
    return result.stdout if result.returncode == 0 else ""


def main() -> None:
    """Write the frontier of this repository's experiments."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("keys", nargs="+", help="params to group by, as section.key")
    parser.add_argument("--outside-fit", type=float, required=True, help="seconds")
    parser.add_argument("--output", type=Path, required=True, help="TSV to write")
    arguments = parser.parse_args()
    shown = json.loads(dvc("exp", "show", "--all-commits", "--json"))
    # Experiments run outside the queue keep no log: they count for accuracy only.
    rows = frontier(
        shown,
        arguments.keys,
        lambda name: dvc("queue", "logs", name, check=False),
        arguments.outside_fit,
    )
    with arguments.output.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} settings to {arguments.output}")


if __name__ == "__main__":
    main()
