"""Spreading training with Keras' DataParallel: devices in one process, and several processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    MODEL,
    QUICK_TRAIN,
    SEED_REPORTS,
    command_environment,
    link_prepared,
    run_stage,
    train_arguments,
    write_params,
)

from cifar10.archive import FEATURES, Split
from cifar10.distribution import PROCESS_VARIABLES, Placement, local_share, set_up
from cifar10.errors import PipelineError

JAX_TRAIN = {**QUICK_TRAIN, "backend": "jax", "distribute": "none"}


def test_local_share_deals_rows_in_turn_and_evenly() -> None:
    split = Split(np.zeros((7, FEATURES), np.uint8), np.arange(7, dtype=np.uint8))
    shares = [local_share(split, Placement(index, 2, 2), batch_size=4) for index in range(2)]
    assert [share.labels.tolist() for share, _ in shares] == [[0, 2, 4], [1, 3, 5]]
    assert [batch for _, batch in shares] == [2, 2]
    with pytest.raises(PipelineError, match=r"train\.batch_size = 5: must be a multiple of the 2"):
        local_share(split, Placement(0, 2, 2), batch_size=5)


def test_one_process_on_one_device_is_the_chief() -> None:
    placement = set_up("none")
    assert placement == Placement(process_index=0, process_count=1, device_count=1)
    assert placement.is_chief
    assert placement.describe() == "1 device(s)"
    assert Placement(1, 2, 4).describe() == "4 device(s) in 2 processes"
    assert not Placement(1, 2, 4).is_chief


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"},
            "set KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_PROCESS_ID",
        ),
        (
            {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:1,127.0.0.1:2",
             "KERAS_DISTRIBUTION_NUM_PROCESSES": "two", "KERAS_DISTRIBUTION_PROCESS_ID": "0"},
            "KERAS_DISTRIBUTION_NUM_PROCESSES = 'two': must be a whole number",
        ),
    ],
)  # fmt: skip
def test_incomplete_or_malformed_process_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], message: str
) -> None:
    for name in PROCESS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PipelineError, match=message):
        set_up("data_parallel")


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    return link_prepared(tmp_path, prepared, {"train": JAX_TRAIN})


def history(project: Path, name: str) -> dict[str, list[float]]:
    return json.loads((project / name / SEED_REPORTS.train.history).read_text())


@pytest.mark.integration
def test_two_devices_compute_what_one_does(project: Path) -> None:
    run_stage("train", train_arguments("one"), project)
    write_params(project, {"train": {**JAX_TRAIN, "distribute": "data_parallel"}})
    # JAX shows the CPU as two devices: each step splits the same global batch in two.
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    output = run_stage("train", train_arguments("two"), project, environment=two_devices).stdout
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


@pytest.mark.integration
def test_two_processes_train_one_model_and_only_the_first_writes(project: Path) -> None:
    write_params(project, {"train": {**JAX_TRAIN, "distribute": "data_parallel"}})
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_local_ports(2))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "stages", "train", *train_arguments(f"process{index}")],
            cwd=project,
            env=command_environment({"KERAS_DISTRIBUTION_JOB_ADDRESSES": addresses,
                                     "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                                     "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}),
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
    live = chief / SEED_REPORTS.train.live / "metrics.json"
    assert json.loads(live.read_text())["step"] == 2
    assert (chief / MODEL / "model.keras").is_file()
    assert not (project / "process1").exists()  # dvclive and the outputs: process 0 only
