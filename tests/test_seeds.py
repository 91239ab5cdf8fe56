"""Seeds as a DVC matrix and paired comparisons of revisions: real dvc in copies of the
project on the tiny synthetic archive (tests/test_readme.py shares a sweep between two)."""

from __future__ import annotations

import json
import re
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

    # Back again: its training is not run again (its outputs are still in the workspace,
    # and in DVC's run-cache).
    update_params(reproduced, {"train": {"seeds": [SEED, 1, 7]}})
    back = run(["dvc", "repro"], reproduced).stdout
    assert re.search(r"Stage 'train@7' (is cached|didn't change)", back), back
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
