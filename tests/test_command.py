"""The one start-up path of every command (cifar10/command.py) and ``python -m stages``.

Commands are small fake modules written to the test's folder: each failure a stage can
meet, met in this process. tests/test_faults.py has a stage's real faults as a process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REPOSITORY, run_stage, write_params

import stages.__main__
from cifar10.command import (
    BROKEN_PIPE_STATUS,
    INTERRUPTED_STATUS,
    library_settings,
    outputs_removed_by_dvc,
    params_left_by_dvc,
    run,
)

LOCK = """\
schema: '2.0'
stages:
  train:
    cmd: python -m stages train
    outs:
    - path: data/model
      md5: 0123456789abcdef0123456789abcdef.dir
    - path: reports/train/summary.json
      md5: 0123456789abcdef0123456789abcdef
"""
REMOVED = (
    "error: DVC removed reports/train/summary.json before running train; "
    "`dvc checkout train` puts back the versions dvc.lock records"
)


@pytest.fixture
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a command module of the given source on the path; return its name."""
    folder = tmp_path / "commands"
    folder.mkdir()
    monkeypatch.syspath_prepend(folder)
    names: list[str] = []

    def write(source: str) -> str:
        name = f"fake_command_{uuid.uuid4().hex}"
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    levels = {name: logging.getLogger(name).level for name in ("stages", "cifar10")}
    yield write
    for name in names:
        sys.modules.pop(name, None)
    for name, level in levels.items():  # run() sets them for the command's process
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def under_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the train stage under `dvc repro`, which removed its summary.

    The working directory is the project's, as DVC runs a stage's command there.
    """
    root = tmp_path / "project"
    (root / "data" / "model").mkdir(parents=True)
    (root / "dvc.lock").write_text(LOCK)
    monkeypatch.chdir(root)
    return {"DVC_STAGE": "train", "DVC_ROOT": str(root)}


def raising(error: str) -> str:
    """A command module whose main raises ``error`` (Python source)."""
    return f"""\
        import errno
        from pathlib import Path
        from cifar10.errors import InputError, PipelineError

        def main(argv):
            raise {error}
        """


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


# What DVC removed ------------------------------------------------------------------------


def test_what_dvc_removed_is_named_with_the_command_that_restores_it(
    under_dvc: dict[str, str],
) -> None:
    assert outputs_removed_by_dvc(under_dvc) == REMOVED.removeprefix("error: ")


@pytest.mark.parametrize(
    "environment", [{}, {"DVC_STAGE": "evaluate"}], ids=["run by itself", "no run recorded"]
)
def test_nothing_is_said_when_dvc_removed_nothing_recorded(
    under_dvc: dict[str, str], environment: dict[str, str]
) -> None:
    assert outputs_removed_by_dvc({"DVC_ROOT": under_dvc["DVC_ROOT"], **environment}) == ""


def test_nothing_is_said_without_a_dvc_lock(under_dvc: dict[str, str]) -> None:
    Path("dvc.lock").unlink()
    assert outputs_removed_by_dvc(under_dvc) == ""


def test_a_queued_experiment_is_answered_from_its_own_copy(
    under_dvc: dict[str, str], tmp_path: Path
) -> None:
    # DVC_ROOT names the workspace, which has everything; the stage runs in a copy.
    workspace = tmp_path / "workspace"
    (workspace / "reports" / "train").mkdir(parents=True)
    (workspace / "reports" / "train" / "summary.json").write_text("{}")
    (workspace / "dvc.lock").write_text(LOCK)
    queued = {**under_dvc, "DVC_ROOT": str(workspace), "DVC_EXP_NAME": "queued"}
    assert outputs_removed_by_dvc(queued) == REMOVED.removeprefix("error: ")
    assert params_left_by_dvc(queued) == ""


def test_bad_params_of_an_experiment_in_the_workspace_say_they_stay_there(
    under_dvc: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    command: Callable[[str], str],
) -> None:
    source = """\
        from cifar10.errors import ParamsError

        def main(argv):
            raise ParamsError("params.yaml: train.epochs = 0: bad")
        """
    environ = {**under_dvc, "DVC_EXP_NAME": "exp-1"}
    assert run(command(source), [], environ) == 1
    lines = error_lines(capsys)
    assert lines[0] == "error: params.yaml: train.epochs = 0: bad"
    assert "`git checkout params.yaml` puts back the committed ones" in lines[1]


def test_nothing_is_said_when_every_recorded_output_is_there(under_dvc: dict[str, str]) -> None:
    summary = Path(under_dvc["DVC_ROOT"], "reports", "train", "summary.json")
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    assert outputs_removed_by_dvc(under_dvc) == ""


def test_a_damaged_dvc_lock_says_nothing(under_dvc: dict[str, str]) -> None:
    Path(under_dvc["DVC_ROOT"], "dvc.lock").write_text("stages: [unclosed\n")
    assert outputs_removed_by_dvc(under_dvc) == ""


# How a command ends ----------------------------------------------------------------------


def test_a_command_gets_its_arguments_and_ends_with_status_0(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = command("received = []\ndef main(argv):\n    received.append(list(argv))\n")
    assert run(name, ["--flag", "value"], {}) == 0
    assert sys.modules[name].received == [["--flag", "value"]]
    assert capsys.readouterr().err == ""


def test_a_pipeline_error_is_one_error_line_per_line_and_status_1(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = command(raising('PipelineError("params.yaml: a is missing\\nparams.yaml: b = 1: bad")'))
    assert run(name, [], {}) == 1
    assert error_lines(capsys) == [
        "error: params.yaml: a is missing",
        "error: params.yaml: b = 1: bad",
    ]


def test_a_failing_stage_under_dvc_ends_with_what_dvc_removed(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], under_dvc: dict[str, str]
) -> None:
    name = command(raising('InputError(Path("metrics.json"), stage="evaluate")'))
    assert run(name, [], under_dvc) == 1
    assert error_lines(capsys) == [
        "error: metrics.json: missing; run `dvc repro evaluate` to write it again",
        REMOVED,
    ]


@pytest.mark.parametrize("where", ["main", "import"])
def test_ctrl_c_is_status_130_and_one_line(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], where: str
) -> None:
    # While the module is imported is while the libraries load (seconds for Keras).
    source = raising("KeyboardInterrupt") if where == "main" else "raise KeyboardInterrupt\n"
    assert run(command(source), [], {}) == INTERRUPTED_STATUS == 130
    assert error_lines(capsys) == ["error: interrupted; no output was changed"]


def test_ctrl_c_under_dvc_names_what_dvc_removed(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], under_dvc: dict[str, str]
) -> None:
    assert run(command("raise KeyboardInterrupt\n"), [], under_dvc) == INTERRUPTED_STATUS
    assert error_lines(capsys) == ["error: interrupted", REMOVED]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_a_command_as_ctrl_c_does(
    command: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    signum: signal.Signals,
    status: int,
) -> None:
    name = command(
        "import os, signal, time\n"
        "cleaned = []\n"
        "def main(argv):\n"
        "    try:\n"
        f"        os.kill(os.getpid(), {int(signum)})\n"
        "        time.sleep(30)\n"
        "    finally:\n"
        "        cleaned.append(True)\n"  # unwound, as atomic_outputs' cleanup is
    )
    before = signal.getsignal(signum)
    assert run(name, [], {}) == status
    assert sys.modules[name].cleaned == [True]
    assert error_lines(capsys) == [f"error: terminated by {signum.name}; no output was changed"]
    assert signal.getsignal(signum) == before  # the caller's handler is back


def test_sigterm_under_dvc_names_what_dvc_removed(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], under_dvc: dict[str, str]
) -> None:
    name = command("import os, signal, time\ndef main(argv):\n    os.kill(os.getpid(), 15)\n"
                   "    time.sleep(30)\n")  # fmt: skip
    assert run(name, [], under_dvc) == 143
    assert error_lines(capsys) == ["error: terminated by SIGTERM", REMOVED]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ('OSError(errno.ENOSPC, "No space left on device")',
         "error: No space left on device; free space on that disk, then run again"),
        ('OSError(errno.EFBIG, "File too large", "data/prepared/x.npy")',
         ("error: data/prepared/x.npy: File too large; the file system or `ulimit -f` caps "
          "file sizes; raise the limit, then run again")),
        ('OSError(errno.EROFS, "Read-only file system", "reports")',
         ("error: reports: Read-only file system; the file system is read-only; make it "
          "writable, then run again")),
        ('OSError(errno.EIO, "Input/output error")',
         ("error: Input/output error; the disk or network file system failed; check it, "
          "then run again")),
    ],
)  # fmt: skip
def test_a_machine_fault_is_one_line_saying_what_to_do(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], error: str, line: str
) -> None:
    assert run(command(raising(error)), [], {}) == 1
    assert error_lines(capsys) == [line]


def test_an_os_error_about_a_file_is_one_line(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = command(raising('PermissionError(13, "Permission denied", "reports/metrics.json")'))
    assert run(name, [], {}) == 1
    assert error_lines(capsys) == ["error: reports/metrics.json: Permission denied"]


@pytest.mark.parametrize(
    ("error", "last_line"),
    [
        ('RuntimeError("a bug")', "RuntimeError: a bug"),
        ('OSError("no file named")', "OSError: no file named"),
    ],
    ids=["an exception", "an OSError about no file"],
)
def test_an_unexpected_exception_prints_its_traceback(
    command: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
    under_dvc: dict[str, str],
    error: str,
    last_line: str,
) -> None:
    assert run(command(raising(error)), [], under_dvc) == 1
    lines = error_lines(capsys)
    assert lines[0] == "Traceback (most recent call last):"
    assert any(line.strip() == f"raise {error}" for line in lines)  # where it was raised
    assert lines[-2:] == [last_line, REMOVED]


# The libraries' settings -----------------------------------------------------------------


def test_a_command_starts_with_the_libraries_settings_unless_the_user_set_them(
    command: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name = command("def main(argv):\n    pass\n")
    defaults: dict[str, str] = {}
    assert run(name, [], defaults) == 0
    assert defaults.keys() == library_settings(tmp_path).keys()
    assert defaults["KERAS_BACKEND"] == "jax"  # evaluate's and predict's: they only load
    assert defaults["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"  # no GPU hoarding
    assert defaults["TF_CPP_MIN_LOG_LEVEL"] == "2"
    # TensorFlow only saves a JAX model: its oneDNN notice stays out.
    assert defaults["TF_ENABLE_ONEDNN_OPTS"] == "0"
    cache = Path(defaults["JAX_COMPILATION_CACHE_DIR"])
    assert cache.is_relative_to(tmp_path / "cache")  # the user's cache, not the repository
    assert defaults["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"

    users = {"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "JAX_COMPILATION_CACHE_DIR": "",
             "KERAS_BACKEND": "tensorflow"}  # fmt: skip
    theirs = dict(users)
    assert run(name, [], theirs) == 0
    assert {name: theirs[name] for name in users} == users
    assert "TF_ENABLE_ONEDNN_OPTS" not in theirs  # TensorFlow computes: as it chooses


@pytest.mark.parametrize("backend", ["torch", "bogus", ""])
def test_a_keras_backend_the_pipeline_does_not_run_on_is_one_line_before_keras_loads(
    command: Callable[[str], str], capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    # Keras' import would end in a traceback: ValueError, or no module named 'torch'.
    name = command("import keras\ndef main(argv):\n    pass\n")
    assert run(name, [], {"KERAS_BACKEND": backend}) == 1
    assert error_lines(capsys) == [
        (
            f"error: KERAS_BACKEND={backend!r} is not one of the Keras backends this pipeline "
            "runs on: jax, tensorflow; unset it (dvc.yaml's train command sets it from "
            "train.backend)"
        )
    ]
    assert name not in sys.modules


def test_the_settings_are_made_before_the_command_loads(
    command: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The libraries read them as they load, when the command's module is imported.
    settings = library_settings(tmp_path)
    for variable in settings:
        monkeypatch.setenv(variable, "")  # so that monkeypatch restores the user's value
        monkeypatch.delenv(variable)
    name = command(
        "import os\n"
        f"seen = {{name: os.environ.get(name) for name in {sorted(settings)!r}}}\n"
        "def main(argv):\n    pass\n"
    )
    assert run(name, []) == 0
    assert None not in sys.modules[name].seen.values()


# python -m stages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [[], ["trian", "--help"], ["__main__"]], ids=["none", "typo", "main"]
)
def test_an_unknown_stage_or_none_is_the_usage_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m stages", *argv])
    assert stages.__main__.main() == 2
    usage = f"usage: python -m stages {{{','.join(stages.__main__.STAGES)}}} [arguments]"
    assert error_lines(capsys) == [usage]
    assert "train" in stages.__main__.STAGES


def test_a_stage_name_runs_its_module_with_the_rest_of_the_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    monkeypatch.setattr(stages.__main__, "run", lambda *call: calls.append(call) or 7)
    monkeypatch.setattr(sys, "argv", ["python -m stages", "train", "--model", "data/model"])
    assert stages.__main__.main() == 7
    assert calls == [("stages.train", ["--model", "data/model"])]


# A real stage, as a process --------------------------------------------------------------


@pytest.mark.integration
def test_a_failing_stage_process_under_dvc_ends_with_what_dvc_removed(tmp_path: Path) -> None:
    write_params(tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK.replace("train", "plots"))
    arguments = ["--prepared", "data/prepared", "--train-reports", "train",
                 "--evaluation", "evaluate", "--metrics", "metrics.json",
                 "--output", "figures"]  # fmt: skip
    environment = {"DVC_STAGE": "plots", "DVC_ROOT": str(tmp_path)}
    result = run_stage("plots", arguments, tmp_path, check=False, environment=environment)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: evaluate/metrics.json: missing; run `dvc repro evaluate` to write it again",
        (
            "error: DVC removed data/model, reports/plots/summary.json before running plots; "
            "`dvc checkout plots` puts back the versions dvc.lock records"
        ),
    ]


@pytest.mark.integration
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `cifar10-predict *.png | head`: head exits after its lines, as Unix tools expect.
    (tmp_path / "chatty.py").write_text(
        "def main(argv):\n    for index in range(200_000):\n        print(f'line {index}')\n"
    )
    code = "import sys; from cifar10.command import run; sys.exit(run('chatty', []))"
    result = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "{code}" | head -1; echo "${{PIPESTATUS[0]}}" >&2'],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPOSITORY}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "line 0\n"
    assert result.stderr == f"{BROKEN_PIPE_STATUS}\n"  # no traceback, no "Exception ignored"
