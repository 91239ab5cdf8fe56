"""How every command starts and ends: the libraries' environment, and one line per failure.

The stages (``python -m stages <stage>``, as dvc.yaml runs them) and ``cifar10-predict``
all come through :func:`run`. It sets the environment the libraries read as they load
(unless the user set it), then imports the command's module and runs its ``main``, so
that every failure meets one handler: an expected one (bad params, a missing or damaged
input, a failed check, a full disk) ends with one ``error:`` line naming the file or key
and what to do, and status 1; Ctrl-C, at any moment (while the libraries load too), with
one line and status 130; SIGTERM and SIGHUP (a CI cancel, ``timeout``, a closed
terminal), once the command runs, the same way with status 143 and 129. Under ``dvc
repro`` and ``dvc exp run``, DVC deletes a stage's outputs before running it; a last line
then names them and the command that puts them back. Nothing is half-written either way:
outputs are written atomically (cifar10/atomic.py).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

import platformdirs
from ruamel.yaml import YAML, YAMLError

from cifar10.errors import ParamsError, PipelineError, machine_fault

INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report an interrupted command
BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE, as a Unix tool ends when its reader goes away
# Signals that end a command as Ctrl-C does: outputs left as they were, one line.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A terminating signal, raised where the program is, so that it unwinds as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def library_settings(cache_root: Path, keras_backend: str | None = None) -> dict[str, str]:
    """Return the environment the libraries read as they load, as the pipeline wants them.

    Each is the library's own documented variable; ``cache_root`` is the user's cache
    directory (``platformdirs.user_cache_dir``), ``keras_backend`` the user's
    KERAS_BACKEND, if set.
    """
    settings = {
        # Keras' backend for the commands that only load a model (evaluate, predict); the
        # train command sets it from train.backend (dvc.yaml).
        "KERAS_BACKEND": "jax",
        # TensorFlow's C++ INFO and WARNING logs stay out.
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # On a GPU, JAX takes the memory it needs rather than 75 % of the card, so the
        # card can be shared (two experiments at once, say).
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        # JAX's persistent compilation cache: an experiment of the same shapes reuses the
        # compiled training step instead of compiling it again. In the user's cache
        # directory, not the repository's: queued experiments run in copies of it.
        "JAX_COMPILATION_CACHE_DIR": str(cache_root / "jax-compilation"),
        # Cache every compilation: on a CPU each takes well under JAX's default 1 s.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    if (keras_backend or settings["KERAS_BACKEND"]) != "tensorflow":
        # Keras' serializer imports TensorFlow, when installed, to save a model; it then
        # computes nothing, and its notice that oneDNN is on (logged before the level
        # above applies) is noise.
        settings["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return settings


def outputs_removed_by_dvc(environ: Mapping[str, str], root: Path = Path()) -> str:
    """Say what DVC removed before the stage ran and how to put it back ("" if nothing).

    Under ``dvc repro`` or ``dvc exp run`` only (DVC_STAGE is set); a stage run by
    itself gets "". ``root`` is the stage's working directory, its repository's root:
    for a queued experiment a copy under .dvc/tmp/exps/, where DVC_ROOT names the
    workspace instead. Every output of this pipeline is in DVC's cache, and dvc.lock
    records the versions of the last run until a run succeeds, so ``dvc checkout
    <stage>`` restores them.
    """
    stage = environ.get("DVC_STAGE")
    if not stage:
        return ""
    try:
        recorded = YAML(typ="safe").load((root / "dvc.lock").read_text())["stages"][stage]["outs"]
        paths = [str(output["path"]) for output in recorded]
    except (OSError, YAMLError, KeyError, TypeError):
        return ""  # no run of this stage recorded: nothing to put back
    removed = [path for path in paths if not (root / path).exists()]
    if not removed:
        return ""
    return (
        f"DVC removed {', '.join(removed)} before running {stage}; "
        f"`dvc checkout {stage}` puts back the versions dvc.lock records"
    )


def params_left_by_dvc(environ: Mapping[str, str], root: Path = Path()) -> str:
    """Say, for a `dvc exp run` in the workspace, that its params stay in params.yaml.

    DVC writes an experiment's ``-S`` values into the workspace's params.yaml before
    it runs (a queued one runs in a copy of the repository, and leaves them there).
    """
    workspace = environ.get("DVC_ROOT")
    if not environ.get("DVC_EXP_NAME") or workspace is None:
        return ""
    if Path(workspace).resolve() != root.resolve():
        return ""
    return (
        "dvc exp run wrote its -S values into params.yaml, and they stay there; "
        "`git checkout params.yaml` puts back the committed ones"
    )


def _fail(
    message: str,
    status: int,
    environ: Mapping[str, str],
    hint: str = "",
    *,
    interrupted: bool = False,
) -> int:
    """Print ``message`` as ``error:`` lines, then ``hint``, then what DVC removed."""
    removed = outputs_removed_by_dvc(environ)
    if interrupted and not removed:
        message += "; no output was changed"
    if hint:
        message += f"\n{hint}"
    for line in message.splitlines():
        print(f"error: {line}", file=sys.stderr)
    if removed:
        print(f"error: {removed}", file=sys.stderr)
    return status


def run(module: str, argv: Sequence[str], environ: MutableMapping[str, str] = os.environ) -> int:
    """Run ``module``'s ``main(argv)`` as a command; return its exit status."""
    cache_root = Path(platformdirs.user_cache_dir("cifar10-dvc-pipeline"))
    for name, value in library_settings(cache_root, environ.get("KERAS_BACKEND")).items():
        environ.setdefault(name, value)
    # Libraries' own INFO chatter (JAX probing for TPUs, say) stays out; the pipeline's in.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for name in ("stages", "cifar10"):
        logging.getLogger(name).setLevel(logging.INFO)
    previous = {signum: signal.signal(signum, _terminate) for signum in TERMINATING_SIGNALS}
    try:
        _check_keras_backend(environ["KERAS_BACKEND"])
        importlib.import_module(module).main(argv)
    except BrokenPipeError:
        # What read the output went away (`cifar10-predict *.png | head`): end quietly,
        # closing stdout so that Python's own flush at exit finds nothing to write.
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.close()
        return BROKEN_PIPE_STATUS
    except (Exception, KeyboardInterrupt) as error:  # each is reported by _failed
        return _failed(error, environ)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _check_keras_backend(name: str) -> None:
    """Refuse a KERAS_BACKEND the pipeline does not run on: Keras' import is a traceback."""
    # Imported here, once Ctrl-C and SIGTERM are handled: params loads numpy.
    from cifar10.params import BACKENDS  # noqa: PLC0415

    if name not in BACKENDS:
        raise PipelineError(
            f"KERAS_BACKEND={name!r} is not one of the Keras backends this pipeline runs "
            f"on: {', '.join(BACKENDS)}; unset it (dvc.yaml's train command sets it from "
            "train.backend)"
        )


