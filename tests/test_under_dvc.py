"""The stages' promises kept the way DVC runs them, with real dvc commands on project copies.

DVC deletes a stage's outputs before running it, reads params.yaml as YAML 1.2, lets a
second `dvc exp run` rewrite params.yaml while a run goes on, and cannot see a local
archive that no md5 pins. Each test makes one of those happen.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from helpers import (
    MODEL,
    REPOSITORY,
    SEED,
    TRAIN_OUTPUTS,
    command_environment,
    commit,
    run,
    stages_run,
    update_params,
)

from cifar10.archive import TRAIN_BATCHES
from tools.synthetic_archive import synthetic_members, write_archive

pytestmark = pytest.mark.e2e

PREPARE_OUTPUTS = ("data/prepared", "reports/data.json")
TRAIN = f"train@{SEED}"  # the committed seed's training stage
STAGE_OUTPUTS = {TRAIN: TRAIN_OUTPUTS, "prepare": PREPARE_OUTPUTS}


def restore_line(stage: str, outputs: tuple[str, ...]) -> str:
    """The line a failed stage ends with under DVC (outputs as dvc.lock lists them)."""
    return (
        f"error: DVC removed {', '.join(sorted(outputs))} before running {stage}; "
        f"`dvc checkout {stage}` puts back the versions dvc.lock records"
    )


def check_named_then_restored(
    project: Path, stage: str, before: dict[str, str], lines: list[str]
) -> None:
    """The failed stage's last line names what DVC removed; `dvc checkout` puts it back."""
    outputs = STAGE_OUTPUTS[stage]
    assert restore_line(stage, outputs) in lines
    run(["dvc", "checkout", stage], project)
    assert file_hashes(project, outputs) == before


def file_hashes(project: Path, outputs: tuple[str, ...]) -> dict[str, str]:
    """The md5 of every file of ``outputs`` (files or folders), by path."""
    files = [
        path
        for output in outputs
        for path in (
            [project / output] if (project / output).is_file() else (project / output).rglob("*")
        )
        if path.is_file()
    ]
    return {
        str(path.relative_to(project)): hashlib.md5(
            path.read_bytes(), usedforsecurity=False
        ).hexdigest()
        for path in files
    }


