"""End to end: real dvc commands on a copy of this project reading a tiny synthetic archive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    ALL_STAGES,
    FIRST_REPRO_LOG,
    LIBRARY_LINE,
    MODEL,
    QUICK,
    SEED_REPORTS,
    TRAINING_STAGES,
    commit,
    output_hashes,
    run,
    stages_run,
    update_params,
)

pytestmark = pytest.mark.e2e

FIGURES = ("samples", "training_loss", "loss", "accuracy", "test_predictions",
           "confusion_matrix", "confident_errors")  # fmt: skip


def only_params_always_changes(status_json: str) -> bool:
    """Whether `dvc status --json` says everything is up to date but the params check."""
    return json.loads(status_json) == {"params": ["always changed"]}


def test_repro_builds_everything_then_does_nothing(reproduced: Path) -> None:
    project = reproduced
    outputs = ["data/prepared/train_images.npy", f"{MODEL}/model.keras",
               "reports/data.json", "reports/metrics.json", "reports/backprop.json",
               SEED_REPORTS.evaluation.test_predictions.as_posix(), "reports/cost.json",
               "reports/validation_predictions.csv", "reports/curves.csv"]  # fmt: skip
    for name in outputs + [f"reports/figures/{figure}.png" for figure in FIGURES]:
        assert (project / name).is_file(), name
    assert only_params_always_changes(run(["dvc", "status", "--json"], project).stdout)
    again = run(["dvc", "repro"], project)
    # The params stage validates params.yaml on every run; its records stay the same.
    assert stages_run(again.stdout) == {"params"}

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    workspace = shown[""]["data"] if "" in shown else shown["workspace"]["data"]
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    # The metrics are the few scalars to compare experiments by, and the cost.
    assert set(workspace) == {"reports/metrics.json", "reports/cost.json"}
    assert workspace["reports/metrics.json"]["data"] == metrics
    assert set(metrics) == {"test", "validation"}
    assert metrics["validation"]["n"] == 1
    assert metrics["validation"]["interval"] == "binomial over 40 images, 1 seed"
    assert metrics["validation"]["low"] < metrics["validation"]["accuracy"]
    # The synthetic classes are learnable: far above chance (0.1) after three epochs.
    assert metrics["validation"]["accuracy"] > 0.5
    backprop = json.loads((project / "reports" / "backprop.json").read_text())
    assert backprop["loss"] == 0.1332476222330792

    run(["dvc", "plots", "show", "--out", "plots-html"], project)
    html = (project / "plots-html" / "index.html").read_text()
    for figure in FIGURES:
        assert f"{figure}.png" in html


def test_a_plain_repro_prints_no_line_from_a_library(reproduced_once: Path) -> None:
    # TensorFlow is installed, and Keras' serializer imports it to save the JAX model.
    log = (reproduced_once.parent / FIRST_REPRO_LOG).read_text()
    assert "Running stage 'train@42'" in log
    assert LIBRARY_LINE.findall(log) == []


def test_changing_epochs_reruns_training_and_diffs_both_revisions(reproduced: Path) -> None:
    project = reproduced
    commit(project, "first run")
    update_params(project, {"train": {"epochs": 4}})
    result = run(["dvc", "repro"], project)
    assert stages_run(result.stdout) == TRAINING_STAGES

    params_diff = json.loads(run(["dvc", "params", "diff", "--json"], project).stdout)
    epochs = params_diff["params.yaml"]["train.epochs"]
    assert (epochs["old"], epochs["new"]) == (3, 4)
    # metrics diff lists changed values only; the loss changes with every extra epoch
    # (the accuracy on the synthetic archive may already be 1.0).
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)
    assert "test.loss" in metrics_diff["reports/metrics.json"]

    data = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], project).stdout)["data"]
    for name in ("Loss per epoch, every seed", "Test confusion matrix"):
        assert name in data, sorted(data)
    assert {"HEAD", "workspace"} <= {
        rev for entry in data["Loss per epoch, every seed"] for rev in entry.get("revisions", [])
    }


def test_changing_a_plot_setting_reruns_only_plots(reproduced: Path) -> None:
    update_params(reproduced, {"plots": {"dpi": 60}})
    assert stages_run(run(["dvc", "repro"], reproduced).stdout) == {"params", "plots"}


def test_a_typo_in_a_key_no_stage_reads_fails_repro(reproduced: Path) -> None:
    params = reproduced / "params.yaml"
    params.write_text(params.read_text().replace("  timeout_seconds:", "  timeout_secs:"))
    result = run(["dvc", "repro"], reproduced, check=False)
    assert result.returncode != 0
    assert "error: params.yaml: data.timeout_secs is not a known key" in result.stderr


def test_bad_params_stop_the_pipeline_with_one_line(make_project: Callable[..., Path]) -> None:
    project = make_project(**QUICK)
    update_params(project, {"prepare": {"val_fraction": 1.5}})
    result = run(["dvc", "repro", "prepare"], project, check=False)
    assert result.returncode != 0
    assert (
        "error: params.yaml: prepare.val_fraction = 1.5: Input should be less than or equal to 0.5"
        in result.stderr
    )
    assert not (project / "data" / "prepared").exists()


def experiments(project: Path) -> list[dict]:
    """Every experiment's data (params, metrics) as `dvc exp show --json` gives it."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    return [
        revision["data"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for revision in experiment["revs"]
    ]


