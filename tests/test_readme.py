"""Every command the README and docs/ show, run as it is written, on tiny synthetic archives.

The commands come from the bash blocks of README.md and docs/*.md. Each is run with bash
in a copy of the project, after replacing only what has to differ here: paths, host
names, and the names that DVC makes up for experiments (SUBSTITUTIONS). COVERAGE says
which test runs which command; a unit test checks that it names every command shown,
and each end-to-end test checks that it ran exactly the commands given to it. A command
no test can run here is in NOT_RUN_HERE, with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import numpy as np
import pytest
import vl_convert
from dvc.utils.hydra import apply_overrides
from helpers import REPOSITORY, command_environment, run, stages_run, update_params
from PIL import Image
from ruamel.yaml import YAML

from cifar10.archive import file_md5

README = REPOSITORY / "README.md"
DOCUMENTS = (README, *sorted((REPOSITORY / "docs").glob("*.md")))

# The README's two commands for training on two machines, by their first characters.
PROCESS_1, PROCESS_0 = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES=a:12345,b:12345 KERAS_DISTRIBUTION_NUM_PROCESSES=2 "
    f"KERAS_DISTRIBUTION_PROCESS_ID={index}"
    for index in (1, 0)
)
# Which test runs each command, by the command's first characters (unique in the README).
COVERAGE = {
    "test_setup_and_other_archives": (
        "make repro",
        "make repro ARCHIVE=",
        "python -m tools.synthetic_archive",
        "dvc exp run -S data.archive=/tmp/cifar-synthetic.tar.gz",
    ),
    "test_everyday_use": (
        "dvc repro",
        'git add params.yaml dvc.lock && git commit -m "Baseline: default params"',
        "dvc push",
        "dvc exp run -S train.epochs=40",
        "dvc exp run --queue -S 'train.learning_rate=",
        "dvc queue start",
        "dvc queue status",
        "dvc exp run -S 'train.seeds=",
        "dvc exp show --only-changed",
        "cifar10-compare <experiment> main",
        "dvc exp diff main <experiment>",
        "dvc metrics diff",
        "dvc params diff",
        "dvc plots diff HEAD",
        "dvc plots show",
        "dvc exp apply <experiment>",
        'git add params.yaml dvc.lock && git commit -m "Baseline: <experiment>"',
        "dvc exp push origin <experiment>",
        "dvc exp run -S prepare.scaling=unit",
        "dvc exp run --queue -S 'train.batch_size=128,256,512'",
        "python -m tools.sweep_table",
        "dvc exp run --queue -S 'train.epochs=20,25,30,40'",
        "python -m tools.frontier",
    ),
    "test_using_the_model": (
        "dvc remote add -d --force registry",
        'git commit -am "A DVC remote',
        "cifar10-predict cat.jpg",
        "cifar10-predict --model path/to/model",
        "gto register cifar10-mlp",
        "gto assign cifar10-mlp",
        "git push origin HEAD --tags && dvc push",
        "dvc artifacts get <repository> cifar10-mlp --rev",
        "dvc artifacts get <repository> cifar10-mlp --stage",
        "cifar10-predict --model model-prod",
    ),
    "test_storage_and_scaling_out": (
        "dvc remote add -d --force local",
        PROCESS_1,
        PROCESS_0,
        "dvc remote add -d --force shared",
        'git commit -am "Use the shared DVC remote"',
        "dvc push --run-cache",
        "dvc repro --pull --allow-missing",
        ".venv/bin/python benchmarks/scale_out.py data/prepared --epochs 4",
        ".venv/bin/python benchmarks/scale_out.py data/prepared --epochs 4 --set",
    ),
    "test_a_sweep_shared_by_two_machines": (
        "dvc exp run --name epochs-25",
        "dvc exp push --run-cache origin epochs-25",
        "dvc exp pull --all-commits --run-cache origin",
        "python -m tools.sweep_table train.epochs",
    ),
    "test_a_corrupt_cache_object_is_found_and_repaired": (
        "python -m tools.check_cache",
        "python -m tools.check_cache --remove",
        "dvc repro -f -s aggregate",
    ),
    "test_the_benchmark": (".venv/bin/python benchmarks/run.py",),
    "test_the_fast_tests_pass_after_a_users_baseline": (".venv/bin/pytest",),
    # .ci/run runs these three; `make test` is also the README's second command.
    ".ci/run": ("make test", "make lint", "make format"),
}
NOT_RUN_HERE = {
    '.venv/bin/pip install -c requirements.lock -e ".[gpu]"': (
        "it installs JAX's CUDA build (gigabytes) for an NVIDIA GPU; no test machine has one"
    ),
}
# What must differ on this machine, in every command: README text -> test text.
SUBSTITUTIONS = {
    "/tmp/cifar-synthetic.tar.gz": "{tmp}/cifar-synthetic.tar.gz",
    "/tmp/cifar-10-full.tar.gz": "{archive}",
    # One repetition of the benchmark shows it works; three measure.
    "--repetitions 3": "--repetitions 1",
    "/path/to/cifar-10-python.tar.gz": "{archive}",
    "<experiment>": "{experiment}",
    "<repository>": "{origin}",
    "path/to/model": "data/models/42",
    "/mnt/shared/cifar10-dvc-remote": "{tmp}/remote-on-a-share",
    "s3://my-bucket/cifar10-dvc": "{tmp}/shared-remote",
    "a:12345,b:12345": "{addresses}",
}


def readme_commands(text: str) -> list[str]:
    """The commands of the bash blocks, continuation lines joined, comments dropped, once each."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            # Comments start a line or follow spaces; the commands hold no "#" themselves.
            command = re.sub(r"\s+", " ", re.sub(r"(^|\s+)#.*$", "", line)).strip()
            if command and command not in commands:
                commands.append(command)
    return commands


