"""Shared test helpers: tiny synthetic archives, params overrides, throw-away project copies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np
import pytest

from stages.cifar import CLASS_NAMES, FEATURES, file_md5
from stages.dataset import Preprocessing, Whitening, write_class_names, write_preprocessing
from stages.inference import ARCHITECTURE_FILE, WEIGHTS_FILE
from stages.params import Params, TrainParams, parse_params, read_params_file, validate_params
from tools.params_file import Changes, update_params_file
from tools.synthetic_archive import make_synthetic_archive

REPOSITORY = Path(__file__).resolve().parent.parent
# Keras reads its backend when it first loads: the tests' own training (in this process and
# in the stages they run) uses JAX, as dvc.yaml's train command does for train.backend: jax.
os.environ.setdefault("KERAS_BACKEND", "jax")
# The tests' own params.yaml: never the user's, which an applied experiment or another
# archive may have changed (and committed as a baseline).
TEST_PARAMS = REPOSITORY / "tests" / "params.yaml"
# What a project copy needs from this one: the pipeline definition and its code. Its
# DVC configuration is its own too (tests/conftest.py new_project), not the user's remote.
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore", "benchmarks/frontier.tsv")
PROJECT_FOLDERS = ("stages",)


def raw_params_for_tests() -> dict:
    """The tests' params.yaml, parsed as the stages and DVC parse it."""
    return parse_params(TEST_PARAMS.read_text(), str(TEST_PARAMS))


def params_for_tests(changes: Changes | None = None) -> Params:
    """The tests' params with ``changes`` applied, validated."""
    raw = raw_params_for_tests()
    for section, values in (changes or {}).items():
        raw[section].update(values)
    return validate_params(raw)


def quick_train_params(**changes: object) -> TrainParams:
    """Train params for tests: the committed ones, small and quick, with ``changes``."""
    quick = {**QUICK_TRAIN, **changes}
    return params_for_tests({"train": quick}).train


def update_params(folder: Path, changes: Changes) -> None:
    """Change keys of ``folder``'s params.yaml (section -> key -> value)."""
    update_params_file(folder / "params.yaml", changes)


def write_params(folder: Path, changes: Changes | None = None) -> Path:
    """Write the tests' params.yaml with ``changes`` into ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEST_PARAMS, folder / "params.yaml")
    update_params(folder, changes or {})
    read_params_file(folder / "params.yaml")  # the test's own params must be valid
    return folder


def command_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of commands the tests run (``extra`` added): this checkout's code,
    the venv's tools (dvc, git, python) first on PATH.

    ``stages`` comes from this checkout wherever a command runs (an installed copy may
    be another checkout's); a project copy's own ``stages`` folder still comes first.
    """
    environment = {**os.environ, **(extra or {})}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")])
    )
    environment["DVC_NO_ANALYTICS"] = "1"
    for role in ("AUTHOR", "COMMITTER"):
        environment.setdefault(f"GIT_{role}_NAME", "pipeline tests")
        environment.setdefault(f"GIT_{role}_EMAIL", "tests@example.invalid")
    return environment