def test_exp_run_with_set_param_reaches_exp_show(reproduced: Path) -> None:
    commit(reproduced, "first run")
    result = run(["dvc", "exp", "run", "-S", "train.epochs=1"], reproduced)
    assert stages_run(result.stdout) == TRAINING_STAGES
    (experiment,) = experiments(reproduced)
    assert experiment["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
    metrics = experiment["metrics"]["reports/metrics.json"]["data"]
    assert metrics == json.loads((reproduced / "reports" / "metrics.json").read_text())
    seed_metrics = json.loads((reproduced / SEED_REPORTS.evaluation.metrics).read_text())
    assert seed_metrics["validation"]["epoch"] == 1


def test_a_run_killed_in_training_completes_as_if_never_killed(
    reproduced: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(reproduced, reference, symlinks=True)
    for project in (reproduced, reference):
        update_params(project, {"train": {"epochs": 4}})
    run(["dvc", "repro"], reference)

    dvc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=reproduced,
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    assert dvc.stdout is not None
    for line in dvc.stdout:
        if line.startswith("Epoch 2/"):
            os.killpg(dvc.pid, signal.SIGKILL)  # dvc and the train stage under it
            break
    dvc.communicate(timeout=60)
    assert dvc.returncode == -signal.SIGKILL

    result = run(["dvc", "repro"], reproduced)
    assert stages_run(result.stdout) == TRAINING_STAGES
    assert output_hashes(reproduced) == output_hashes(reference)
    assert list(reproduced.rglob(".*.tmp-*")) == []


def test_a_queued_experiment_after_a_committed_baseline_reruns_only_what_it_changes(
    reproduced: Path,
) -> None:
    commit(reproduced, "baseline: dvc.lock and the small reports")
    run(["dvc", "exp", "run", "--queue", "--name", "one-epoch", "-S", "train.epochs=1"], reproduced)
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], reproduced)
    log = run(["dvc", "queue", "logs", "one-epoch"], reproduced).stdout
    # The archive, the prepared data and the backprop check come from the cache.
    assert stages_run(log) == TRAINING_STAGES
    (experiment,) = experiments(reproduced)
    assert experiment["params"]["params.yaml"]["data"]["train"]["epochs"] == 1
    assert experiment["metrics"]["reports/metrics.json"]["data"]["validation"]["n"] == 1
    assert experiment["metrics"]["reports/cost.json"]["data"]["trainings"] == 1


def test_push_wipe_pull_restores_outputs(reproduced: Path) -> None:
    commit(reproduced, "first run")
    run(["dvc", "push"], reproduced)
    shutil.rmtree(reproduced / ".dvc" / "cache")
    for cached in ("data/prepared", "data/models", "reports/figures"):
        shutil.rmtree(reproduced / cached)
    run(["dvc", "pull"], reproduced)
    assert (reproduced / "reports" / "figures" / "samples.png").is_file()
    assert (reproduced / MODEL / "model.keras").is_file()
    assert only_params_always_changes(run(["dvc", "status", "--json"], reproduced).stdout)


def test_forced_repro_is_byte_identical_but_for_the_cost(reproduced: Path) -> None:
    hashes = output_hashes(reproduced)
    cost = json.loads((reproduced / "reports" / "cost.json").read_text())
    metrics = (reproduced / "reports" / "metrics.json").read_bytes()
    result = run(["dvc", "repro", "--force"], reproduced)
    assert stages_run(result.stdout) == set(ALL_STAGES)
    # dvc.lock holds every output's hash: model, figures and reports are reproduced bit for
    # bit; what the trainings cost (seconds, memory) is measured again.
    assert output_hashes(reproduced) == hashes
    assert (reproduced / "reports" / "metrics.json").read_bytes() == metrics
    again = json.loads((reproduced / "reports" / "cost.json").read_text())
    assert set(again) == set(cost)
    assert again["fit_seconds"] > 0


def test_the_tensorflow_backend_trains_through_dvc(reproduced: Path) -> None:
    # The default backend, JAX, trained `reproduced`; the same pipeline on TensorFlow:
    commit(reproduced, "baseline on JAX")
    result = run(["dvc", "exp", "run", "-S", "train.backend=tensorflow"], reproduced)
    assert stages_run(result.stdout) == TRAINING_STAGES
    assert "> KERAS_BACKEND=tensorflow python -m stages train" in result.stdout
    # TensorFlow computes: it may say that oneDNN is on, but nothing about CUDA, no error.
    assert [line for line in LIBRARY_LINE.findall(result.stdout + result.stderr)
            if "onednn" not in line.lower() and "absl::" not in line] == []  # fmt: skip
    metrics = json.loads((reproduced / "reports" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.5  # learnable classes, as on JAX