def command_is(command: str, start: str) -> bool:
    """Whether ``start`` is ``command`` or its beginning, up to a space or "=" (or ends in one)."""
    return command == start or (
        command.startswith(start) and (start[-1] in " =(" or command[len(start)] in " =")
    )


def starts_naming(command: str) -> list[tuple[str, str]]:
    """The (test, start) entries of COVERAGE and NOT_RUN_HERE whose start is ``command``'s
    longest: `dvc repro --pull ...` is named by its own entry, not by `dvc repro`'s."""
    entries = [(test, start) for test, starts in COVERAGE.items() for start in starts]
    entries += [("NOT_RUN_HERE", start) for start in NOT_RUN_HERE]
    matching = [(test, start) for test, start in entries if command_is(command, start)]
    longest = max((len(start) for _, start in matching), default=0)
    return [(test, start) for test, start in matching if len(start) == longest]


def shown_commands() -> list[str]:
    """The commands of README.md and docs/*.md, each once."""
    return readme_commands("\n".join(document.read_text() for document in DOCUMENTS))


def test_every_command_shown_is_run_by_one_test() -> None:
    commands = shown_commands()
    assert len(commands) > 40
    unrun = [command for command in commands if len(starts_naming(command)) != 1]
    assert unrun == [], "each README command needs exactly one entry in COVERAGE or NOT_RUN_HERE"
    named = {start for command in commands for _, start in starts_naming(command)}
    starts = [start for entries in COVERAGE.values() for start in entries] + list(NOT_RUN_HERE)
    assert [start for start in starts if start not in named] == [], "entries naming no command"
    module = sys.modules[__name__]
    assert [
        name for name in COVERAGE if name.startswith("test_") and not hasattr(module, name)
    ] == []


def test_the_readme_parser_joins_lines_and_drops_comments() -> None:
    text = "x\n```bash\ndvc exp run -S a=1 \\\n    -S b=2   # two\n# a note\ndvc repro\n```\n"
    assert readme_commands(text) == ["dvc exp run -S a=1 -S b=2", "dvc repro"]
    assert command_is("make repro ARCHIVE=/x", "make repro ARCHIVE=")
    assert command_is("dvc repro --pull", "dvc repro")
    assert not command_is("dvc reproduce", "dvc repro")
    assert starts_naming("dvc repro --pull --allow-missing") == [
        ("test_storage_and_scaling_out", "dvc repro --pull --allow-missing")
    ]
    assert starts_naming("dvc repro") == [("test_everyday_use", "dvc repro")]


