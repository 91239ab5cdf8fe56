"""Benchmark the DVC pipeline against the assignment notebook's recipe on one archive.

In one invocation, for each repetition: (a) the notebook's recipe as a faithful script
(benchmarks/notebook_recipe.py), (b) one ``dvc repro`` in a fresh temporary copy of this
repository reading the same archive (already local: ``data.archive``), timed per stage
from the moments DVC announces each stage. Prints wall time per stage and in total,
peak memory, training throughput, test accuracy and the DVC cache size, then the ratios
pipeline/recipe against the targets.

    .venv/bin/python benchmarks/run.py ../shared/data/cifar-10-sample.tar.gz
    .venv/bin/python -m stages.cifar --output /tmp/full.tar.gz --images-per-batch 10000
    .venv/bin/python benchmarks/run.py /tmp/full.tar.gz --repetitions 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from stages.cifar import file_md5  # noqa: E402

STAGES = ("download", "prepare", "backprop", "train", "evaluate", "plots")
THROUGHPUT = re.compile(r"at (\d+) samples/s")
STAGE_START = re.compile(r"^Running stage '(\w+)'")


@dataclass(frozen=True)
class Measured:
    """One command's wall time, peak memory and output lines, each with its time."""

    seconds: float
    peak_mb: float  # resident set of the largest process in the command's tree
    lines: list[tuple[float, str]]  # (seconds since the start, line)

    @property
    def stdout(self) -> str:
        """The whole output."""
        return "".join(line for _, line in self.lines)


def measure(command: list[str], cwd: Path) -> Measured:
    """Run ``command``, timing each output line as it arrives; fail loudly on an error."""
    environment = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None  # set by stdout=PIPE
    lines = [(time.perf_counter() - started, line) for line in process.stdout]
    # wait4, not wait: its rusage covers the whole finished process tree.
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    measured = Measured(seconds, usage.ru_maxrss / 1024, lines)
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({process.returncode}):\n{measured.stdout[-3000:]}"
        )
    return measured


def stage_seconds(measured: Measured) -> dict[str, float]:
    """Seconds per stage of a ``dvc repro``: from its start to the next stage's start."""
    starts = [
        (seconds, match.group(1))
        for seconds, line in measured.lines
        if (match := STAGE_START.match(line))
    ]
    boundaries = [seconds for seconds, _ in starts] + [measured.seconds]
    return {stage: end - start for (start, stage), end in zip(starts, boundaries[1:], strict=True)}


