"""The command-line helpers every stage shares (faults are in test_faults.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_params

from stages.cli import outputs_removed_by_dvc


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (import hooks stay out of the test process)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_kept_unloaded_packages_look_uninstalled_and_loaded_ones_stay() -> None:
    output = run_python("""
        import json
        from stages.cli import keep_unloaded
        keep_unloaded({"json", "sqlite3", "csv"})
        for name in ("sqlite3", "sqlite3.dbapi2", "csv"):
            try:
                __import__(name)
            except ModuleNotFoundError:
                print("hidden", name)
        print("loaded", json.dumps([1]))
        import decimal
        print("other", decimal.Decimal(1))
    """)
    assert output.splitlines() == [
        "hidden sqlite3", "hidden sqlite3.dbapi2", "hidden csv", "loaded [1]", "other 1",
    ]  # fmt: skip


LOCK = """\
schema: '2.0'
stages:
  train:
    cmd: python -m stages.train
    outs:
    - path: data/model
      md5: 0123456789abcdef0123456789abcdef.dir
    - path: reports/train/summary.json
      md5: 0123456789abcdef0123456789abcdef
"""


def test_what_dvc_removed_is_named_with_the_command_that_restores_it(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text(LOCK)
    (tmp_path / "data" / "model").mkdir(parents=True)
    environment = {"DVC_STAGE": "train", "DVC_ROOT": str(tmp_path)}
    assert outputs_removed_by_dvc(environment) == (
        "DVC removed reports/train/summary.json before running train; "
        "`dvc checkout train` puts back the versions dvc.lock records"
    )


@pytest.mark.parametrize(
    "environment",
    [{}, {"DVC_STAGE": "evaluate"}, {"DVC_STAGE": "train", "DVC_ROOT": "/nonexistent"}],
    ids=["run by itself", "no run recorded", "no dvc.lock"],
)
def test_nothing_is_said_when_dvc_removed_nothing_recorded(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    (tmp_path / "dvc.lock").write_text(LOCK)
    assert outputs_removed_by_dvc({"DVC_ROOT": str(tmp_path), **environment}) == ""


def test_a_failing_stage_under_dvc_ends_with_what_dvc_removed(tmp_path: Path) -> None:
    write_params(tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK.replace("train", "plots"))
    arguments = ["--prepared", "data/prepared", "--history", "history.json",
                 "--predictions", "predictions.csv", "--metrics", "metrics.json",
                 "--output", "figures"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "stages.plots", *arguments],
        cwd=tmp_path,
        env={**os.environ, "DVC_STAGE": "plots", "DVC_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: metrics.json: missing; run `dvc repro evaluate` to write it again",
        (
            "error: DVC removed data/model, reports/plots/summary.json before running plots; "
            "`dvc checkout plots` puts back the versions dvc.lock records"
        ),
    ]
