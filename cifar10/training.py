"""Training the assignment's Keras MLP (3072 -> 128 -> 64 -> 10), logged with dvclive.

Inputs stay uint8 in memory; the model standardizes each batch itself, after random
flips and shifts (cifar10/augmentation.py) in training. Validation uses the prepare
stage's validation split, and the weights of the best validation epoch are kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np

from cifar10.archive import FEATURES, Split
from cifar10.augmentation import RandomFlipAndShift
from cifar10.errors import PipelineError
from cifar10.model import build_model
from cifar10.preprocessing import Preprocessing

if TYPE_CHECKING:
    from dvclive import Live

    from cifar10.params import TrainParams

# The assignment's check prints the softmax sum at two decimals: it must read 1.00.
SOFTMAX_SUM_TOLERANCE = 0.005


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay); constant or cosine-decayed rate, optional warm-up."""
    total_steps = params.epochs * steps_per_epoch
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = params.learning_rate
    if params.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup_steps else params.learning_rate,
            decay_steps=total_steps - warmup_steps,
            warmup_target=params.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    elif warmup_steps:
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            0.0, decay_steps=warmup_steps, end_learning_rate=params.learning_rate, power=1.0
        )
    if params.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate, weight_decay=params.weight_decay)
    return keras.optimizers.Adam(learning_rate)


class LiveLogger(keras.callbacks.Callback):
    """Log every epoch's metrics with dvclive, under the names dvclive's Keras callback uses.

    dvclive.keras imports TensorFlow for its callback's base class; this one is a plain
    Keras callback, so training on the JAX backend does not load TensorFlow. Its names are
    its own (``train/loss``, ``validation/accuracy``: the plots of dvc.yaml read them). Steps
    count epochs from 1, as the figures do.
    """

    def __init__(self, live: Live) -> None:
        super().__init__()
        self.live = live

    @staticmethod
    def metric_name(keras_name: str) -> str:
        """``val_loss`` -> ``validation/loss``, ``loss`` -> ``train/loss``."""
        if keras_name.startswith("val_"):
            return f"validation/{keras_name.removeprefix('val_')}"
        return f"train/{keras_name}"

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Log the epoch's metrics at step ``epoch + 1``."""
        self.live.step = epoch + 1
        for name, value in (logs or {}).items():
            self.live.log_metric(self.metric_name(name), float(value))
        self.live.next_step()


@dataclass(frozen=True)
class TrainingResult:
    """What training produced, for the outputs."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based epoch whose weights the model holds
    first_sample_output_sum: float
    fit_seconds: float  # compilation and validation included; printed, not saved


def seed_random_generators(seed: int) -> None:
    """Seed the generators training draws from besides the layers' own seeds (build_model).

    NumPy's, which Keras shuffles with on JAX, and Python's, which gives unseeded Keras
    objects their seeds; TensorFlow's too when it is the backend. Not with
    keras.utils.set_random_seed on JAX: it imports TensorFlow whenever it is installed,
    and all that TensorFlow then holds in memory stays there while training.
    """
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002 - the legacy generator is the one Keras draws from


def train(
    train_inputs: Split,
    validation_inputs: Split,
    *,
    preprocessing: Preprocessing,
    n_classes: int,
    params: TrainParams,
    seed: int,
    batch_size: int,
    live: Live | None,
) -> TrainingResult:
    """Train the MLP with ``params``, seeded with ``seed`` (one of ``params.seeds``).

    Deterministic for a given seed.

    ``batch_size`` is this process's share of ``params.batch_size`` (all of it, unless
    several processes train). ``live`` logs every epoch (None: no logging, as on the
    processes that do not write the outputs).
    """
    seed_random_generators(seed)
    model = build_model(
        preprocessing,
        params.hidden_units,
        n_classes,
        params.activation,
        params.dropout,
        test_time_flip=params.test_time_flip,
        seed=seed,
    )
    # Augmentation sees uint8 values; shifted-in pixels take the mean (standardized: 0).
    augment = RandomFlipAndShift(
        horizontal_flip=params.horizontal_flip,
        max_shift=params.max_shift,
        fill=preprocessing.mean,
        seed=seed,
        name="augment",
    )
    trainer = keras.Sequential([keras.Input(shape=(FEATURES,)), augment, model], name="trainer")
    steps_per_epoch = -(-len(train_inputs.labels) // batch_size)
    trainer.compile(
        optimizer=make_optimizer(params, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
        steps_per_execution=steps_per_epoch,  # one call per epoch: no per-step overhead
    )
    # The assignment's check (2.5): the softmax over the first training sample sums to 1.
    # One compiled call: calling the model eagerly compiles each of its operations apart.
    first_sample_output_sum = float(np.sum(model.predict_on_batch(train_inputs.images[:1])))

    callbacks: list[keras.callbacks.Callback] = [] if live is None else [LiveLogger(live)]
    if params.restore_best_epoch or params.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                mode="max",
                # Patience 0 means never stop early: wait longer than the whole run.
                patience=params.early_stopping_patience or params.epochs,
                restore_best_weights=params.restore_best_epoch,
            )
        )
    started = time.perf_counter()
    history = trainer.fit(
        train_inputs.images,
        keras.utils.to_categorical(train_inputs.labels, n_classes),
        batch_size=batch_size,
        epochs=params.epochs,
        validation_data=(
            validation_inputs.images,
            keras.utils.to_categorical(validation_inputs.labels, n_classes),
        ),
        callbacks=callbacks,
        verbose=2,
    ).history
    fit_seconds = time.perf_counter() - started
    validation_accuracy = history["val_accuracy"]
    best_epoch = (
        int(np.argmax(validation_accuracy)) + 1
        if params.restore_best_epoch
        else len(validation_accuracy)
    )
    return TrainingResult(
        model=model,
        history={name: [float(value) for value in values] for name, values in history.items()},
        best_epoch=best_epoch,
        first_sample_output_sum=first_sample_output_sum,
        fit_seconds=fit_seconds,
    )


def check_softmax_sum(first_sample_output_sum: float) -> None:
    """Refuse what fails the assignment's check (2.5): the first sample's outputs sum to 1.00."""
    if abs(first_sample_output_sum - 1.0) > SOFTMAX_SUM_TOLERANCE:
        raise PipelineError(
            f"softmax output on the first training sample sums to "
            f"{first_sample_output_sum:.4f}, not 1.00"
        )


def diverged_epoch(history: dict[str, list[float]]) -> tuple[int, float] | None:
    """Return the first epoch (from 1) whose training loss is not finite, and that loss."""
    for epoch, loss in enumerate(history["loss"], start=1):
        if not np.isfinite(loss):
            return epoch, loss
    return None


def check_backend(wanted: str, loaded: str) -> None:
    """Refuse to train on another backend than ``train.backend`` names.

    Keras reads its backend from KERAS_BACKEND once, when it loads, before any params
    could be read; dvc.yaml's command sets it from ``train.backend``.
    """
    if loaded != wanted:
        raise PipelineError(
            f"train.backend = {wanted!r}, but Keras loaded its {loaded!r} backend: it reads "
            f"KERAS_BACKEND as it loads; run KERAS_BACKEND={wanted} python -m stages train "
            "..., as dvc.yaml does"
        )
