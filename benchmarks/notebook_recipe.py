"""The assignment notebook's Part 2, as a faithful script: the baseline of the benchmarks.

Same steps as the notebook: load the batches (as ``keras.datasets.cifar10.load_data``
does, from the archive given instead of the download), flatten, divide by 255 (float64),
``train_test_split(test_size=0.2, random_state=42)``, the 128-64-10 model, Adam,
``fit(epochs=20, validation_split=0.2)``, ``evaluate`` on the test set.

Prints one JSON line of figures: wall time, training throughput, peak memory, test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The notebook's `tensorflow.keras`: Keras on TensorFlow, whatever the caller's environment
# says. Keras reads it when it loads.
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch as Keras' cifar10 loader does (a trusted archive: plain pickle)."""
    with path.open("rb") as file:
        batch = pickle.load(file, encoding="bytes")  # noqa: S301 - the benchmark's own input
    images = batch[b"data"].reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"])


def load_data(archive: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``cifar10.load_data()``: extract, read the batches, channels last, labels (N, 1)."""
    with tempfile.TemporaryDirectory() as folder, tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
        batches = Path(folder) / "cifar-10-batches-py"
        parts = [load_batch(batches / f"data_batch_{number}") for number in range(1, 6)]
        x_test, y_test = load_batch(batches / "test_batch")
    x_dev = np.concatenate([images for images, _ in parts]).transpose(0, 2, 3, 1)
    y_dev = np.concatenate([labels for _, labels in parts]).reshape(-1, 1)
    return (x_dev, y_dev), (x_test.transpose(0, 2, 3, 1), y_test.reshape(-1, 1))


def main() -> None:
    """Run the notebook's recipe on an archive and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("archive", type=Path)
    parser.add_argument("--epochs", type=int, default=20)
    arguments = parser.parse_args()
    started = time.perf_counter()

    import keras  # noqa: PLC0415 - import time counts as the notebook's
    from keras import layers, models  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    (x_dev, y_dev), (x_test, y_test) = load_data(arguments.archive)
    x_dev_flat = x_dev.reshape(x_dev.shape[0], -1)
    x_test_flat = x_test.reshape(x_test.shape[0], -1)
    x_dev_standardized = x_dev_flat / 255.0
    x_test_standardized = x_test_flat / 255.0
    x_train, _x_val, y_train, _y_val = train_test_split(
        x_dev_standardized, y_dev, test_size=0.2, random_state=42
    )
    model = models.Sequential(
        [
            layers.Input(shape=(3072,)),
            layers.Dense(128, activation="relu"),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_started = time.perf_counter()
    model.fit(x_train, y_train, epochs=arguments.epochs, validation_split=0.2, verbose=0)
    fit_seconds = time.perf_counter() - fit_started
    _test_loss, test_accuracy = model.evaluate(x_test_standardized, y_test, verbose=0)
    fitted_samples = int(len(x_train) * 0.8) * arguments.epochs  # validation_split keeps 80 %
    print(
        json.dumps(
            {
                "wall_seconds": time.perf_counter() - started,
                "fit_seconds": fit_seconds,
                "samples_per_second": fitted_samples / fit_seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "test_accuracy": float(test_accuracy),
                "keras_backend": keras.backend.backend(),
            }
        )
    )


if __name__ == "__main__":
    main()
