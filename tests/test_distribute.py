"""Spreading training with Keras' DataParallel: devices in one process, and several processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_TRAIN, link_prepared, run_stage, train_arguments, write_params

from stages.cifar import FEATURES, Split
from stages.cli import StageError
from stages.distribution import Placement, local_share, set_up


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    return link_prepared(tmp_path, prepared, {"train": QUICK_TRAIN})


def history(project: Path, name: str) -> dict[str, list[float]]:
    return json.loads((project / name / "reports" / "train" / "history.json").read_text())


def test_local_share_deals_rows_in_turn_and_evenly() -> None:
    split = Split(np.zeros((7, FEATURES), np.uint8), np.arange(7, dtype=np.uint8))
    shares = [local_share(split, Placement(index, 2, 2), batch_size=4) for index in range(2)]
    assert [share.labels.tolist() for share, _ in shares] == [[0, 2, 4], [1, 3, 5]]
    assert [batch for _, batch in shares] == [2, 2]
    with pytest.raises(StageError, match=r"train\.batch_size = 5: must be a multiple of the 2"):
        local_share(split, Placement(0, 2, 2), batch_size=5)


def test_incomplete_process_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", raising=False)
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    with pytest.raises(StageError, match="set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIB"):
        set_up("data_parallel")


@pytest.mark.slow
def test_two_devices_compute_what_one_does(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_stage("train", train_arguments("one"), project)
    write_params(project, {"train": {**QUICK_TRAIN, "distribute": "data_parallel"}})
    # JAX shows the CPU as two devices: each step splits the same global batch in two.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    output = run_stage("train", train_arguments("two"), project).stdout
    assert "on 2 device(s)" in output
    one, two = history(project, "one"), history(project, "two")
    for key in ("loss", "val_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert two["val_accuracy"] == one["val_accuracy"]


def free_local_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for open_socket in sockets:
        open_socket.bind(("127.0.0.1", 0))
    ports = [open_socket.getsockname()[1] for open_socket in sockets]
    for open_socket in sockets:
        open_socket.close()
    return ports


@pytest.mark.slow
def test_two_processes_train_one_model_and_only_the_first_writes(project: Path) -> None:
    write_params(project, {"train": {**QUICK_TRAIN, "distribute": "data_parallel"}})
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_local_ports(2))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "stages.train", *train_arguments(f"process{index}")],
            cwd=project,
            env={**os.environ, "KERAS_DISTRIBUTION_JOB_ADDRESSES": addresses,
                 "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                 "KERAS_DISTRIBUTION_PROCESS_ID": str(index)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]  # fmt: skip
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    assert "on 2 device(s) in 2 processes" in outputs[0][0]
    assert "trained on 2 device(s) in 2 processes as process 1" in outputs[1][0]
    chief = project / "process0"
    assert len(history(project, "process0")["loss"]) == 2
    assert json.loads((chief / "reports/train/live/metrics.json").read_text())["step"] == 2
    assert (chief / "data/model/model.weights.h5").is_file()
    assert not (project / "process1").exists()  # dvclive and the outputs: process 0 only