class Shell:
    """Runs README commands in a project, as the test that COVERAGE names for them."""

    def __init__(self, test: str, project: Path, values: dict[str, str]) -> None:
        self.test = test
        self.project = project
        self.values = values
        self.commands = shown_commands()
        self.ran: set[str] = set()

    def text(self, start: str) -> str:
        """The README command that ``start`` names, with this machine's values in it."""
        assert start in COVERAGE[self.test], f"{start!r} is not given to {self.test} in COVERAGE"
        (text,) = [
            command for command in self.commands if (self.test, start) in starts_naming(command)
        ]
        for readme_text, test_text in SUBSTITUTIONS.items():
            if readme_text in text:
                text = text.replace(readme_text, test_text.format(**self.values))
        self.ran.add(start)
        return text

    def run(
        self,
        start: str,
        check: bool = True,
        environment: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the command with bash in the project (or ``cwd``); fail if it fails and ``check``."""
        return run(["bash", "-c", self.text(start)], cwd or self.project, check, environment)

    def start(self, start: str, environment: dict[str, str]) -> subprocess.Popen[str]:
        """Start the command in the background."""
        return subprocess.Popen(
            ["bash", "-c", self.text(start)],
            cwd=self.project,
            env=command_environment(environment),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def check_all_ran(self) -> None:
        """Check that the test ran every command COVERAGE gives it."""
        assert set(COVERAGE[self.test]) - self.ran == set()


def with_tools(project: Path) -> Path:
    """Give a project copy what the README's commands use beside the stages: make, tools, .venv.

    .venv is this repository's (a link); make must find it installed, or it would install
    the copy into it.
    """
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy2(REPOSITORY / name, project / name)
    for name in ("tools", "benchmarks"):
        shutil.copytree(
            REPOSITORY / name,
            project / name,
            ignore=shutil.ignore_patterns("__pycache__"),
            dirs_exist_ok=True,
        )
    installed = REPOSITORY / ".venv" / ".installed"
    sources = ("pyproject.toml", "requirements.lock", "tools/offline_plots.py")
    assert installed.exists(), "run `make venv` first: the tests use this repository's .venv"
    assert all(
        installed.stat().st_mtime >= (REPOSITORY / name).stat().st_mtime for name in sources
    ), "run `make venv` first: .venv is older than the pins"
    (project / ".venv").symlink_to(REPOSITORY / ".venv")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tools"], project)
    return project


def values_for(project: Path, tmp_path: Path, archive: Path, **more: str) -> dict[str, str]:
    """What SUBSTITUTIONS puts in: this test's paths."""
    return {"tmp": str(tmp_path), "project": str(project), "archive": str(archive), **more}


@pytest.fixture
def served_archive(tiny_archive: Path) -> Iterator[str]:
    """The tiny archive on a local HTTP server: its URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *arguments: object) -> None:
            pass

    handler = lambda *arguments: Quiet(*arguments, directory=str(tiny_archive.parent))  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{tiny_archive.name}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.e2e
def test_setup_and_other_archives(
    make_project: Callable[..., Path], tmp_path: Path, tiny_archive: Path, served_archive: str
) -> None:
    md5 = file_md5(tiny_archive)
    # Its "official" archive is the tiny one, downloaded from 127.0.0.1.
    project = with_tools(make_project(data={"url": served_archive, "md5": md5, "archive": None}))
    shell = Shell(
        "test_setup_and_other_archives", project, values_for(project, tmp_path, tiny_archive)
    )
    downloaded = shell.run("make repro")
    assert f"from {served_archive}: md5 {md5} (matches data.md5)" in downloaded.stdout
    assert "kept model: seed 42, epoch" in downloaded.stdout

    # Offline: a local copy of the same archive; params.yaml stays as it is.
    params = (project / "params.yaml").read_bytes()
    shutil.rmtree(project / ".dvc" / "cache")
    (project / "data" / "raw" / "cifar-10-python.tar.gz").unlink()
    offline = shell.run("make repro ARCHIVE=")
    assert f"from {tiny_archive}: md5 {md5}" in offline.stdout
    assert (project / "params.yaml").read_bytes() == params

    shell.run("python -m tools.synthetic_archive")
    synthetic = shell.run("dvc exp run -S data.archive=/tmp/cifar-synthetic.tar.gz")
    assert "data.md5 is null, so the archive's own checks passed" in synthetic.stdout
    assert "prepared train 2000, validation 500, test 500 images" in synthetic.stdout
    shell.check_all_ran()


def experiment_names(project: Path) -> list[str]:
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    return [
        experiment["name"] for baseline in shown for experiment in baseline.get("experiments") or []
    ]


def wait_for_the_queue(shell: Shell, timeout_seconds: float = 900) -> None:
    """Run `dvc queue status` until nothing is queued or running."""
    deadline = time.monotonic() + timeout_seconds
    while re.search(r"\b(Queued|Running)\b", shell.run("dvc queue status").stdout):
        assert time.monotonic() < deadline, "the queue did not finish"
        time.sleep(3)


def only_remote_free_scripts(html: str) -> None:
    assert re.findall(r"<script[^>]*\bsrc=", html) == []
    assert "cdn.jsdelivr.net" not in html
    assert "window.vegaEmbed=" in html


def compare(shell: Shell, project: Path) -> None:
    """Step 3 of the README's everyday use, on the experiments run so far."""
    # Two more seeds: only they train (seed 42 of these params comes from the run-cache).
    seeds = shell.run("dvc exp run -S 'train.seeds=").stdout
    assert re.findall(r"Running stage '(train@\d+)'", seeds) == ["train@7", "train@1"]
    assert "(t over 3 seeds)" in seeds
    # --only-changed hides a column that is the same in every row, as the tiny archive's
    # accuracies may all be: one barely trained experiment whose metrics differ.
    run(["dvc", "exp", "run", "-S", "train.epochs=2", "-S", "train.learning_rate=1e-6"], project)
    table = shell.run("dvc exp show --only-changed", environment={"COLUMNS": "160"}).stdout
    header = table.splitlines()[1]
    for column in ("Experiment", "validation.accuracy", "validation.low", "validation.high",
                   "fit_seconds", "train.learning_rate", "train.seeds"):  # fmt: skip
        assert column in header, table
    assert "…" not in table, table  # nothing cut to fit
    assert max(len(line) for line in table.splitlines()) <= 160

    compared = shell.run("cifar10-compare <experiment> main").stdout
    assert "verdict: " in compared
    diff = shell.run("dvc exp diff main <experiment>").stdout
    assert "train." in diff
    shell.run("dvc metrics diff")
    shell.run("dvc params diff")
    shell.run("dvc plots diff HEAD")
    only_remote_free_scripts((project / "dvc_plots" / "index.html").read_text())
    shell.run("dvc plots show")
    only_remote_free_scripts((project / "dvc_plots" / "index.html").read_text())
    # One of the plots, rendered offline from the very spec DVC puts on the page.
    plots = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    spec = plots["Accuracy per epoch, every seed"][0]["content"]
    svg = vl_convert.vegalite_to_svg(spec, vl_version="5.21")
    assert "Accuracy per epoch, every seed" in svg
    assert svg.count("<path") > 10


def summarize_the_sweep(shell: Shell, project: Path) -> None:
    """The tables of "How the defaults were chosen", for the queued experiments run."""
    sweep = shell.run("python -m tools.sweep_table").stdout
    assert "0.002" in sweep
    assert "0.004" in sweep
    assert " | best | " in sweep
    frontier = shell.run("python -m tools.frontier").stdout
    assert frontier.startswith("wrote ")
    rows = (project / "benchmarks" / "frontier.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["train.epochs", "seeds", "validation_accuracy",
                                   "repro_seconds"]  # fmt: skip
    # `dvc exp run -S train.epochs=40` left 40 in the workspace's params, which the queued
    # experiments start from: 4 experiments of one seed, and one of 3 seeds (compare);
    # then compare's 2 epochs, with those 3 seeds.
    assert [row.split("\t")[:2] for row in rows[1:]] == [["2", "3"], ["40", "7"]]


@pytest.mark.e2e
def test_everyday_use(
    make_project: Callable[..., Path], tmp_path: Path, tiny_archive: Path
) -> None:
    project = with_tools(make_project())
    # The README's `dvc exp push origin`: a repository to push to, as users have.
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], project)
    # What `make` sets up: DVC's plots page with vega inlined.
    run(
        [sys.executable, "-m", "tools.offline_plots", "--output", str(tmp_path / "page.html")],
        project,
    )
    run(["dvc", "config", "--local", "plots.html_template", str(tmp_path / "page.html")], project)
    shell = Shell("test_everyday_use", project, values_for(project, tmp_path, tiny_archive))

    shell.run("dvc repro")
    shell.run('git add params.yaml dvc.lock && git commit -m "Baseline: default params"')
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    shell.run("dvc push")

    assert "validation accuracy" in shell.run("dvc exp run -S train.epochs=40").stdout
    shell.run("dvc exp run --queue -S 'train.learning_rate=")
    shell.run("dvc queue start")
    wait_for_the_queue(shell)
    names = experiment_names(project)
    assert len(names) == 4

    shell.values["experiment"] = names[0]
    compare(shell, project)
    summarize_the_sweep(shell, project)

    shell.run("dvc exp apply <experiment>")
    shell.run('git add params.yaml dvc.lock && git commit -m "Baseline: <experiment>"')
    shell.run("dvc exp push origin <experiment>")
    assert names[0] in run(["git", "ls-remote", str(origin)], project).stdout

    recipe = shell.run("dvc exp run -S prepare.scaling=unit").stdout
    assert "prepared train 160, validation 40, test 40 images (unit scaling)" in recipe
    # The sweep of "How the defaults were chosen": queued, not run (15 experiments of 3 seeds).
    shell.run("dvc exp run --queue -S 'train.batch_size=128,256,512'")
    assert shell.run("dvc queue status").stdout.count("Queued") == 15
    run(["dvc", "queue", "remove", "--queued"], project)
    # The frontier's sweep, likewise queued only (4 experiments of 3 seeds).
    shell.run("dvc exp run --queue -S 'train.epochs=20,25,30,40'")
    assert shell.run("dvc queue status").stdout.count("Queued") == 4
    run(["dvc", "queue", "remove", "--queued"], project)
    shell.check_all_ran()


