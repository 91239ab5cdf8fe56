"""pytest's set-up and the fixtures the tests share (tests/helpers.py has the functions)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    ALL_STAGES,
    FIRST_REPRO_LOG,
    QUICK,
    QUICK_TRAIN,
    link_prepared,
    new_project,
    params_with,
    prepare_into,
    run,
    run_stage,
    stages_run,
    train_arguments,
    use_remote,
)

from cifar10.archive import load_cifar_archive
from cifar10.prepared import write_prepared
from cifar10.preprocessing import fit_preprocessing
from cifar10.split import split_dev
from tools.synthetic_archive import make_synthetic_archive


def pytest_configure(config: pytest.Config) -> None:
    """Set Keras' backend before any test module loads Keras: JAX, as dvc.yaml trains."""
    os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """JAX's persistent compilation cache of the stages the tests run: theirs, not the user's."""
    cache = tmp_path_factory.mktemp("jax-compilation-cache")
    previous = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        del os.environ["JAX_COMPILATION_CACHE_DIR"]
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic CIFAR-10 archive: 5 x 40 dev images and 40 test images."""
    path = tmp_path_factory.mktemp("archive") / "cifar-10-tiny.tar.gz"
    make_synthetic_archive(path, images_per_batch=40, seed=0)
    return path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """The tiny archive prepared in this process, with ZCA, as the stage does: read-only."""
    params = params_with({"prepare": {"scaling": "zca"}}).prepare
    archive = load_cifar_archive(tiny_archive)
    train, validation = split_dev(archive.dev, params.val_fraction, params.seed)
    folder = tmp_path_factory.mktemp("prepared") / "prepared"
    splits = {"train": train, "validation": validation, "test": archive.test}
    write_prepared(folder, splits, fit_preprocessing(train.images, params))
    return folder


@pytest.fixture(scope="session")
def prepared_by_stage(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """The tiny archive prepared by the prepare stage's command, with ZCA: read-only."""
    folder = tmp_path_factory.mktemp("prepared-by-stage")
    return prepare_into(folder, tiny_archive, {"prepare": {"scaling": "zca"}})


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, prepared_by_stage: Path) -> Path:
    """A folder with prepared data and a quick model the train stage trained: read-only."""
    folder = link_prepared(
        tmp_path_factory.mktemp("trained"), prepared_by_stage, {"train": QUICK_TRAIN}
    )
    run_stage("train", train_arguments(), folder)
    return folder


@pytest.fixture
def make_project(tmp_path: Path, tiny_archive: Path) -> Callable[..., Path]:
    """Return a factory of git + DVC project copies that read the tiny archive offline."""

    def factory(**changes: dict[str, object]) -> Path:
        return new_project(tmp_path, tiny_archive, changes)

    return factory


@pytest.fixture(scope="session")
def reproduced_once(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """A project copy after its first `dvc repro`, which must run every stage.

    What that repro printed is beside it, in FIRST_REPRO_LOG.
    """
    project = new_project(tmp_path_factory.mktemp("reproduced"), tiny_archive, QUICK)
    result = run(["dvc", "repro"], project)
    (project.parent / FIRST_REPRO_LOG).write_text(result.stdout + result.stderr)
    assert stages_run(result.stdout) == set(ALL_STAGES)
    return project


@pytest.fixture
def reproduced(tmp_path: Path, reproduced_once: Path) -> Path:
    """A copy of the reproduced project (git, DVC cache and all) with a remote of its own."""
    project = tmp_path / "project"
    shutil.copytree(reproduced_once, project, symlinks=True)
    use_remote(project, tmp_path / "remote")
    return project