def run(
    command: list[str],
    cwd: Path,
    check: bool = True,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (dvc, git, python) in ``cwd``; ``environment`` adds variables."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=command_environment(environment),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def run_stage(
    stage: str, arguments: list[str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stages.<stage> arguments`` in ``cwd``, as dvc.yaml does."""
    return run([sys.executable, "-m", f"stages.{stage}", *arguments], cwd, check=check)


class AllocationPeak:
    """The peak of Python's allocations within a ``with`` block, in bytes (tracemalloc).

    Cheaper than :func:`peak_memory_mib` and in-process, for code that must refuse input
    before allocating for it; an exception leaving the block passes through.
    """

    def __init__(self) -> None:
        self.bytes = 0

    def __enter__(self) -> AllocationPeak:
        tracemalloc.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _, self.bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()


def peak_memory_mib(code: str, address_space_mib: int = 1024) -> tuple[str, float]:
    """Run Python ``code`` in a fresh interpreter; return what it printed and its peak, in MiB.

    The peak is the child's own high-water mark of resident memory (VmHWM), which starts
    afresh at exec: getrusage's ru_maxrss, for the child itself or as this process's
    RUSAGE_CHILDREN, carries over the size of the process it was forked from. The
    child's address space is capped, so code that would exhaust the machine fails with
    MemoryError instead, and the test with it; code that would never end, with a timeout.
    """
    limit = address_space_mib << 20
    script = (
        f"import resource\nresource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n{code}\n"
        "from pathlib import Path\n"
        "print(Path('/proc/self/status').read_text().split('VmHWM:')[1].split()[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=command_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # code that would wait forever (on a pipe, say) fails the test instead
    )
    if result.returncode != 0:
        pytest.fail(f"the measured code failed:\n{result.stderr}")
    output, _, peak_kib = result.stdout.rstrip("\n").rpartition("\n")
    return output, int(peak_kib) / 1024


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


def prepare_into(folder: Path, archive: Path, changes: Changes | None = None) -> Path:
    """Run the prepare stage on ``archive`` in ``folder``; return the prepared-data folder."""
    write_params(folder, changes)
    run_stage(
        "prepare",
        ["--archive", str(archive), "--output", "data/prepared", "--report", "reports/data.json"],
        folder,
    )
    return folder / "data" / "prepared"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """The tiny archive prepared with the committed params (ZCA): read-only for tests."""
    return prepare_into(tmp_path_factory.mktemp("prepared"), tiny_archive)


def new_project(folder: Path, archive: Path, changes: Changes | None = None) -> Path:
    """A git + DVC copy of this project in ``folder`` that reads ``archive`` offline.

    Its DVC remote is a folder beside it; ``changes`` go into its committed params.yaml.
    """
    project = folder / "project"
    for name in PROJECT_FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPOSITORY / name, project / name)
    shutil.copy(TEST_PARAMS, project / "params.yaml")
    for name in PROJECT_FOLDERS:
        shutil.copytree(
            REPOSITORY / name, project / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    run(["git", "init", "-q", "-b", "main"], project)
    run(["dvc", "init", "-q"], project)
    # As this repository's own .dvc/config sets them, less its remote (use_remote below).
    run(["dvc", "config", "core.autostage", "true"], project)
    run(["dvc", "config", "core.analytics", "false"], project)
    update_params(
        project, {"data": {"archive": str(archive), "md5": file_md5(archive)}, **(changes or {})}
    )
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "project copy"], project)
    use_remote(project, folder / "remote")
    return project


def use_remote(project: Path, remote: Path) -> None:
    """Make ``remote`` (a folder) the project's default DVC remote, in its local config."""
    run(["dvc", "remote", "add", "--local", "--default", "--force", "local", str(remote)], project)


@pytest.fixture
def make_project(tmp_path: Path, tiny_archive: Path) -> Callable[..., Path]:
    """Return a factory of git+DVC project copies that read the tiny archive offline."""

    def factory(**changes: dict[str, object]) -> Path:
        return new_project(tmp_path, tiny_archive, changes)

    return factory


def write_model_folder(folder: Path, hidden_units: tuple[int, ...] = (4,), seed: int = 0) -> Path:
    """A model folder as stages/model.py saves one (with dropout and ZCA whitening)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    layers: list[dict] = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, FEATURES], "name": "pixels"}},
        {
            "class_name": "Normalization",
            "config": {
                "name": "standardize",
                "axis": [-1],
                "mean": rng.uniform(100, 150, FEATURES).astype(np.float32).tolist(),
                "variance": rng.uniform(1000, 4000, FEATURES).astype(np.float32).tolist(),
            },
        },
    ]
    widths = [FEATURES, *hidden_units, len(CLASS_NAMES)]
    names = [f"hidden_{index}" for index in range(1, len(hidden_units) + 1)] + ["output"]
    with h5py.File(folder / WEIGHTS_FILE, "w") as weights:
        weights.create_group("layers/normalization/vars").attrs["name"] = "standardize"
        for index, (name, inputs, units) in enumerate(
            zip(names, widths[:-1], widths[1:], strict=True)
        ):
            activation = "softmax" if name == "output" else "relu"
            layers.append(
                {
                    "class_name": "Dense",
                    "config": {"name": name, "units": units, "activation": activation},
                }
            )
            variables = weights.create_group(f"layers/dense{f'_{index}' if index else ''}/vars")
            variables.attrs["name"] = name
            kernel = rng.normal(0, 1 / np.sqrt(inputs), (inputs, units))
            variables["0"] = kernel.astype(np.float32)
            variables["1"] = rng.normal(0, 0.1, units).astype(np.float32)
            if name != "output":
                layers.append({"class_name": "Dropout", "config": {"name": f"drop_{index}"}})
    model = {"class_name": "Sequential", "config": {"name": "mlp", "layers": layers}}
    (folder / ARCHITECTURE_FILE).write_text(json.dumps(model, indent=2) + "\n")
    write_class_names(folder, CLASS_NAMES)
    components = np.linalg.qr(rng.normal(size=(FEATURES, 3)))[0].T.astype(np.float32)
    whitening = Whitening(
        rng.uniform(100, 150, FEATURES).astype(np.float32),
        np.ascontiguousarray(components),
        np.array([-1.0, -0.5, -0.1], np.float32),
        0.3,
        std=2.0,
    )
    write_preprocessing(folder, Preprocessing("zca", whitening))
    return folder


QUICK_TRAIN = {"epochs": 2, "hidden_units": [32, 16], "batch_size": 16}
TRAIN_OUTPUTS = ("data/model", "reports/train/live", "reports/train/summary.json",
                 "reports/train/history.json")  # fmt: skip


def train_arguments(folder: str = "") -> list[str]:
    """The train stage's command-line arguments, writing under ``folder`` (default: as dvc.yaml)."""
    model, live, summary, history = (
        f"{folder}/{path}" if folder else path for path in TRAIN_OUTPUTS
    )
    return ["--prepared", "data/prepared", "--model", model, "--live", live,
            "--summary", summary, "--history", history]  # fmt: skip


def link_prepared(folder: Path, prepared: Path, changes: Changes | None = None) -> Path:
    """A folder with params (``changes`` applied) and ``prepared`` as its data/prepared."""
    write_params(folder, changes)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "prepared").symlink_to(prepared)
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    """A folder with the session's prepared data and a quick model trained on it: read-only."""
    folder = link_prepared(tmp_path_factory.mktemp("trained"), prepared, {"train": QUICK_TRAIN})
    run_stage("train", train_arguments(), folder)
    return folder


ALL_STAGES = ("params", "download", "prepare", "backprop", "train", "evaluate", "plots")
# Quick but real: the default model on 200 dev images, a few epochs at a small batch.
QUICK = {"train": {"epochs": 3, "batch_size": 16, "warmup_epochs": 0}}


def stages_run(output: str) -> set[str]:
    """Names of the stages a dvc repro/exp run actually ran."""
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


def commit(project: Path, message: str) -> None:
    """Commit everything in ``project``, as a user commits a baseline."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


@pytest.fixture(scope="session")
def reproduced_once(tmp_path_factory: pytest.TempPathFactory, tiny_archive: Path) -> Path:
    """A project copy after its first `dvc repro`, which must run every stage."""
    project = new_project(tmp_path_factory.mktemp("reproduced"), tiny_archive, QUICK)
    result = run(["dvc", "repro"], project)
    assert stages_run(result.stdout) == set(ALL_STAGES)
    return project


@pytest.fixture
def reproduced(tmp_path: Path, reproduced_once: Path) -> Path:
    """A copy of the reproduced project (git, DVC cache and all) with a remote of its own."""
    project = tmp_path / "project"
    shutil.copytree(reproduced_once, project, symlinks=True)
    use_remote(project, tmp_path / "remote")
    return project