def write_images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


@pytest.mark.e2e
def test_using_the_model(reproduced: Path, tmp_path: Path, tiny_archive: Path) -> None:
    project = with_tools(reproduced)  # committed: the model is in dvc.lock
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], project)
    write_images(project, ["cat.jpg", "ship.jpg", "horse.jpg", "a.png", "b.png"])
    values = values_for(project, tmp_path, tiny_archive, origin=str(origin))
    shell = Shell("test_using_the_model", project, values)

    three = shell.run("cifar10-predict cat.jpg").stdout.splitlines()
    assert [line.split(":")[0] for line in three] == ["cat.jpg", "ship.jpg", "horse.jpg"]
    top_five = shell.run("cifar10-predict --model path/to/model").stdout.splitlines()
    assert [line.count("%") for line in top_five] == [5, 5]

    # The remote the repository's own config names, as in a user's clone (the tests'
    # project copies name theirs in .dvc/config.local).
    run(["dvc", "remote", "remove", "--local", "local"], project)
    shell.run("dvc remote add -d --force registry")
    shell.run('git commit -am "A DVC remote')
    shell.run("gto register cifar10-mlp")
    shell.run("gto assign cifar10-mlp")
    shell.run("git push origin HEAD --tags && dvc push")
    assert "cifar10-mlp@v0.0.1" in run(["git", "ls-remote", "--tags", str(origin)], project).stdout
    assert (tmp_path / "remote-on-a-share" / "files").is_dir()
    shell.run("dvc artifacts get <repository> cifar10-mlp --rev")
    shell.run("dvc artifacts get <repository> cifar10-mlp --stage")
    for fetched in ("model-v0.0.1", "model-prod"):
        assert sorted(path.name for path in (project / fetched).iterdir()) == sorted(
            path.name for path in (project / "data" / "models" / "42").iterdir()
        )
    from_the_registry = shell.run("cifar10-predict --model model-prod").stdout
    assert from_the_registry == three[0] + "\n"
    shell.check_all_ran()


