"""The command-line helpers every stage shares (faults are in test_faults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_params

from stages.cli import outputs_removed_by_dvc
from stages.start import library_settings

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


def stage_environment(environment: dict[str, str]) -> dict[str, str]:
    """What start_command leaves in a command line's environment, given ``environment``."""
    script = "import json, os\nfrom stages.start import start_command\nstart_command()\n"
    script += "print(json.dumps(dict(os.environ)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={name: value for name, value in environment.items() if value is not None},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def test_a_stage_starts_with_the_libraries_settings_unless_the_user_set_them(
    tmp_path: Path,
) -> None:
    base = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for name in library_settings(tmp_path):
        base.pop(name, None)
    defaults = stage_environment(base)
    assert defaults["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"  # no GPU hoarding
    assert defaults["TF_CPP_MIN_LOG_LEVEL"] == "2"
    cache = Path(defaults["JAX_COMPILATION_CACHE_DIR"])
    assert cache.is_relative_to(tmp_path)  # the user's cache directory, not the repository
    assert defaults["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    users = {"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "JAX_COMPILATION_CACHE_DIR": ""}
    theirs = stage_environment({**base, **users})
    assert {name: theirs[name] for name in users} == users
