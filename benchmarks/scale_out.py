"""Does training over two processes pay? Keras' DataParallel against one process, per core.

Trains the committed model on a prepared folder (the prepare stage's output) for a few
epochs, in one invocation, with the same global batch each time:

- one process on one core, ``train.distribute: none`` (the baseline);
- one process on one core, ``train.distribute: data_parallel`` (one device: the cost of
  the distribution machinery alone);
- two processes on one core each, ``data_parallel`` over 127.0.0.1 (each feeds half of
  every batch; process 0 writes the outputs).

Each process is pinned to its core (``os.sched_setaffinity``) and XLA to one thread, so
that the cores, not the thread pools, are what is compared. Prints the fit seconds of
each (the train stage's own figure, compilation and validation included), and the
speed-up of two processes over one.

    python benchmarks/scale_out.py data/prepared --epochs 4
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from cifar10.params import parse_params  # noqa: E402
from tools.params_file import update_params_file  # noqa: E402

FIT = re.compile(r"(\d+) epochs in ([\d.]+) s")
# The train stage's outputs for seed 42, where dvc.yaml writes them.
TRAIN_OUTPUTS = ["--seed", "42", "--model", "data/models/42", "--reports", "reports/seeds/42/train",
                 "--cost", "reports/seeds/42/cost.json"]  # fmt: skip
# One XLA thread per process: each process is given one core.
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def workspace(folder: Path, prepared: Path, changes: Mapping[str, object]) -> Path:
    """Make a folder with the committed params (``changes`` to train) and ``prepared`` in it."""
    folder.mkdir(parents=True)
    shutil.copy(REPOSITORY / "params.yaml", folder / "params.yaml")
    update_params_file(folder / "params.yaml", {"train": changes})
    (folder / "data").mkdir()
    (folder / "data" / "prepared").symlink_to(prepared.resolve())
    return folder


def start_training(
    folder: Path, core: int, environment: Mapping[str, str]
) -> subprocess.Popen[str]:
    """Start the train stage in ``folder``, pinned to ``core``."""
    return subprocess.Popen(
        [sys.executable, "-m", "stages", "train", "--prepared", "data/prepared", *TRAIN_OUTPUTS],
        cwd=folder,
        env={
            **os.environ,
            "PYTHONPATH": str(REPOSITORY),
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": ONE_THREAD,
            **environment,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # noqa: PLW1509 - no threads yet
    )


def fit_seconds(process: subprocess.Popen[str]) -> float:
    """Wait for a train stage and return the fit seconds it printed."""
    output, _ = process.communicate()
    match = FIT.search(output)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"training failed:\n{output[-3000:]}")
    return float(match.group(2))


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now."""
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def main() -> None:
    """Run the three configurations and print their fit seconds and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="a prepared-data folder")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="another train param for every configuration (YAML value), e.g. max_shift=0",
    )  # fmt: skip
    arguments = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:  # noqa: PLR2004
        parser.error("two cores are needed")
    common = {"epochs": arguments.epochs, "warmup_epochs": 0}
    for setting in arguments.set:
        key, _, value = setting.partition("=")
        common[key] = parse_params(f"{key}: {value}")[key]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        seconds = {}
        for name, distribute in (("one process", "none"), ("one process, DataParallel",
                                                            "data_parallel")):  # fmt: skip
            folder = workspace(root / distribute, arguments.prepared,
                               {**common, "distribute": distribute})  # fmt: skip
            seconds[name] = fit_seconds(start_training(folder, core=0, environment={}))
            print(f"{name}, one core: fit {seconds[name]:.1f} s", flush=True)
        folder = workspace(root / "two", arguments.prepared,
                           {**common, "distribute": "data_parallel"})  # fmt: skip
        addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
        processes = [
            start_training(
                folder if index == 0 else workspace(root / f"worker{index}", arguments.prepared,
                                                    {**common, "distribute": "data_parallel"}),
                core=index,
                environment={"KERAS_DISTRIBUTION_JOB_ADDRESSES": addresses,
                             "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                             "KERAS_DISTRIBUTION_PROCESS_ID": str(index)},
            )
            for index in range(2)
        ]  # fmt: skip
        # Process 0 prints the fit seconds; process 1 trains in step with it.
        seconds["two processes"] = fit_seconds(processes[0])
        worker_output, _ = processes[1].communicate()
        if processes[1].returncode != 0:
            raise RuntimeError(f"process 1 failed:\n{worker_output[-3000:]}")
        print(f"two processes, one core each: fit {seconds['two processes']:.1f} s", flush=True)
    print(
        f"speed-up of two processes over one: "
        f"{seconds['one process'] / seconds['two processes']:.2f}x (target 1.6x); "
        f"DataParallel on one device costs "
        f"{seconds['one process, DataParallel'] / seconds['one process']:.2f}x"
    )


if __name__ == "__main__":
    main()