@pytest.mark.e2e
def test_storage_and_scaling_out(reproduced: Path, tmp_path: Path, tiny_archive: Path) -> None:
    project = with_tools(reproduced)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
    shell = Shell(
        "test_storage_and_scaling_out",
        project,
        values_for(project, tmp_path, tiny_archive, addresses=addresses),
    )
    # The project's remote, as this repository's .dvc/config sets one (not in config.local).
    run(["dvc", "remote", "remove", "--local", "local"], project)
    shell.run("dvc remote add -d --force local")
    run(["dvc", "push"], project)
    assert (tmp_path / "remote-on-a-share" / "files").is_dir()

    update_params(project, {"train": {"distribute": "data_parallel"}})
    worker = shell.start(PROCESS_1, environment={})
    chief = shell.run(PROCESS_0)
    worker_output, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, worker_output
    assert "as process 1" in worker_output
    assert "on 2 device(s) in 2 processes" in chief.stdout
    run(["dvc", "repro"], project)  # evaluate and plots, for the model trained by both
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "trained by two processes"], project)

    shell.run("dvc remote add -d --force shared")
    shell.run('git commit -am "Use the shared DVC remote"')
    shell.run("dvc push --run-cache")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    pulled = shell.run("dvc repro --pull --allow-missing", cwd=clone)
    assert stages_run(pulled.stdout) == {"params"}  # nothing changed: nothing to run or pull
    run(["dvc", "pull"], clone)
    assert (clone / "reports" / "metrics.json").read_bytes() == (
        project / "reports" / "metrics.json"
    ).read_bytes()

    # Does it pay? Both of the README's benchmark commands, on the tiny data.
    for start in (
        ".venv/bin/python benchmarks/scale_out.py data/prepared --epochs 4",
        ".venv/bin/python benchmarks/scale_out.py data/prepared --epochs 4 --set",
    ):
        output = shell.run(start).stdout
        assert "speed-up of two processes over one:" in output
    shell.check_all_ran()