def _failed(error: BaseException, environ: Mapping[str, str]) -> int:
    """Report the exception being handled; return the command's exit status."""
    if isinstance(error, KeyboardInterrupt):
        # 128 + the signal's number, as shells report a command a signal ended.
        message, status = (
            (f"terminated by {error}", 128 + error.signum)
            if isinstance(error, Terminated)
            else ("interrupted", INTERRUPTED_STATUS)
        )
        return _fail(message, status, environ, interrupted=True)
    if isinstance(error, ParamsError):
        return _fail(str(error), 1, environ, params_left_by_dvc(environ))
    if isinstance(error, PipelineError):
        return _fail(str(error), 1, environ)
    fault = machine_fault(error)
    if fault is not None:
        return _fail(fault, 1, environ)
    if isinstance(error, OSError) and error.filename is not None:
        return _fail(f"{error.filename}: {error.strerror or error}", 1, environ)
    return _bug(environ)  # not about a file, or any other exception: a bug


def _bug(environ: Mapping[str, str]) -> int:
    """Print the traceback of the exception being handled, then what DVC removed."""
    traceback.print_exc()
    removed = outputs_removed_by_dvc(environ)
    if removed:
        print(f"error: {removed}", file=sys.stderr)
    return 1


def predict() -> None:
    """Run ``cifar10-predict``, the console script of cifar10/predict.py."""
    sys.exit(run("cifar10.predict", sys.argv[1:]))


def compare() -> None:
    """Run ``cifar10-compare``, the console script of cifar10/compare.py."""
    sys.exit(run("cifar10.compare", sys.argv[1:]))
