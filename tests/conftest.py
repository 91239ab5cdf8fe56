"""Shared fixtures: tiny synthetic archives and throw-away copies of the DVC project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stages.cifar import file_md5, make_synthetic_archive

REPOSITORY = Path(__file__).resolve().parent.parent
# What a project copy needs: the pipeline definition, its code and DVC's own config.
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
)
PROJECT_FOLDERS = ("stages",)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic CIFAR-10 archive: 5 x 40 dev images and 40 test images."""
    path = tmp_path_factory.mktemp("archive") / "cifar-10-tiny.tar.gz"
    make_synthetic_archive(path, images_per_batch=40, seed=0)
    return path


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (dvc, git, python) in ``cwd`` with the venv's tools first on PATH."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["DVC_NO_ANALYTICS"] = "1"
    for role in ("AUTHOR", "COMMITTER"):
        environment.setdefault(f"GIT_{role}_NAME", "pipeline tests")
        environment.setdefault(f"GIT_{role}_EMAIL", "tests@example.invalid")
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def update_params(project: Path, changes: dict[str, dict[str, object]]) -> None:
    """Change keys of the project's params.yaml (section -> key -> value)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def make_project(tmp_path: Path, tiny_archive: Path) -> Callable[..., Path]:
    """Return a factory of git+DVC project copies that read the tiny archive offline."""

    def factory(**changes: dict[str, object]) -> Path:
        project = tmp_path / "project"
        for name in PROJECT_FILES:
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, project / name)
        for name in PROJECT_FOLDERS:
            shutil.copytree(
                REPOSITORY / name, project / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        run(["git", "init", "-q", "-b", "main"], project)
        # The committed remote points beside the repository; keep test pushes in tmp_path.
        run(["dvc", "remote", "modify", "local", "url", str(tmp_path / "remote")], project)
        update_params(
            project,
            {"data": {"archive": str(tiny_archive), "md5": file_md5(tiny_archive)}, **changes},
        )
        run(["git", "add", "-A"], project)
        run(["git", "commit", "-qm", "project copy"], project)
        return project

    return factory