def flip_a_bit_keeping_the_time(path: Path, position: int) -> None:
    """Bit rot: one bit changed, size and modification time as they were."""
    status = path.stat()
    path.chmod(0o644)  # DVC makes cache files read-only
    content = bytearray(path.read_bytes())
    content[position] ^= 1
    path.write_bytes(content)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


@pytest.mark.e2e
def test_a_corrupt_cache_object_is_found_and_repaired(
    reproduced: Path, tmp_path: Path, tiny_archive: Path
) -> None:
    project = with_tools(reproduced)
    shell = Shell(
        "test_a_corrupt_cache_object_is_found_and_repaired",
        project,
        values_for(project, tmp_path, tiny_archive),
    )
    metrics = project / "reports" / "metrics.json"
    good = metrics.read_bytes()
    md5 = locked_md5(project, "aggregate", "reports/metrics.json")
    cache = Path(".dvc", "cache", "files", "md5")  # as the tool names it, in the project
    # A member of a directory output too: the prepared labels.
    listing = locked_md5(project, "prepare", "data/prepared")
    (labels,) = [entry["md5"] for entry in json.loads(
        (project / cache / listing[:2] / listing[2:]).read_bytes())
        if entry["relpath"] == "validation_labels.npy"]  # fmt: skip
    objects = [project / cache / md5[:2] / md5[2:], project / cache / labels[:2] / labels[2:]]
    # Objects DVC stored here, as in a user's repository (copied ones it would re-hash).
    for path in objects:
        path.unlink()
    run(["dvc", "repro", "-f", "-s", "aggregate", "prepare"], project)
    # The last digit of the first accuracy (0.4718 reads 0.4719, say), and a label.
    flip_a_bit_keeping_the_time(objects[0], good.index(b",") - 1)
    flip_a_bit_keeping_the_time(objects[1], -1)

    # What DVC sees: nothing; the rot is checked out as it is.
    metrics.unlink()
    run(["dvc", "checkout", "reports/metrics.json"], project)
    assert metrics.read_bytes() != good
    assert "metrics.json" not in run(["dvc", "status"], project).stdout

    found = shell.run("python -m tools.check_cache", check=False)
    assert found.returncode == 1
    assert sorted(found.stdout.splitlines()) == sorted([
        f"corrupt: {cache / md5[:2] / md5[2:]}: reports/metrics.json (stage aggregate)",
        (f"corrupt: {cache / labels[:2] / labels[2:]}: "
         "data/prepared/validation_labels.npy (stage prepare)"),
    ])  # fmt: skip
    removed = shell.run("python -m tools.check_cache --remove", check=False)
    assert removed.stdout.splitlines()[-1] == (
        "removed 2 corrupt objects; run `dvc repro -f -s aggregate prepare` to write them again"
    )
    shell.run("dvc repro -f -s aggregate")
    run(["dvc", "repro", "-f", "-s", "prepare"], project)
    assert metrics.read_bytes() == good
    assert shell.run("python -m tools.check_cache").stdout.startswith("every one of the ")
    shell.check_all_ran()


