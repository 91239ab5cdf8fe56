"""Benchmark the DVC pipeline against the assignment notebook's recipe on one archive.

In one invocation, for each repetition: (a) the notebook's recipe as a faithful script
(benchmarks/notebook_recipe.py), (b) one ``dvc repro`` from nothing in a fresh temporary
copy of this repository reading the same archive (already local: ``data.archive``) with
the committed params, but a training seed of its own per repetition (42, 7, 1, ...), so
the validation accuracy is a mean over seeds. Stages are timed from the moments DVC
announces them. Prints wall time per stage and in total, peak memory of the largest
process, training throughput, validation and test accuracy and the DVC cache size,
then the ratios pipeline/recipe against the targets, and how training compares with
the time its matrix products alone take with numpy and compiled by XLA (floors on this
machine).

    .venv/bin/python benchmarks/run.py ../shared/data/cifar-10-sample.tar.gz
    .venv/bin/python benchmarks/run.py /tmp/cifar-10-full.tar.gz --repetitions 3
"""

from __future__ import annotations

import argparse
import itertools
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from cifar10.archive import FEATURES, file_md5  # noqa: E402
from cifar10.params import read_params  # noqa: E402
from tools.params_file import update_params_file  # noqa: E402

STAGES = ("params", "download", "prepare", "backprop", "train", "evaluate", "aggregate", "plots")
# A matrix stage's instance (train@42) counts as its stage: one seed per repetition.
STAGE_START = re.compile(r"^Running stage '(\w+)(?:@\d+)?'")
SEEDS = (42, 7, 1, 2, 3)  # training seed of each repetition, as the defaults were chosen

END_TO_END_TARGET = 0.5  # pipeline / recipe wall time
MEMORY_TARGET = 0.25  # pipeline / recipe peak memory of the largest process
VALIDATION_TARGET = 0.58  # the kept model's validation accuracy, mean over seeds
MOONSHOT_VALIDATION_TARGET = 0.60  # the same, at no more than END_TO_END_TARGET
Product = tuple[int, int, int]  # rows, inner size, columns of one matrix product


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


def measure(command: list[str], cwd: Path, variables: Mapping[str, str] | None = None) -> Measured:
    """Run ``command``, timing each output line as it arrives; fail loudly on an error.

    ``variables`` are added to this process's environment.
    """
    environment = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(variables or {}),
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


def step_products(layer_sizes: Sequence[int], batch_size: int) -> list[Product]:
    """List the matrix products of one training step of a dense network of these sizes.

    Per layer: its forward product, its weight gradient and, past the first layer, the
    gradient of its inputs (nothing needs the gradient of the images).
    """
    products = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(layer_sizes)):
        products.append((batch_size, fan_in, fan_out))  # inputs @ weights
        products.append((fan_in, batch_size, fan_out))  # inputs.T @ output gradient
        if index > 0:
            products.append((batch_size, fan_out, fan_in))  # output gradient @ weights.T
    return products


def product_seconds(product: Product, repetitions: int = 20) -> float:
    """Time the fastest of ``repetitions`` float32 numpy (BLAS) products of this shape."""
    rows, inner, columns = product
    generator = np.random.default_rng(0)
    left = generator.standard_normal((rows, inner), dtype=np.float32)
    right = generator.standard_normal((inner, columns), dtype=np.float32)
    timings = []
    for _ in range(repetitions):
        started = time.perf_counter()
        np.matmul(left, right)
        timings.append(time.perf_counter() - started)
    return min(timings)


def step_products_function(
    layer_sizes: Sequence[int], *, training: bool
) -> Callable[[list[Any], list[Any], list[Any]], list[Any]]:
    """Return a function of (weights, inputs, output gradients) per layer: a step's products.

    The products of ``step_products`` (training) or the forward products alone, with
    the operands as a JAX training step holds them: each layer's inputs (batch, fan_in),
    so that its weight gradient reads them transposed.
    """
    layers = len(layer_sizes) - 1

    def products(weights: list[Any], inputs: list[Any], gradients: list[Any]) -> list[Any]:
        results = []
        for index in range(layers):
            results.append(inputs[index] @ weights[index])
            if training:
                results.append(inputs[index].T @ gradients[index])
                if index > 0:
                    results.append(gradients[index] @ weights[index].T)
        return results

    return products


def xla_products_seconds(
    layer_sizes: Sequence[int], batch_size: int, *, training: bool, repetitions: int = 20
) -> float:
    """Time the fastest of ``repetitions`` runs of a step's products compiled by XLA (jax.jit)."""
    import jax  # noqa: PLC0415 - only this floor needs it

    generator = np.random.default_rng(0)
    pairs = list(itertools.pairwise(layer_sizes))
    weights = [generator.standard_normal(pair, dtype=np.float32) for pair in pairs]
    inputs = [
        generator.standard_normal((batch_size, fan_in), dtype=np.float32) for fan_in, _ in pairs
    ]
    gradients = [
        generator.standard_normal((batch_size, fan_out), dtype=np.float32) for _, fan_out in pairs
    ]
    compiled = jax.jit(step_products_function(layer_sizes, training=training))
    arguments = jax.device_put((weights, inputs, gradients))
    jax.block_until_ready(compiled(*arguments))  # compiled once, outside the timings
    timings = []
    for _ in range(repetitions):
        started = time.perf_counter()
        jax.block_until_ready(compiled(*arguments))
        timings.append(time.perf_counter() - started)
    return min(timings)


