"""Scale-out: tf.distribute strategies for real on this CPU, and DVC's experiment queue."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import run

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
# Two logical CPU devices must be configured before TensorFlow starts: a small launcher.
TWO_CPUS_LAUNCHER = textwrap.dedent(
    """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from stages.cli import run_stage
    from stages.train import main
    run_stage(main)
    """
)


@pytest.fixture
def prepared(tmp_path: Path, tiny_archive: Path) -> Path:
    """A folder with the tiny archive prepared and quick training params."""
    params = yaml.safe_load((REPOSITORY / "params.yaml").read_text())
    params["train"].update(epochs=2, hidden_units=[32, 16], early_stopping_patience=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--archive", str(tiny_archive),
         "--output", "data/prepared", "--report", "reports/data.json"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    return tmp_path


def set_distribute(project: Path, distribute: str) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"]["distribute"] = distribute
    path.write_text(yaml.safe_dump(params))


def train_command(name: str, launcher: list[str] | None = None) -> list[str]:
    return [*(launcher or [sys.executable, "-m", "stages.train"]),
            "--prepared", "data/prepared", "--model", f"{name}/model", "--live", f"{name}/live",
            "--summary", f"{name}/summary.json", "--history", f"{name}/history.json"]  # fmt: skip


def train(project: Path, name: str, launcher: list[str] | None = None) -> str:
    result = subprocess.run(
        train_command(name, launcher), cwd=project, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_mirrored_over_two_logical_cpus(prepared: Path) -> None:
    set_distribute(prepared, "mirrored")
    output = train(prepared, "mirrored", [sys.executable, "-c", TWO_CPUS_LAUNCHER])
    assert "on 2 replica(s)" in output
    assert (prepared / "mirrored" / "model" / "model.weights.h5").is_file()
    history = json.loads((prepared / "mirrored" / "history.json").read_text())
    assert len(history["loss"]) == 2


def test_one_replica_matches_no_strategy(prepared: Path) -> None:
    train(prepared, "none")
    set_distribute(prepared, "mirrored")
    assert "on 1 replica(s)" in train(prepared, "mirrored")
    plain = json.loads((prepared / "none" / "history.json").read_text())
    mirrored = json.loads((prepared / "mirrored" / "history.json").read_text())
    for key, values in plain.items():
        assert mirrored[key] == pytest.approx(values, rel=1e-5), key


def free_local_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for open_socket in sockets:
        open_socket.bind(("127.0.0.1", 0))
    ports = [open_socket.getsockname()[1] for open_socket in sockets]
    for open_socket in sockets:
        open_socket.close()
    return ports


def test_multi_worker_with_two_local_worker_processes(prepared: Path) -> None:
    set_distribute(prepared, "multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_local_ports(2)]}
    workers = [
        subprocess.Popen(
            train_command(f"worker{index}"),
            cwd=prepared,
            env={**os.environ, "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]  # fmt: skip
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    assert "on 2 replica(s)" in outputs[0][0]
    assert "as a worker; the chief writes the outputs" in outputs[1][0]
    chief = prepared / "worker0"
    assert (chief / "model" / "model.weights.h5").is_file()
    assert json.loads((chief / "live" / "metrics.json").read_text())["step"] == 1
    assert len(json.loads((chief / "history.json").read_text())["loss"]) == 2
    assert not (prepared / "worker1").exists()  # dvclive and the outputs: chief only


def test_queued_experiments_run_and_differ(make_project: Callable[..., Path]) -> None:
    project = make_project(train={"epochs": 1, "hidden_units": [16]})
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    for batch_size in (16, 64):
        run(["dvc", "exp", "run", "--queue", "-S", f"train.batch_size={batch_size}"], project)
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], project)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                batch_size = data["params"]["params.yaml"]["data"]["train"]["batch_size"]
                metrics = data["metrics"]["reports/metrics.json"]["data"]
                experiments[batch_size] = metrics["test"]["loss"]
    assert set(experiments) == {16, 64}
    assert experiments[16] != experiments[64]
