"""What the tests share: params from the committed file, commands, project copies, memory.

Tests make their own data (tiny synthetic archives in the official format); their params
are the committed params.yaml with overrides, so they hold whatever the user committed.
Nothing here loads Keras (tests/models.py does): conftest.py sets its backend first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import pytest
from ruamel.yaml import YAML

from cifar10.archive import file_md5
from cifar10.params import Params, TrainParams, parse_params, read_params, validate_params
from cifar10.reports import SeedReports
from tools.params_file import Changes, update_params_file

REPOSITORY = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPOSITORY / "params.yaml"
# What a project copy needs from this one: the pipeline definition and its code. Its
# DVC configuration is its own (new_project), not the user's remote.
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore")
PLOT_TEMPLATES = ".dvc/plots"  # dvc.yaml's own plot templates, copied once `dvc init` made .dvc
PROJECT_FOLDERS = ("stages", "cifar10")
# Quick but real: the committed model, small and fast to train on a tiny archive.
QUICK_TRAIN = {"epochs": 2, "hidden_units": [32, 16], "batch_size": 16}
QUICK = {"train": {"epochs": 3, "batch_size": 16, "warmup_epochs": 0}}
# The committed first seed, whose model is the kept one, and where dvc.yaml puts its outputs.
SEED = 42


def train_outputs(seed: int) -> tuple[str, str, str]:
    """Where dvc.yaml's train@<seed> writes: the model, the report folder, the cost."""
    reports = SeedReports(Path("reports/seeds"), seed)
    return f"data/models/{seed}", reports.train.folder.as_posix(), reports.cost.as_posix()


MODEL = train_outputs(SEED)[0]
SEED_REPORTS = SeedReports(Path("reports/seeds"), SEED)
TRAIN_OUTPUTS = train_outputs(SEED)
# What the trainings cost: the only outputs that differ between two identical runs.
COST_OUTPUTS = (SEED_REPORTS.cost.as_posix(), "reports/cost.json")
# The stages as dvc repro names them when they run, with the committed seed.
ALL_STAGES = ("params", "download", "prepare", "backprop", f"train@{SEED}", f"evaluate@{SEED}",
              "aggregate", "plots")  # fmt: skip
# What a change of train params reruns.
TRAINING_STAGES = {"params", f"train@{SEED}", f"evaluate@{SEED}", "aggregate", "plots"}
FIRST_REPRO_LOG = "first-repro.log"  # beside the reproduced_once project
# A line a library prints on its own: absl's or glog's (I0000 00:00:... port.cc:153] ...),
# absl's notice before them, or about CUDA or oneDNN.
LIBRARY_LINE = re.compile(
    r"^(?:[IWEF]\d{4} .*|.*(?:absl::|cuda|onednn).*)$", re.IGNORECASE | re.MULTILINE
)


def params_with(changes: Changes | None = None) -> Params:
    """The committed params with ``changes`` (section -> key -> value), validated."""
    raw = parse_params(PARAMS_FILE.read_text(), str(PARAMS_FILE))
    for section, values in (changes or {}).items():
        raw[section].update(values)
    return validate_params(raw)


def quick_train_params(**changes: object) -> TrainParams:
    """Train params for tests: the committed ones, small and quick, with ``changes``."""
    return params_with({"train": {**QUICK_TRAIN, **changes}}).train


def update_params(folder: Path, changes: Changes) -> None:
    """Change keys of ``folder``'s params.yaml (section -> key -> value)."""
    update_params_file(folder / "params.yaml", changes)


def write_params(folder: Path, changes: Changes | None = None) -> Path:
    """Write the committed params.yaml with ``changes`` into ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PARAMS_FILE, folder / "params.yaml")
    update_params(folder, changes or {})
    read_params(folder / "params.yaml")  # the test's own params must be valid
    return folder


def command_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the commands tests run: the venv's tools (dvc, python) first.

    The library comes from the folder a command runs in (``python -m stages`` puts it
    first on the path), else from this checkout.
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
    stage: str,
    arguments: list[str],
    cwd: Path,
    check: bool = True,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stages <stage> arguments`` in ``cwd``, as dvc.yaml does."""
    return run([sys.executable, "-m", "stages", stage, *arguments], cwd, check, environment)


def stages_run(output: str) -> set[str]:
    """Names of the stages a dvc repro or exp run actually ran."""
    return set(re.findall(r"Running stage '([a-z_]+(?:@\d+)?)'", output))


def output_hashes(project: Path) -> dict[str, str]:
    """Every output's hash in ``project``'s dvc.lock, but the cost's (COST_OUTPUTS)."""
    lock = YAML(typ="safe").load((project / "dvc.lock").read_text())
    return {
        output["path"]: output["md5"]
        for stage in lock["stages"].values()
        for output in stage.get("outs", [])
        if output["path"] not in COST_OUTPUTS
    }


def commit(project: Path, message: str) -> None:
    """Commit everything in ``project``, as a user commits a baseline."""
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


def train_arguments(folder: str = "", seed: int = SEED) -> list[str]:
    """The train stage's arguments for ``seed``, writing under ``folder`` (default: where
    dvc.yaml writes)."""
    model, reports, cost = (f"{folder}/{path}" if folder else path for path in train_outputs(seed))
    return ["--prepared", "data/prepared", "--seed", str(seed), "--model", model,
            "--reports", reports, "--cost", cost]  # fmt: skip


def prepare_into(folder: Path, archive: Path, changes: Changes | None = None) -> Path:
    """Run the prepare stage on ``archive`` in ``folder``; return the prepared-data folder."""
    write_params(folder, changes)
    run_stage(
        "prepare",
        ["--archive", str(archive), "--output", "data/prepared", "--report", "reports/data.json"],
        folder,
    )
    return folder / "data" / "prepared"


def link_prepared(folder: Path, prepared: Path, changes: Changes | None = None) -> Path:
    """A folder with params (``changes`` applied) and ``prepared`` as its data/prepared."""
    write_params(folder, changes)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "prepared").symlink_to(prepared)
    return folder


def new_project(folder: Path, archive: Path, changes: Changes | None = None) -> Path:
    """A git + DVC copy of this project in ``folder`` that reads ``archive`` offline.

    Its DVC remote is a folder beside it; ``changes`` go into its committed params.yaml.
    """
    project = folder / "project"
    for name in PROJECT_FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPOSITORY / name, project / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(
            REPOSITORY / name, project / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    write_params(
        project, {"data": {"archive": str(archive), "md5": file_md5(archive)}, **(changes or {})}
    )
    run(["git", "init", "-q", "-b", "main"], project)
    run(["dvc", "init", "-q"], project)
    shutil.copytree(REPOSITORY / PLOT_TEMPLATES, project / PLOT_TEMPLATES)
    # As this repository's own .dvc/config sets them, less its remote (use_remote below).
    run(["dvc", "config", "core.autostage", "true"], project)
    run(["dvc", "config", "core.analytics", "false"], project)
    commit(project, "project copy")
    use_remote(project, folder / "remote")
    return project


def use_remote(project: Path, remote: Path) -> None:
    """Make ``remote`` (a folder) the project's default DVC remote, in its local config."""
    run(["dvc", "remote", "add", "--local", "--default", "--force", "local", str(remote)], project)


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
    afresh at exec. The child's address space is capped, so code that would exhaust the
    machine fails with MemoryError instead, and the test with it; code that would never
    end, with a timeout.
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