def project_copy(archive: Path, folder: Path) -> Path:
    """Copy this repository into a fresh git + DVC project that reads ``archive`` offline."""
    project = folder / "project"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if (REPOSITORY / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, project / name)
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"].update(archive=str(archive.resolve()), md5=file_md5(archive))
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    identity = ["-c", "user.name=benchmark", "-c", "user.email=benchmark@example.invalid"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", *identity, "commit", "-qm", "copy"]):  # fmt: skip
        subprocess.run(command, cwd=project, check=True, capture_output=True)
    return project


def folder_megabytes(folder: Path) -> float:
    """Size of every file below ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def run_recipe(archive: Path) -> dict[str, float]:
    """Run the notebook's recipe in its own process."""
    measured = measure(
        [sys.executable, str(REPOSITORY / "benchmarks" / "notebook_recipe.py"), str(archive)],
        REPOSITORY,
    )
    figures = json.loads(measured.stdout.strip().splitlines()[-1])
    return {
        "total_seconds": measured.seconds,
        "peak_mb": measured.peak_mb,
        "samples_per_second": figures["samples_per_second"],
        "test_accuracy": figures["test_accuracy"],
    }


def run_pipeline(archive: Path) -> dict[str, float]:
    """One ``dvc repro`` in a fresh copy, then a repro with nothing changed."""
    with tempfile.TemporaryDirectory(prefix="cifar-benchmark-") as folder:
        project = project_copy(archive, Path(folder))
        measured = measure(["dvc", "repro"], project)
        seconds = stage_seconds(measured)
        if tuple(seconds) != STAGES:
            raise SystemExit(f"dvc repro ran {list(seconds)}, expected {list(STAGES)}")
        figures = {f"{stage}_seconds": seconds[stage] for stage in STAGES}
        figures["total_seconds"] = measured.seconds
        figures["peak_mb"] = measured.peak_mb
        figures["samples_per_second"] = float(THROUGHPUT.search(measured.stdout).group(1))
        figures["unchanged_repro_seconds"] = measure(["dvc", "repro"], project).seconds
        metrics = json.loads((project / "reports" / "metrics.json").read_text())
        figures["test_accuracy"] = metrics["test"]["accuracy"]
        figures["cache_mb"] = folder_megabytes(project / ".dvc" / "cache")
    return figures


def readable(value: float) -> str:
    """Three significant digits, or whole numbers (with thousands separators) from 100 on."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:#.3g}"  # noqa: PLR2004


def summarize(values: list[float]) -> str:
    """Mean, and the range when there are several repetitions."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return readable(mean)
    return f"{readable(mean)} ({readable(min(values))}-{readable(max(values))})"


def main() -> None:
    """Run both, print the table and the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("--repetitions", type=int, default=1)
    arguments = parser.parse_args()
    archive_mb = arguments.archive.stat().st_size / 1e6

    recipes, pipelines = [], []
    for repetition in range(1, arguments.repetitions + 1):
        print(f"repetition {repetition}: notebook recipe ...", flush=True)
        recipes.append(run_recipe(arguments.archive))
        print(f"repetition {repetition}: dvc pipeline ...", flush=True)
        pipelines.append(run_pipeline(arguments.archive))

    def column(runs: list[dict[str, float]], key: str) -> str:
        return summarize([run[key] for run in runs]) if key in runs[0] else "-"

    machine = platform.processor() or platform.machine()
    print(f"\narchive {arguments.archive} ({archive_mb:.1f} MB); {machine}, {os.cpu_count()} "
          f"cores; {arguments.repetitions} repetition(s): mean (min-max)\n")  # fmt: skip
    rows = [(f"{stage}: seconds", f"{stage}_seconds") for stage in STAGES]
    rows += [
        ("total seconds", "total_seconds"),
        ("peak MB (largest process)", "peak_mb"),
        ("training samples/s (batch 32)", "samples_per_second"),
        ("test accuracy", "test_accuracy"),
        ("dvc repro, nothing changed: seconds", "unchanged_repro_seconds"),
        ("DVC cache MB", "cache_mb"),
    ]
    print(f"| {'figure':38} | {'notebook recipe':>24} | {'dvc pipeline':>24} |")
    print(f"| {'-' * 38} | {'-' * 24}: | {'-' * 24}: |")
    for label, key in rows:
        print(f"| {label:38} | {column(recipes, key):>24} | {column(pipelines, key):>24} |")

    def mean(runs: list[dict[str, float]], key: str) -> float:
        return statistics.fmean(run[key] for run in runs)

    def ratio(key: str) -> float:
        return mean(pipelines, key) / mean(recipes, key)

    checks = [
        ("pipeline / recipe wall time", ratio("total_seconds"), "<=", 0.5),
        ("pipeline / recipe peak memory", ratio("peak_mb"), "<=", 0.4),
        ("pipeline / recipe training throughput", ratio("samples_per_second"), ">=", 2.5),
        (
            "dvc repro with nothing changed (s)",
            mean(pipelines, "unchanged_repro_seconds"),
            "<=",
            3.0,
        ),
        ("prepare stage (s)", mean(pipelines, "prepare_seconds"), "<=", 10.0),
        ("DVC cache / archive size", mean(pipelines, "cache_mb") / archive_mb, "<=", 1.5),
    ]
    print()
    for label, value, relation, target in checks:
        met = value <= target if relation == "<=" else value >= target
        print(
            f"{label:40} {value:8.3f}  target {relation} {target:<5}  {'met' if met else 'NOT MET'}"
        )


if __name__ == "__main__":
    main()
