"""train stage: the assignment's Keras MLP (3072 -> 128 -> 64 -> 10), logged with dvclive.

Images stay uint8 in memory; each batch is standardized on the fly (float32) with the
prepare stage's statistics. Validation uses the prepare stage's validation split.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Quieter TensorFlow start-up; must be set before the import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback
from keras import layers

from stages.atomic import atomic_path, write_json
from stages.cifar import IMAGE_SHAPE, Split
from stages.cli import StageError, run_stage
from stages.dataset import Standardization, load_class_names, load_split, load_standardization
from stages.params import TrainParams, load_params

WEIGHTS_FILE = "model.weights.h5"
# The assignment's check prints the softmax sum at two decimals: it must read 1.00.
SOFTMAX_SUM_TOLERANCE = 0.005
FLIP_PROBABILITY = 0.5
CONFIG_FILE = "model.json"


def build_model(
    input_size: int, hidden_units: list[int], n_classes: int, activation: str, dropout: float
) -> keras.Sequential:
    """Build the MLP: dense hidden layers, optional dropout, softmax over the classes."""
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=(input_size,), name="pixels"))
    for index, units in enumerate(hidden_units, start=1):
        model.add(layers.Dense(units, activation=activation, name=f"hidden_{index}"))
        if dropout > 0:
            model.add(layers.Dropout(dropout, name=f"dropout_{index}"))
    model.add(layers.Dense(n_classes, activation="softmax", name="output"))
    return model


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), with a constant or cosine-decayed learning rate."""
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = params.learning_rate
    if params.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            params.learning_rate, decay_steps=params.epochs * steps_per_epoch
        )
    if params.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate, weight_decay=params.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def mirror_batch(images: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """Mirror left to right the flat height-width-channel rows of ``images`` where ``flip``."""
    mirrored = tf.reverse(tf.reshape(images, (-1, *IMAGE_SHAPE)), axis=[2])
    return tf.where(flip[:, tf.newaxis], tf.reshape(mirrored, tf.shape(images)), images)


def make_dataset(
    split: Split,
    standardization: Standardization,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    horizontal_flip: bool = False,
    epochs: int = 1,
) -> tf.data.Dataset:
    """Batches of (standardized float32 images, labels) for ``epochs`` passes over ``split``.

    Work happens per batch, never per image, because on a small CPU the input pipeline
    competes with training: each epoch draws one shuffled order (stateless, from
    ``shuffle_seed`` and the epoch number) and each batch is one gather of uint8 rows;
    flips, drawn per image and epoch, mirror rows of the gathered batch.
    """
    if horizontal_flip and shuffle_seed is None:
        raise ValueError("horizontal_flip needs a shuffle_seed to draw flips from")
    size = len(split.labels)
    images, labels = tf.constant(split.images), tf.constant(split.labels)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        # The epoch's order of the rows and, with flips, whether to mirror each image.
        order = tf.range(size, dtype=tf.int64)
        flips = None
        if shuffle_seed is not None:
            seed = tf.random.experimental.stateless_fold_in(
                tf.constant([shuffle_seed, 0], tf.int64), epoch
            )
            order = tf.random.experimental.stateless_shuffle(order, seed=seed)
            if horizontal_flip:
                flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
                flips = tf.random.stateless_uniform((size,), seed=flip_seed) < FLIP_PROBABILITY

        def gather(start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            rows = order[start : start + batch_size]
            batch = tf.gather(images, rows)
            if flips is not None:
                batch = mirror_batch(batch, flips[start : start + batch_size])
            return standardization.apply(tf.cast(batch, tf.float32)), tf.gather(labels, rows)

        return tf.data.Dataset.range(0, size, batch_size).map(gather)

    # No prefetch: on two cores its thread competes with training (AUTOTUNE also grew it
    # by hundreds of MB), and batches of one gather are quick to make on demand.
    batches = tf.data.Dataset.range(epochs).flat_map(epoch_batches)
    # flat_map hides the length; Keras needs it to end an evaluation without a warning.
    steps_per_epoch = -(-size // batch_size)
    batches = batches.apply(tf.data.experimental.assert_cardinality(epochs * steps_per_epoch))
    # Nothing to tune; freeing an iterator waited for tf.data's autotuning thread, which
    # stalled the end of fit by up to 9 s on this machine.
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.with_options(options)


def steps_per_call(steps_per_epoch: int, limit: int) -> int:
    """Pick the most training steps per compiled call, up to ``limit``, that divide an epoch.

    Keras runs whole calls, so a call size that does not divide the epoch would carry
    the epoch's end into the next epoch's batches (and cut the last epoch short).
    """
    if steps_per_epoch < 1 or limit < 1:
        raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and limit ({limit}) must be >= 1")
    return max(d for d in range(1, min(limit, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Create the tf.distribute strategy named by ``train.distribute``.

    ``mirrored``: every local GPU, or else every (logical) CPU device; ``multi_worker``:
    every worker listed in ``TF_CONFIG`` (all run this stage); ``none``: TensorFlow's
    default strategy.
    """
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StageError(
                "train.distribute = multi_worker needs TF_CONFIG (the cluster and this "
                "worker's task) in the environment of every worker; see README, Scaling out"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "none":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown distribute {name!r}: use none, mirrored or multi_worker")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: the chief, or worker 0 without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def fit_with_strategy(
    model: keras.Model,
    train_batches: tf.data.Dataset,
    validation_batches: tf.data.Dataset,
    *,
    strategy: tf.distribute.Strategy,
    epochs: int,
    steps_per_epoch: int,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    """``model.fit`` for a compiled model as a custom loop over ``strategy.run``.

    Keras 3's ``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
    so distributed training steps through the strategy itself: each replica averages its
    losses over the global batch and the optimizer sums the gradients across replicas.
    The logs, callbacks and returned history are those of ``fit``.
    """
    loss_function = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def sums(labels: tf.Tensor, probabilities: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        """Sum the losses, correct predictions and images of one replica's batch."""
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        correct = tf.cast(predicted == tf.cast(labels, tf.int32), tf.float32)
        count = tf.cast(tf.size(losses), tf.float32)
        return tf.stack([tf.reduce_sum(losses), tf.reduce_sum(correct), count])

    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            losses = loss_function(labels, probabilities)
            loss = tf.nn.compute_average_loss(losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(gradients, model.trainable_variables)
        return sums(labels, probabilities, losses)

    def test_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        probabilities = model(images, training=False)
        return sums(labels, probabilities, loss_function(labels, probabilities))

    def on_every_replica(step: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor]:
        """Run ``step`` on each replica's part of a batch and add up the sums."""

        @tf.function(reduce_retracing=True)
        def run(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            per_replica = strategy.run(step, args=batch)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return run

    distributed_train_step = on_every_replica(train_step)
    distributed_test_step = on_every_replica(test_step)

    def logs(loss_sum: float, correct: float, count: float, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}accuracy": correct / count, f"{prefix}loss": loss_sum / count}

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=True, model=model,
        verbose=2, epochs=epochs, steps=steps_per_epoch,
    )  # fmt: skip
    model.stop_training = False
    batches = iter(strategy.experimental_distribute_dataset(train_batches))
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        train_sums = np.zeros(3)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_sums += distributed_train_step(next(batches)).numpy()
            callback_list.on_train_batch_end(step)
        validation_sums = np.zeros(3)
        for batch in strategy.experimental_distribute_dataset(validation_batches):
            validation_sums += distributed_test_step(batch).numpy()
        callback_list.on_epoch_end(
            epoch, {**logs(*train_sums), **logs(*validation_sums, prefix="val_")}
        )
        if model.stop_training:
            break
    callback_list.on_train_end()
    return model.history.history


def layer_summary(model: keras.Model) -> dict[str, object]:
    """Parameter counts per layer and in total, as the assignment asks (2.4)."""
    return {
        "layers": [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": str(layer.output.shape),
                "parameters": layer.count_params(),
            }
            for layer in model.layers
        ],
        "total_parameters": model.count_params(),
    }


@dataclass(frozen=True)
class TrainingResult:
    """What training produced, for the outputs."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based epoch whose weights the model holds
    first_sample_output_sum: float
    samples_per_second: float  # training throughput, validation included; printed, not saved


def train(
    train_split: Split,
    validation_split: Split,
    *,
    standardization: Standardization,
    n_classes: int,
    params: TrainParams,
    validation_batch_size: int,
    strategy: tf.distribute.Strategy,
    live: Live | None,
) -> TrainingResult:
    """Train the MLP with ``params``; deterministic for a given ``params.seed``.

    ``params.batch_size`` is per replica: each step uses batch_size x replicas images,
    split across the replicas. ``live`` logs every epoch (None: no logging, as on the
    workers that are not the chief).
    """
    keras.utils.set_random_seed(params.seed)
    global_batch_size = params.batch_size * strategy.num_replicas_in_sync
    distributed = params.distribute != "none"
    if distributed and (params.jit_compile or params.steps_per_execution > 1):
        print("train.distribute: a custom loop, one step per call and without jit_compile")
    jit_compile = params.jit_compile and not distributed
    if not jit_compile:
        # Keras turns XLA off under op determinism; XLA on CPU is deterministic by itself
        # (tests/test_train.py checks bit-identical runs with the defaults).
        tf.config.experimental.enable_op_determinism()
    steps_per_epoch = -(-len(train_split.labels) // global_batch_size)
    with strategy.scope():
        model = build_model(
            train_split.images.shape[1],
            params.hidden_units,
            n_classes,
            params.activation,
            params.dropout,
        )
        model.compile(
            optimizer=make_optimizer(params, steps_per_epoch),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit_compile,
            steps_per_execution=steps_per_call(steps_per_epoch, params.steps_per_execution),
        )
    # The assignment's check (2.5): the softmax over the first training sample sums to 1.
    first_output = model(standardization.transform(train_split.images[:1]), training=False)
    first_sample_output_sum = float(np.sum(keras.ops.convert_to_numpy(first_output)))

    callbacks: list[keras.callbacks.Callback] = [] if live is None else [DVCLiveCallback(live=live)]
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
    train_batches = make_dataset(
        train_split,
        standardization,
        global_batch_size,
        shuffle_seed=params.seed,
        horizontal_flip=params.horizontal_flip,
        epochs=params.epochs,
    )
    validation_batches = make_dataset(validation_split, standardization, validation_batch_size)
    fit_started = time.perf_counter()
    if distributed:
        history = fit_with_strategy(
            model,
            train_batches,
            validation_batches,
            strategy=strategy,
            epochs=params.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
        )
    else:
        history = model.fit(
            train_batches,
            validation_data=validation_batches,
            epochs=params.epochs,
            steps_per_epoch=steps_per_epoch,  # one dataset spans every epoch, seeded per epoch
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles itself
            verbose=2,
        ).history
    fit_seconds = time.perf_counter() - fit_started
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
        samples_per_second=len(train_split.labels) * len(validation_accuracy) / fit_seconds,
    )


def save_model(model: keras.Model, directory: Path) -> None:
    """Save weights (.weights.h5) and architecture (JSON): bytes reproducible, no timestamps."""
    model.save_weights(directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(model.to_json(indent=2) + "\n")


def load_model(directory: Path) -> keras.Model:
    """Load a model saved by :func:`save_model`."""
    try:
        model = keras.models.model_from_json((directory / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise StageError(
            f"{directory / CONFIG_FILE}: missing; run `dvc repro train` first"
        ) from None
    model.load_weights(directory / WEIGHTS_FILE)
    return model


def main() -> None:
    """Train on the prepared data and write the model, the history and the summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared-data folder")
    parser.add_argument("--model", type=Path, required=True, help="model folder to write")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    parser.add_argument("--summary", type=Path, required=True, help="summary JSON to write")
    parser.add_argument("--history", type=Path, required=True, help="history JSON to write")
    arguments = parser.parse_args()
    all_params = load_params()
    params = all_params.train
    strategy = make_strategy(params.distribute)

    standardization = load_standardization(arguments.prepared)
    class_names = load_class_names(arguments.prepared)
    train_split = load_split(arguments.prepared, "train")
    validation_split = load_split(arguments.prepared, "validation")

    # Every worker trains; only the chief logs and writes the outputs.
    chief = is_chief(strategy)
    live_logger = (
        Live(str(arguments.live), dvcyaml=None, save_dvc_exp=False, report=None)
        if chief
        else contextlib.nullcontext()
    )
    with live_logger as live:
        result = train(
            train_split,
            validation_split,
            standardization=standardization,
            n_classes=len(class_names),
            params=params,
            validation_batch_size=all_params.evaluate.batch_size,
            strategy=strategy,
            live=live,
        )
    replicas = f"{strategy.num_replicas_in_sync} replica(s)"
    if abs(result.first_sample_output_sum - 1.0) > SOFTMAX_SUM_TOLERANCE:
        raise StageError(
            f"softmax output on the first training sample sums to "
            f"{result.first_sample_output_sum:.4f}, not 1.00"
        )
    if not chief:
        print(f"trained on {replicas} as a worker; the chief writes the outputs")
        return
    summary = {
        **layer_summary(result.model),
        "first_sample_output_sum": round(result.first_sample_output_sum, 6),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history["loss"]),
        "jit_compile": bool(result.model.jit_compile),  # what Keras ran, not what was asked
    }
    with atomic_path(arguments.model, directory=True) as folder:
        save_model(result.model, folder)
    write_json(arguments.summary, summary)
    write_json(arguments.history, result.history)
    best = result.history["val_accuracy"][result.best_epoch - 1]
    print(f"trained {summary['total_parameters']:,} parameters on {replicas} at "
          f"{result.samples_per_second:.0f} samples/s; "
          f"validation accuracy {best:.4f} at epoch {result.best_epoch}")  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