def matmul_floor_seconds(
    layer_sizes: Sequence[int],
    *,
    batch_size: int,
    validation_batch_size: int,
    train_samples: int,
    validation_rows: int,
    epochs: int,
    library: str = "numpy",
) -> float:
    """Seconds that training's matrix products alone take on this machine.

    ``library`` numpy: each product apart, with BLAS; xla: each step's products compiled
    together by XLA, as the JAX backend runs them. A lower bound for the train stage's
    epochs at that speed: activations, the optimizer, the input pipeline and start-up are
    not counted. ``validation_rows`` counts every view of each validation image.
    """
    if library == "numpy":
        step = sum(map(product_seconds, step_products(layer_sizes, batch_size)))
        validation = sum(
            product_seconds((validation_batch_size, fan_in, fan_out))
            for fan_in, fan_out in itertools.pairwise(layer_sizes)
        )
    else:
        step = xla_products_seconds(layer_sizes, batch_size, training=True)
        validation = xla_products_seconds(layer_sizes, validation_batch_size, training=False)
    return epochs * (
        train_samples / batch_size * step + validation_rows / validation_batch_size * validation
    )


def project_copy(archive: Path, folder: Path, seed: int) -> Path:
    """Copy this repository into a fresh git + DVC project that reads ``archive`` offline."""
    project = folder / "project"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if (REPOSITORY / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, project / name)
    update_params_file(
        project / "params.yaml",
        {
            "data": {"archive": str(archive.resolve()), "md5": file_md5(archive)},
            "train": {"seeds": [seed]},
        },
    )
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


