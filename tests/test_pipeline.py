"""End to end: real dvc commands on a copy of this project reading a tiny synthetic archive."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run, update_params

pytestmark = pytest.mark.slow

ALL_STAGES = ("download", "prepare", "backprop", "train", "evaluate", "plots")
FIGURES = ("samples", "training_loss", "loss", "accuracy", "test_predictions",
           "confusion_matrix", "confident_errors")  # fmt: skip
# Quick but real: two epochs of the default model on 200 dev images.
QUICK = {"train": {"epochs": 2}}


def stages_run(output: str) -> set[str]:
    """Names of the stages a dvc repro/exp run actually ran."""
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


def commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


@pytest.fixture
def reproduced(make_project: Callable[..., Path]) -> Path:
    project = make_project(**QUICK)
    result = run(["dvc", "repro"], project)
    assert stages_run(result.stdout) == set(ALL_STAGES)
    return project


def test_repro_builds_everything_then_does_nothing(reproduced: Path) -> None:
    project = reproduced
    outputs = ["data/prepared/train_images.npy", "data/model/model.weights.h5",
               "reports/data.json", "reports/metrics.json", "reports/backprop.json",
               "reports/evaluate/predictions.csv"]  # fmt: skip
    for name in outputs + [f"reports/figures/{figure}.png" for figure in FIGURES]:
        assert (project / name).is_file(), name
    assert "up to date" in run(["dvc", "status"], project).stdout
    again = run(["dvc", "repro"], project)
    assert stages_run(again.stdout) == set()

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    workspace = metrics[""]["data"] if "" in metrics else metrics["workspace"]["data"]
    test_metrics = workspace["reports/metrics.json"]["data"]["test"]
    assert 0.0 <= test_metrics["accuracy"] <= 1.0
    backprop = workspace["reports/backprop.json"]["data"]
    assert json.dumps(backprop).count("max_abs_error") >= 3

    run(["dvc", "plots", "show", "--out", "plots-html"], project)
    html = (project / "plots-html" / "index.html").read_text()
    for figure in FIGURES:
        assert f"{figure}.png" in html


def test_changing_epochs_reruns_training_and_diffs_both_revisions(reproduced: Path) -> None:
    project = reproduced
    commit(project, "first run")
    update_params(project, {"train": {"epochs": 3}})
    result = run(["dvc", "repro"], project)
    assert stages_run(result.stdout) == {"train", "evaluate", "plots"}

    params_diff = json.loads(run(["dvc", "params", "diff", "--json"], project).stdout)
    epochs = params_diff["params.yaml"]["train.epochs"]
    assert (epochs["old"], epochs["new"]) == (2, 3)
    # metrics diff lists changed values only; the loss changes with every extra epoch
    # (the accuracy on the synthetic archive may already be 1.0).
    metrics_diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)
    assert "test.loss" in metrics_diff["reports/metrics.json"]

    data = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], project).stdout)["data"]
    for name in ("Loss per epoch", "Test confusion matrix"):
        assert name in data, sorted(data)
    assert {"HEAD", "workspace"} <= {
        rev for entry in data["Loss per epoch"] for rev in entry.get("revisions", [])
    }


def test_changing_a_plot_setting_reruns_only_plots(reproduced: Path) -> None:
    update_params(reproduced, {"plots": {"dpi": 60}})
    assert stages_run(run(["dvc", "repro"], reproduced).stdout) == {"plots"}


def test_bad_params_stop_the_pipeline_with_one_line(make_project: Callable[..., Path]) -> None:
    project = make_project(**QUICK)
    update_params(project, {"prepare": {"val_fraction": 1.5}})
    result = run(["dvc", "repro", "prepare"], project, check=False)
    assert result.returncode != 0
    assert (
        "error: params.yaml: prepare.val_fraction = 1.5: Input should be less than 1"
        in result.stderr
    )
    assert not (project / "data" / "prepared").exists()


def test_exp_run_with_set_param(reproduced: Path) -> None:
    commit(reproduced, "first run")
    run(["dvc", "exp", "run", "-S", "train.epochs=1"], reproduced)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], reproduced).stdout)
    assert json.dumps(shown).count('"epochs": 1') >= 1


def test_push_wipe_pull_restores_outputs(reproduced: Path) -> None:
    commit(reproduced, "first run")
    run(["dvc", "push"], reproduced)
    shutil.rmtree(reproduced / ".dvc" / "cache")
    for cached in ("data/prepared", "data/model", "reports/figures"):
        shutil.rmtree(reproduced / cached)
    run(["dvc", "pull"], reproduced)
    assert (reproduced / "reports" / "figures" / "samples.png").is_file()
    assert (reproduced / "data" / "model" / "model.weights.h5").is_file()
    assert "up to date" in run(["dvc", "status"], reproduced).stdout


def test_forced_repro_is_byte_identical(reproduced: Path) -> None:
    lock = (reproduced / "dvc.lock").read_bytes()
    metrics = (reproduced / "reports" / "metrics.json").read_bytes()
    result = run(["dvc", "repro", "--force"], reproduced)
    assert stages_run(result.stdout) == set(ALL_STAGES)
    # dvc.lock holds every output's hash: model, figures and reports are reproduced bit for bit.
    assert (reproduced / "dvc.lock").read_bytes() == lock
    assert (reproduced / "reports" / "metrics.json").read_bytes() == metrics