def locked_md5(project: Path, stage: str, output: str) -> str:
    """The md5 that dvc.lock records for one output of a stage."""
    outs = YAML(typ="safe").load((project / "dvc.lock").read_text())["stages"][stage]["outs"]
    (md5,) = [recorded["md5"] for recorded in outs if recorded["path"] == output]
    return md5


@pytest.mark.e2e
def test_the_benchmark(
    make_project: Callable[..., Path], tmp_path: Path, tiny_archive: Path
) -> None:
    project = with_tools(make_project())
    shell = Shell("test_the_benchmark", project, values_for(project, tmp_path, tiny_archive))
    output = shell.run(".venv/bin/python benchmarks/run.py").stdout
    assert "wall time" in output
    shell.check_all_ran()


@pytest.mark.e2e
def test_the_fast_tests_pass_after_a_users_baseline(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(REPOSITORY), str(clone)], tmp_path)
    (clone / ".venv").symlink_to(REPOSITORY / ".venv")
    # What a user does, then commits as a baseline: another archive, other training
    # params, written into params.yaml as `dvc exp run -S` writes them, and a remote of
    # their own.
    overrides = [f"data.archive={tmp_path / 'theirs.tar.gz'}", "data.md5=null",
                 "prepare.scaling=unit", "train.epochs=30", "train.batch_size=256",
                 "train.hidden_units=[256,32]"]  # fmt: skip
    apply_overrides(clone / "params.yaml", overrides)
    run(["dvc", "remote", "add", "-d", "--force", "theirs", str(tmp_path / "their-remote")], clone)
    run(["git", "commit", "-qam", "Baseline: their params"], clone)
    shell = Shell("test_the_fast_tests_pass_after_a_users_baseline", clone, {})
    result = shell.run(".venv/bin/pytest", check=False)
    assert result.returncode == 0, result.stdout[-5000:]
    shell.check_all_ran()


@pytest.mark.e2e
def test_a_sweep_shared_by_two_machines(
    reproduced: Path, tmp_path: Path, tiny_archive: Path
) -> None:
    first = with_tools(reproduced)
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    # Both machines reach one DVC remote (committed) and one git remote.
    run(["dvc", "remote", "remove", "--local", "local"], first)
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "shared-storage")], first)
    run(["git", "add", "-A"], first)
    run(["git", "commit", "-qm", "baseline with a shared DVC remote"], first)
    run(["git", "remote", "add", "origin", str(origin)], first)
    run(["git", "push", "-q", "origin", "main"], first)
    run(["dvc", "push", "--run-cache"], first)
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(origin), str(second)], tmp_path)
    run(["dvc", "pull", "--run-cache"], second)
    shell = Shell("test_a_sweep_shared_by_two_machines", first,
                  values_for(first, tmp_path, tiny_archive, origin=str(origin)))  # fmt: skip

    shell.run("dvc exp run --name epochs-25")
    shell.run("dvc exp push --run-cache origin epochs-25")
    # Machine b's share, as the page says it.
    run(["dvc", "exp", "run", "--name", "epochs-30", "-S", "train.epochs=30"], second)
    run(["dvc", "exp", "push", "--run-cache", "origin", "epochs-30"], second)
    shell.run("dvc exp pull --all-commits --run-cache origin")
    table = shell.run("python -m tools.sweep_table train.epochs").stdout.splitlines()
    assert [line.split(" | ")[0] for line in table[1:]] == ["25", "30"]
    assert sum(" | best | " in line for line in table) == 1

    # The second machine meets the first's setting: restored, not trained.
    run(["dvc", "exp", "pull", "--run-cache", "origin", "epochs-25"], second)
    again = run(["dvc", "exp", "run", "-S", "train.epochs=25"], second).stdout
    assert "Stage 'train@42' is cached - skipping run, checking out outputs" in again
    assert "Running stage 'train@42'" not in again
    shell.check_all_ran()