def run_pipeline(archive: Path, seed: int) -> dict[str, float]:
    """One ``dvc repro`` from nothing in a fresh copy, then a repro with nothing changed.

    From nothing means JAX's persistent compilation cache too: it starts empty; then the
    train stage runs again, forced, with the cache its first run filled.
    """
    with tempfile.TemporaryDirectory(prefix="cifar-benchmark-") as folder:
        project = project_copy(archive, Path(folder), seed)
        cache = {"JAX_COMPILATION_CACHE_DIR": str(Path(folder) / "jax-compilation-cache")}
        measured = measure(["dvc", "repro"], project, cache)
        seconds = stage_seconds(measured)
        if tuple(seconds) != STAGES:
            raise SystemExit(f"dvc repro ran {list(seconds)}, expected {list(STAGES)}")
        figures = {f"{stage}_seconds": seconds[stage] for stage in STAGES}
        figures["total_seconds"] = measured.seconds
        figures["peak_mb"] = measured.peak_mb
        # What the training cost, as the aggregate stage recorded it.
        cost = json.loads((project / "reports" / "cost.json").read_text())
        figures["fit_seconds"] = cost["fit_seconds"]
        figures["samples_per_second"] = cost["samples_per_second"]
        epochs = int(pd.read_csv(project / "reports" / "curves.csv")["epoch"].max())
        figures["unchanged_repro_seconds"] = measure(["dvc", "repro"], project, cache).seconds
        warm = measure(
            ["dvc", "repro", "--force", "--single-item", f"train@{seed}"], project, cache
        )
        figures["warm_train_seconds"] = stage_seconds(warm)["train"]
        metrics = json.loads((project / "reports" / "metrics.json").read_text())
        figures["validation_accuracy"] = metrics["validation"]["accuracy"]
        figures["test_accuracy"] = metrics["test"]["accuracy"]
        figures["cache_mb"] = folder_megabytes(project / ".dvc" / "cache")
        params = read_params(project / "params.yaml").params
        counts = json.loads((project / "reports" / "data.json").read_text())["class_counts"]
    train_samples, validation_samples = (
        sum(counts[split].values()) for split in ("train", "validation")
    )
    # Keras (which cifar10.augmentation loads) and JAX load in this process only now.
    from cifar10.augmentation import VIEWS  # noqa: PLC0415

    views = VIEWS if params.train.test_time_flip else 1
    for library in ("numpy", "xla"):
        figures[f"fit_{library}_floor_seconds"] = matmul_floor_seconds(
            [FEATURES, *params.train.hidden_units, len(counts["train"])],
            batch_size=params.train.batch_size,
            validation_batch_size=params.train.batch_size,  # Keras' default
            train_samples=train_samples,
            validation_rows=views * validation_samples,
            epochs=epochs,
            library=library,
        )
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
    parser.add_argument("--repetitions", type=int, default=1, choices=range(1, len(SEEDS) + 1))
    arguments = parser.parse_args()
    archive_mb = arguments.archive.stat().st_size / 1e6

    recipes, pipelines = [], []
    for repetition, seed in enumerate(SEEDS[: arguments.repetitions], start=1):
        print(f"repetition {repetition}: notebook recipe ...", flush=True)
        recipes.append(run_recipe(arguments.archive))
        print(f"repetition {repetition}: dvc pipeline, train.seeds [{seed}] ...", flush=True)
        pipelines.append(run_pipeline(arguments.archive, seed))

    def column(runs: list[dict[str, float]], key: str) -> str:
        return summarize([run[key] for run in runs]) if key in runs[0] else "-"

    machine = platform.processor() or platform.machine()
    seeds = ", ".join(map(str, SEEDS[: arguments.repetitions]))
    print(f"\narchive {arguments.archive} ({archive_mb:.1f} MB); {machine}, {os.cpu_count()} "
          f"cores; {arguments.repetitions} repetition(s), one seed each, {seeds}: "
          "mean (min-max)\n")  # fmt: skip
    rows = [(f"{stage}: seconds", f"{stage}_seconds") for stage in STAGES]
    rows += [
        ("total seconds", "total_seconds"),
        ("peak MB (largest process)", "peak_mb"),
        ("training samples/s", "samples_per_second"),
        ("train: fit seconds (validating, compiling)", "fit_seconds"),
        ("train: seconds, compilation cache warm", "warm_train_seconds"),
        ("train: its matrix products alone (numpy), s", "fit_numpy_floor_seconds"),
        ("train: its matrix products alone (XLA), s", "fit_xla_floor_seconds"),
        ("validation accuracy (model kept)", "validation_accuracy"),
        ("test accuracy", "test_accuracy"),
        ("dvc repro, nothing changed: seconds", "unchanged_repro_seconds"),
        ("DVC cache MB", "cache_mb"),
    ]
    print(f"| {'figure':44} | {'notebook recipe':>24} | {'dvc pipeline':>24} |")
    print(f"| {'-' * 44} | {'-' * 23}: | {'-' * 23}: |")
    for label, key in rows:
        print(f"| {label:44} | {column(recipes, key):>24} | {column(pipelines, key):>24} |")

    def mean(runs: list[dict[str, float]], key: str) -> float:
        return statistics.fmean(run[key] for run in runs)

    def ratio(key: str) -> float:
        return mean(pipelines, key) / mean(recipes, key)

    checks = [
        ("pipeline / recipe wall time", ratio("total_seconds"), "<=", END_TO_END_TARGET),
        ("pipeline / recipe peak memory", ratio("peak_mb"), "<=", MEMORY_TARGET),
        (
            "validation accuracy, mean over seeds",
            mean(pipelines, "validation_accuracy"),
            ">=",
            VALIDATION_TARGET,
        ),
        (
            "validation accuracy, the moonshot",
            mean(pipelines, "validation_accuracy"),
            ">=",
            MOONSHOT_VALIDATION_TARGET,
        ),
        ("pipeline / recipe training throughput", ratio("samples_per_second"), ">=", 2.5),
        (
            "dvc repro with nothing changed (s)",
            mean(pipelines, "unchanged_repro_seconds"),
            "<=",
            3.0,
        ),
        ("prepare stage (s)", mean(pipelines, "prepare_seconds"), "<=", 6.0),
        (
            "fit / its matrix products",
            mean(pipelines, "fit_seconds") / mean(pipelines, "fit_numpy_floor_seconds"),
            "<=",
            1.6,
        ),
        ("backprop stage (s)", mean(pipelines, "backprop_seconds"), "<=", 3.0),
        ("plots stage (s)", mean(pipelines, "plots_seconds"), "<=", 3.0),
        ("DVC cache / archive size", mean(pipelines, "cache_mb") / archive_mb, "<=", 1.5),
    ]
    print()
    for label, value, relation, target in checks:
        met = value <= target if relation == "<=" else value >= target
        print(
            f"{label:40} {value:8.3f}  target {relation} {target:<5}  {'met' if met else 'NOT MET'}"
        )
    # What the end-to-end target leaves for training once every other stage has run.
    train_seconds = mean(pipelines, "train_seconds")
    budget = END_TO_END_TARGET * mean(recipes, "total_seconds") - (
        mean(pipelines, "total_seconds") - train_seconds
    )
    fit, floor = mean(pipelines, "fit_seconds"), mean(pipelines, "fit_numpy_floor_seconds")
    xla_floor = mean(pipelines, "fit_xla_floor_seconds")
    left = (
        f"the train stage would have {budget:.1f} s"
        if budget > 0
        else "the other stages alone take longer than that"
    )
    print(
        f"\nat {END_TO_END_TARGET}x the recipe's wall time {left}. The train stage takes "
        f"{train_seconds:.1f} s, of which fit {fit:.1f} s: {fit / floor:.2f}x the "
        f"{floor:.1f} s that its matrix products alone take with numpy here, and "
        f"{fit / xla_floor:.2f}x the {xla_floor:.1f} s they take compiled by XLA."
    )


if __name__ == "__main__":
    main()