def start(command: list[str], project: Path) -> subprocess.Popen[str]:
    """Start ``command`` in a session of its own, as a terminal's foreground job."""
    return subprocess.Popen(
        command,
        cwd=project,
        env=command_environment({"PYTHONUNBUFFERED": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until(process: subprocess.Popen[str], prefix: str) -> None:
    """Read the process's output until a line starts with ``prefix``."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(prefix):
            return
    pytest.fail(f"no line starting with {prefix!r}: the run ended first")


def press_ctrl_c(process: subprocess.Popen[str]) -> list[str]:
    """Send SIGINT to the whole job, as Ctrl-C in a terminal does; return the rest of its output."""
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return output.splitlines()


def test_a_failed_train_stage_says_what_dvc_removed_and_checkout_restores_it(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline")
    before = file_hashes(reproduced, TRAIN_OUTPUTS)
    update_params(reproduced, {"train": {"distribute": "data_parallel"}})
    bad_settings = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:1",
                    "KERAS_DISTRIBUTION_NUM_PROCESSES": "abc",
                    "KERAS_DISTRIBUTION_PROCESS_ID": "0"}  # fmt: skip
    result = run(["dvc", "repro"], reproduced, check=False, environment=bad_settings)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert "error: KERAS_DISTRIBUTION_NUM_PROCESSES = 'abc': must be a whole number" in lines
    assert not (reproduced / MODEL).exists()
    check_named_then_restored(reproduced, TRAIN, before, lines)
    assert run(["git", "status", "--porcelain"], reproduced).stdout == " M params.yaml\n"


def test_a_stage_that_dies_below_python_is_named_by_dvc_and_checkout_restores_it(
    reproduced: Path,
) -> None:
    # XLA aborts the process on an unknown flag before Python can say a word: DVC's own
    # line names the stage, and the README's "When a run fails" says what restores it.
    commit(reproduced, "baseline")
    before = file_hashes(reproduced, TRAIN_OUTPUTS)
    update_params(reproduced, {"train": {"epochs": 4}})
    result = run(["dvc", "repro"], reproduced, check=False,
                 environment={"XLA_FLAGS": "--xla_no_such_flag"})  # fmt: skip
    assert result.returncode != 0
    assert "Unknown flag in XLA_FLAGS: --xla_no_such_flag" in result.stderr
    assert f"ERROR: failed to reproduce '{TRAIN}'" in result.stderr
    assert not (reproduced / MODEL).exists()
    readme = (REPOSITORY / "README.md").read_text()
    assert "`dvc checkout <stage>` puts back" in readme
    run(["dvc", "checkout", TRAIN], reproduced)
    assert file_hashes(reproduced, TRAIN_OUTPUTS) == before


def test_ctrl_c_in_train_under_dvc_says_what_dvc_removed_and_checkout_restores_it(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline")
    before = file_hashes(reproduced, TRAIN_OUTPUTS)
    update_params(reproduced, {"train": {"epochs": 300}})
    process = start(["dvc", "repro"], reproduced)
    read_until(process, "Epoch 2/")
    lines = press_ctrl_c(process)
    assert process.returncode != 0
    assert "error: interrupted" in lines
    check_named_then_restored(reproduced, TRAIN, before, lines)


def test_sigterm_to_dvc_alone_leaves_its_stage_to_finish_and_the_next_repro_reruns_it(
    reproduced: Path,
) -> None:
    # `kill <dvc's pid>`, not the job: dvc ends at once, and the stage it started runs on.
    commit(reproduced, "baseline")
    update_params(reproduced, {"train": {"epochs": 4}})
    process = start(["dvc", "repro"], reproduced)
    read_until(process, "Epoch 1/")
    stage = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM
    _, running = psutil.wait_procs(stage, timeout=300)
    assert running == [], "the orphaned stage did not finish"
    assert (reproduced / MODEL).is_dir()  # it wrote its outputs, on its own
    assert TRAIN in run(["dvc", "status"], reproduced).stdout  # dvc.lock does not record them
    result = run(["dvc", "repro"], reproduced)
    assert TRAIN in stages_run(result.stdout)
    assert "Data and pipelines are up to date." in run(["dvc", "status", TRAIN], reproduced).stdout


def test_ctrl_c_in_prepare_under_dvc_says_what_dvc_removed_and_checkout_restores_it(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline")
    before = file_hashes(reproduced, PREPARE_OUTPUTS)
    update_params(reproduced, {"prepare": {"zca_epsilon": 0.5}})
    process = start(["dvc", "repro"], reproduced)
    read_until(process, "stages.prepare: reading")
    lines = press_ctrl_c(process)
    assert "error: interrupted" in lines
    check_named_then_restored(reproduced, "prepare", before, lines)


def write_archive_of_one_automobile(path: Path) -> None:
    """A sound archive in the CIFAR-10 format that no stratified split can split: one
    automobile among the development images, every other one an airplane."""
    members = synthetic_members(images_per_batch=40, seed=0)
    for number, name in enumerate(TRAIN_BATCHES):
        batch = pickle.loads(members[name])  # our own synthetic batch
        batch[b"labels"] = [1 if number == index == 0 else 0 for index in range(40)]
        members[name] = pickle.dumps(batch, protocol=2)
    write_archive(path, members)


def test_a_local_archive_replaced_in_place_reruns_download_and_a_failed_prepare_is_restorable(
    reproduced: Path, tiny_archive: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "local.tar.gz"
    shutil.copy(tiny_archive, archive)
    update_params(reproduced, {"data": {"archive": str(archive), "md5": None}})
    # The same images: download runs again, the prepared data comes as it was.
    assert "prepare" not in stages_run(run(["dvc", "repro"], reproduced).stdout)
    commit(reproduced, "baseline")
    before = file_hashes(reproduced, PREPARE_OUTPUTS)

    # No md5 pins the archive: DVC itself cannot see that the file changed.
    write_archive_of_one_automobile(archive)
    result = run(["dvc", "repro"], reproduced, check=False)
    assert {"params", "download", "prepare"} <= stages_run(result.stdout)
    lines = result.stderr.splitlines()
    assert any("1 development image of class 'automobile'" in line for line in lines), lines
    check_named_then_restored(reproduced, "prepare", before, lines)


def test_an_experiment_with_earlier_params_takes_train_from_the_run_cache(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline: 3 epochs")
    four = run(["dvc", "exp", "run", "-S", "train.epochs=4"], reproduced)
    assert TRAIN in stages_run(four.stdout)
    three_again = run(["dvc", "exp", "run", "-S", "train.epochs=3"], reproduced)
    assert TRAIN not in stages_run(three_again.stdout)
    assert f"Stage '{TRAIN}' is cached - skipping run, checking out outputs" in three_again.stdout


def test_params_rewritten_by_a_concurrent_exp_run_fail_the_stage_and_nothing_is_recorded(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline")
    # Long enough to outlast the few seconds DVC waits for its lock.
    update_params(reproduced, {"train": {"epochs": 600}})
    lock = (reproduced / "dvc.lock").read_bytes()
    process = start(["dvc", "repro"], reproduced)
    read_until(process, "Epoch 2/")
    # It rewrites params.yaml, then finds the repository locked by the run going on.
    concurrent = run(["dvc", "exp", "run", "-S", "train.epochs=2"], reproduced, check=False)
    assert concurrent.returncode != 0
    assert re.search(r"^  epochs: 2\b", (reproduced / "params.yaml").read_text(), re.MULTILINE)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    (line,) = [line for line in output.splitlines() if "changed while the stage ran" in line]
    assert line.startswith("error: params.yaml")
    assert "nothing was written" in line
    assert (reproduced / "dvc.lock").read_bytes() == lock


@pytest.mark.parametrize("target", ["train", "prepare", "backprop"])
def test_a_typo_fails_a_repro_of_any_stage(reproduced: Path, target: str) -> None:
    params = reproduced / "params.yaml"
    params.write_text(params.read_text().replace("train:\n", "train:\n  epoch: 30\n", 1))
    result = run(["dvc", "repro", target], reproduced, check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.epoch is not a known key" in result.stderr.splitlines()
    # The params stage, upstream of every stage, fails first: nothing else runs.
    assert stages_run(result.stdout) == {"params"}


def test_a_relative_archive_path_is_refused_in_a_queued_experiment_with_what_to_write(
    reproduced: Path,
) -> None:
    # Queued experiments run in a copy of the repository under .dvc/tmp/exps/, where a
    # relative path names another file: the params stage says what to write instead.
    commit(reproduced, "baseline")
    run(["dvc", "exp", "run", "--queue", "--name", "relative",
         "-S", "data.archive=../cifar.tar.gz"], reproduced)  # fmt: skip
    run(["dvc", "queue", "start", "-j", "1"], reproduced)
    deadline = time.monotonic() + 300
    while "Queued" in (status := run(["dvc", "queue", "status"], reproduced).stdout) or (
        "Running" in status
    ):
        assert time.monotonic() < deadline
        time.sleep(2)
    assert "Failed" in status
    log = run(["dvc", "queue", "logs", "relative"], reproduced).stdout
    (line,) = [line for line in log.splitlines() if "a relative path" in line]
    assert line.startswith("error: params.yaml: data.archive = '../cifar.tar.gz'")
    assert "-S data.archive=$(realpath ../cifar.tar.gz)" in line
