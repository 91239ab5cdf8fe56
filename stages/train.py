"""train stage: fit the Keras MLP on the train split, validating on the validation split.

One run per seed of train.seeds (dvc.yaml's matrix gives it ``--seed``). dvclive logs
every epoch; the weights of the best validation epoch are kept and saved as a
self-contained model folder (cifar10/model.py); what the run cost goes to its own file.
Run with KERAS_BACKEND set from train.backend, as dvc.yaml does: Keras reads it as it
loads.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import psutil
from dvclive import Live

from cifar10 import distribution
from cifar10.archive import CLASS_NAMES
from cifar10.atomic import atomic_outputs
from cifar10.errors import ParamsError, PipelineError
from cifar10.model import Classifier, layer_summary, save_classifier
from cifar10.params import read_params
from cifar10.prepared import read_model_inputs, read_preprocessing
from cifar10.reports import TrainReports, write_cost, write_history, write_summary
from cifar10.training import check_backend, check_softmax_sum, diverged_epoch, train


def peak_memory_mib() -> float:
    """Return this process's peak resident memory in MiB.

    getrusage gives KiB on Linux, bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(argv: Sequence[str] | None = None) -> None:
    """Train on the prepared data and write the model, the dvclive logs and the summaries."""
    parser = argparse.ArgumentParser(prog="python -m stages train", description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared-data folder")
    parser.add_argument("--seed", type=int, required=True, help="one of train.seeds")
    parser.add_argument("--model", type=Path, required=True, help="model folder to write")
    parser.add_argument("--reports", type=Path, required=True, help="report folder to write")
    parser.add_argument("--cost", type=Path, required=True, help="cost JSON to write")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.train
    if arguments.seed not in params.seeds:
        raise ParamsError(f"--seed {arguments.seed} is not one of train.seeds = {params.seeds}")
    check_backend(params.backend, keras.backend.backend())
    placement = distribution.set_up(params.distribute)

    preprocessing = read_preprocessing(arguments.prepared)
    train_inputs, batch_size = distribution.local_share(
        read_model_inputs(arguments.prepared, "train", preprocessing), placement, params.batch_size
    )
    validation_inputs, _ = distribution.local_share(
        read_model_inputs(arguments.prepared, "validation", preprocessing),
        placement,
        params.batch_size,
    )
    outputs = (arguments.model, arguments.reports, arguments.cost)
    # Only process 0 logs and writes; the others train and leave no trace.
    staging = (
        atomic_outputs(*outputs, before_commit=params_file.check_unchanged)
        if placement.is_chief
        else contextlib.nullcontext()
    )
    with staging as staged:
        live = None
        if staged is not None:
            model_folder, reports_folder, cost_file = staged
            reports_folder.mkdir()
            reports = TrainReports(reports_folder)
            live = Live(str(reports.live), dvcyaml=None, save_dvc_exp=False, report=None)
        train_images = len(train_inputs.labels)
        result = train(
            train_inputs,
            validation_inputs,
            preprocessing=preprocessing,
            n_classes=len(CLASS_NAMES),
            params=params,
            seed=arguments.seed,
            batch_size=batch_size,
            live=live,
        )
        # Free the data, and what Keras' objects hold of it in reference cycles, before
        # the model is saved: Keras' saving imports TensorFlow, hundreds of MB more.
        del train_inputs, validation_inputs
        gc.collect()
        diverged = diverged_epoch(result.history)
        if diverged is not None:
            raise PipelineError(
                f"training diverged: the loss is {diverged[1]} from epoch {diverged[0]} on; "
                "lower train.learning_rate"
            )
        check_softmax_sum(result.first_sample_output_sum)
        if staged is None:
            print(f"trained on {placement.describe()} as process {placement.process_index}")
            return
        live.end()
        summary = {
            **layer_summary(result.model),
            "first_sample_output_sum": round(result.first_sample_output_sum, 6),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history["loss"]),
        }
        save_classifier(Classifier(result.model, CLASS_NAMES, preprocessing), model_folder)
        write_summary(reports.summary, summary)
        write_history(reports.history, result.history)
        epochs = summary["epochs_run"]
        samples_per_second = epochs * train_images / result.fit_seconds
        write_cost(
            cost_file,
            {
                "fit_seconds": result.fit_seconds,
                "wall_seconds": time.time() - psutil.Process().create_time(),
                "peak_memory_mib": peak_memory_mib(),
                "samples_per_second": samples_per_second,
            },
        )
    best = result.history["val_accuracy"][result.best_epoch - 1]
    print(f"seed {arguments.seed}: trained {summary['total_parameters']:,} parameters on "
          f"{placement.describe()}: "
          f"{epochs} epochs in {result.fit_seconds:.1f} s ({samples_per_second:.0f} samples/s); "
          f"validation accuracy {best:.4f} at epoch {result.best_epoch}")  # fmt: skip
