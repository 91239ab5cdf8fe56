"""Faults injected into stages run as dvc runs them: one `error:` line, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    QUICK_TRAIN,
    TRAIN_OUTPUTS,
    command_environment,
    link_prepared,
    run_stage,
    train_arguments,
    update_params,
)

from stages.start import INTERRUPTED_STATUS


@pytest.fixture
def project(tmp_path: Path, prepared: Path) -> Path:
    """Long enough training to be interrupted in the middle of it."""
    return link_prepared(tmp_path, prepared, {"train": {**QUICK_TRAIN, "epochs": 200}})


def start_training(project: Path) -> subprocess.Popen[str]:
    """Start the train stage and return once its first epoch has ended."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", *train_arguments()],
        cwd=project,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Epoch 2/"):
            return process
    pytest.fail(f"training ended early: {process.communicate()}")
    return process


def leftovers(project: Path) -> list[str]:
    return sorted(str(path.relative_to(project)) for path in project.rglob(".*.tmp-*"))


def test_ctrl_c_says_interrupted_and_leaves_no_output(project: Path) -> None:
    process = start_training(project)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.splitlines()[-1] == "error: interrupted; no output was changed"
    assert "Traceback" not in stderr
    for output in TRAIN_OUTPUTS:
        assert not (project / output).exists(), output
    assert leftovers(project) == []


def test_leftovers_of_a_killed_run_go_when_the_stage_runs_again(project: Path) -> None:
    process = start_training(project)
    process.kill()  # SIGKILL: no chance to clean up
    process.communicate(timeout=60)
    assert leftovers(project) != []  # dvclive's folder, written every epoch
    update_params(project, {"train": {"epochs": 1, "warmup_epochs": 0}})
    run_stage("train", train_arguments(), project)
    assert leftovers(project) == []
    assert (project / "data" / "model" / "model.weights.h5").is_file()


def test_an_output_folder_that_cannot_be_made_is_one_line(project: Path) -> None:
    (project / "reports").write_text("a file where the reports folder should be")
    result = run_stage("backprop", ["--report", "reports/backprop.json",
                                    "--loss-plot", "reports/backprop/loss.tsv"],
                       project, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] in {
        "error: reports: File exists",
        "error: reports/backprop: Not a directory",
    }
    assert "Traceback" not in result.stderr


def test_bad_process_settings_are_one_line(project: Path) -> None:
    (project / "params.yaml").write_text(
        (project / "params.yaml")
        .read_text()
        .replace("distribute: none", "distribute: data_parallel")
    )
    environment = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:1",
                   "KERAS_DISTRIBUTION_NUM_PROCESSES": "two",
                   "KERAS_DISTRIBUTION_PROCESS_ID": "0"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "stages.train", *train_arguments()],
        cwd=project,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "error: KERAS_DISTRIBUTION_NUM_PROCESSES = 'two': must be a whole number"
    )
    for output in TRAIN_OUTPUTS:
        assert not (project / output).exists(), output


@pytest.mark.parametrize(
    ("stage", "arguments"),
    [
        ("prepare", ["--archive", "a.tar.gz", "--output", "data", "--report", "data.json"]),
        ("predict", ["photo.png"]),
        ("train", ["--prepared", "p", "--model", "m", "--live", "l", "--summary", "s.json",
                   "--history", "h.json"]),
    ],
)  # fmt: skip
def test_ctrl_c_while_the_libraries_load_is_one_line(
    tmp_path: Path, stage: str, arguments: list[str]
) -> None:
    # -X importtime reports each import as it completes: once numpy's is there, the
    # stage's other libraries (scikit-learn, Pillow, h5py) are still loading.
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", f"stages.{stage}", *arguments],
        cwd=tmp_path,
        env=command_environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.rsplit("|", 1)[-1].strip() == "numpy":
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == INTERRUPTED_STATUS
    assert [line for line in rest.splitlines() if not line.startswith("import time:")] == [
        "error: interrupted; no output was changed"
    ]
    assert list(tmp_path.iterdir()) == []
