"""Seeds as a DVC matrix, paired comparisons of revisions, and a sweep shared by two machines.

Real dvc in copies of the project on the tiny synthetic archive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SEED, commit, run, stages_run, update_params

pytestmark = pytest.mark.e2e


def metrics(project: Path) -> dict:
    return json.loads((project / "reports" / "metrics.json").read_text())


def test_adding_a_seed_trains_it_alone_and_removing_one_trains_nothing(reproduced: Path) -> None:
    commit(reproduced, "one seed")
    update_params(reproduced, {"train": {"seeds": [SEED, 7, 1]}})
    added = run(["dvc", "repro"], reproduced).stdout
    assert stages_run(added) == {
        "params", "train@7", "train@1", "evaluate@7", "evaluate@1", "aggregate", "plots"
    }  # fmt: skip
    three = metrics(reproduced)["validation"]
    assert (three["n"], three["interval"]) == (3, "t over 3 seeds")
    assert three["low"] <= three["accuracy"] <= three["high"]
    cost = json.loads((reproduced / "reports" / "cost.json").read_text())
    assert cost["trainings"] == 3

    update_params(reproduced, {"train": {"seeds": [SEED, 1]}})
    removed = run(["dvc", "repro"], reproduced).stdout
    assert stages_run(removed) == {"params", "aggregate", "plots"}
    assert metrics(reproduced)["validation"]["n"] == 2

    # Back again: DVC's run-cache restores seed 7's training instead of running it.
    update_params(reproduced, {"train": {"seeds": [SEED, 1, 7]}})
    back = run(["dvc", "repro"], reproduced).stdout
    assert "Stage 'train@7' is cached - skipping run, checking out outputs" in back
    assert not {"train@7", "evaluate@7"} & stages_run(back)


def test_compare_pairs_two_revisions_and_an_experiment(reproduced: Path) -> None:
    commit(reproduced, "baseline")
    same = run(["cifar10-compare", "HEAD", "workspace"], reproduced).stdout
    assert "validation accuracy, HEAD - workspace: +0.0000" in same
    assert "verdict: not distinguishable at 1 seed" in same

    run(["dvc", "exp", "run", "--name", "one-epoch", "-S", "train.epochs=1"], reproduced)
    against = run(["cifar10-compare", "one-epoch", "HEAD"], reproduced).stdout
    assert "over the images:" in against
    assert "(paired bootstrap over 40 images)" in against
    assert "verdict: " in against

    wrong = run(["cifar10-compare", "HEAD", "no-such-revision"], reproduced, check=False)
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: no-such-revision: cannot read dvc.yaml")


def test_two_machines_share_a_sweep_through_git_and_dvc_remotes(
    reproduced: Path, tmp_path: Path
) -> None:
    first = reproduced
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    # A DVC remote both machines reach, committed, and the git remote they share.
    run(["dvc", "remote", "remove", "--local", "local"], first)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "shared-storage")], first)
    commit(first, "baseline with a shared DVC remote")
    run(["git", "remote", "add", "origin", str(origin)], first)
    run(["git", "push", "-q", "origin", "main"], first)
    run(["dvc", "push", "--run-cache"], first)
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(origin), str(second)], tmp_path)
    run(["dvc", "pull"], second)

    # Each machine runs its share of the grid and pushes it, run-cache included.
    for project, epochs in ((first, 4), (second, 5)):
        run(["dvc", "exp", "run", "--name", f"epochs-{epochs}", "-S", f"train.epochs={epochs}"],
            project)  # fmt: skip
        run(["dvc", "exp", "push", "--run-cache", "origin", f"epochs-{epochs}"], project)
    # One pull collects the whole sweep.
    run(["dvc", "exp", "pull", "--run-cache", "origin", "epochs-5"], first)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], first).stdout)
    names = {
        revision.get("name")
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for revision in experiment["revs"]
    }
    assert {"epochs-4", "epochs-5"} <= names
    compared = run(["cifar10-compare", "epochs-4", "epochs-5"], first).stdout
    assert "verdict: " in compared
    # The second machine reuses what the first computed instead of training it again.
    run(["dvc", "exp", "pull", "--run-cache", "origin", "epochs-4"], second)
    again = run(["dvc", "exp", "run", "-S", "train.epochs=4"], second).stdout
    assert f"Stage 'train@{SEED}' is cached - skipping run, checking out outputs" in again
