"""The assignment's MLP as a Keras model, and the self-contained folder it is saved in.

The model starts with a ``Normalization`` layer holding the preprocessing's mean and
scale as constants (no parameters), so it reads the prepared uint8 inputs directly. With
``test_time_flip`` it averages, at inference, its outputs for each image and its mirror
image (cifar10/augmentation.py's ``MirroredViews`` and ``MeanOverViews``, around all the
rest, with no parameters either): validation, test and predict alike. Its
folder, written and read here only, holds the model as Keras saves it (``model.keras``),
the class names (``classes.json``) and the preprocessing that makes its inputs from
images (cifar10/preprocessing.py): all that a prediction needs. Keras loads it, so any
layer Keras has works there, on either backend.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers

from cifar10.archive import FEATURES
from cifar10.augmentation import MeanOverViews, MirroredViews
from cifar10.errors import InputError, one_line
from cifar10.files import read_json, regular_file_size
from cifar10.params import MAX_MLP_PARAMETERS
from cifar10.preprocessing import Preprocessing

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
STAGE = "train"  # the stage of dvc.yaml that writes the pipeline's model folder
WEIGHTS_ENTRY = "model.weights.h5"  # the weights inside model.keras (Keras' name)
# The float32 weights of the largest model train builds, with room for its config: the
# most model.keras holds, packed or unpacked, so no damaged file makes Keras read more.
MAX_MODEL_BYTES = 4 * MAX_MLP_PARAMETERS + (16 << 20)
# Keras' errors quote whole configs (mean and variance: 3072 numbers each): cut to this.
_MAX_PROBLEM_CHARACTERS = 300
# Keras' record of when it saved the model and the zip entries' dates made constant, and
# the ids it gives shared objects (their memory addresses) left out: the same weights
# give the same bytes, so DVC records the same hash for a rerun, and a loaded model
# (whose layers no longer share their dtype policy with the model) saves as it was
# saved. Every occurrence of a shared object holds its whole config, so without its id
# each loads as an object of its own.
_SAVED_DATE = "1980-01-01@00:00:00"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_SHARED_ID = "shared_object_id"


def build_model(
    preprocessing: Preprocessing,
    hidden_units: list[int],
    n_classes: int,
    activation: str,
    dropout: float,
    *,
    test_time_flip: bool,
    seed: int,
) -> keras.Sequential:
    """Build the MLP: standardize, dense hidden layers, optional dropout, softmax.

    Its initial weights and dropout masks are drawn from ``seed`` alone. With
    ``test_time_flip``, its inference averages over each image and its mirror image.
    """
    # An independent seed for each layer that draws at random.
    layer_seeds = iter(np.random.SeedSequence(seed).generate_state(2 * len(hidden_units) + 1))

    def dense(units: int, activation: str, name: str) -> layers.Dense:
        initializer = keras.initializers.GlorotUniform(seed=int(next(layer_seeds)))
        return layers.Dense(units, activation, kernel_initializer=initializer, name=name)

    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=(FEATURES,), name="pixels"))
    if test_time_flip:
        model.add(MirroredViews(name="mirrored_views"))
    model.add(
        layers.Normalization(
            mean=preprocessing.mean, variance=preprocessing.scale**2, name="standardize"
        )
    )
    for index, units in enumerate(hidden_units, start=1):
        model.add(dense(units, activation, f"hidden_{index}"))
        # Drawn with or without dropout, so that it leaves the weights' seeds alone.
        dropout_seed = int(next(layer_seeds))
        if dropout > 0:
            model.add(layers.Dropout(dropout, seed=dropout_seed, name=f"dropout_{index}"))
    model.add(dense(n_classes, "softmax", "output"))
    if test_time_flip:
        model.add(MeanOverViews(name="mean_over_views"))
    return model


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
class Classifier:
    """A model folder loaded: images in, class probabilities out."""

    model: keras.Model
    class_names: tuple[str, ...]
    preprocessing: Preprocessing

    def probabilities(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities of (N, 3072) uint8 height-width-channel images."""
        return predict(self.model, self.preprocessing.model_inputs(images), batch_size)


def predict(model: keras.Model, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Return the model's outputs for uint8 inputs, as float32 numpy."""
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), np.float32)


def _unshared(config: object) -> object:
    """Return Keras' config without the ids of its shared objects."""
    if isinstance(config, list):
        return [_unshared(item) for item in config]
    if isinstance(config, dict):
        return {key: _unshared(value) for key, value in config.items() if key != _SHARED_ID}
    return config


def _reproducible(archive: bytes) -> bytes:
    """Return the .keras archive with its dates constant and no ids of shared objects."""
    output = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(archive)) as source,
        zipfile.ZipFile(output, "w") as target,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "metadata.json":
                data = json.dumps({**json.loads(data), "date_saved": _SAVED_DATE}).encode()
            elif entry.filename == "config.json":
                data = json.dumps(_unshared(json.loads(data))).encode()
            target.writestr(zipfile.ZipInfo(entry.filename, _ZIP_DATE), data, entry.compress_type)
    return output.getvalue()


def save_classifier(classifier: Classifier, directory: Path) -> None:
    """Write the model folder into the new folder ``directory``."""
    directory.mkdir()
    path = directory / MODEL_FILE
    keras.saving.save_model(classifier.model, path)
    path.write_bytes(_reproducible(path.read_bytes()))
    (directory / CLASSES_FILE).write_text(json.dumps(list(classifier.class_names)) + "\n")
    classifier.preprocessing.save(directory)


def _keras_problem(error: Exception) -> str:
    """Keras' message about a file, in one short line: the cause, not the configs it quotes."""
    text = one_line(error).partition(" Full config: ")[0]
    text = text.rpartition("Exception encountered: ")[2]
    if len(text) > _MAX_PROBLEM_CHARACTERS:
        text = text[:_MAX_PROBLEM_CHARACTERS] + " ..."
    return text


def _check_sizes(path: Path, stage: str | None) -> None:
    """Refuse a model.keras that would make Keras read more than the largest model holds.

    Its size and its entries' unpacked sizes, and the bytes its weights' arrays declare
    (Keras writes them unpacked, so they are at most the weights file's size; a damaged
    header can declare gigabytes that Keras would allocate before finding them missing).
    """
    size = regular_file_size(path, stage)
    if size > MAX_MODEL_BYTES:
        raise InputError(
            path, f"{size:,} bytes, more than the {MAX_MODEL_BYTES:,} it can be", stage
        )
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(entry.file_size for entry in archive.infolist())
        if unpacked > MAX_MODEL_BYTES:
            raise InputError(
                path,
                f"{unpacked:,} bytes unpacked, more than the {MAX_MODEL_BYTES:,} it can be",
                stage,
            )
        if WEIGHTS_ENTRY not in archive.namelist():
            return  # Keras says what is missing
        weights = archive.read(WEIGHTS_ENTRY)
    declared = 0

    def add(_: str, item: object) -> None:
        nonlocal declared
        if isinstance(item, h5py.Dataset):
            declared += item.size * item.dtype.itemsize

    with h5py.File(io.BytesIO(weights), "r") as arrays:
        arrays.visititems(add)
    if declared > len(weights):
        raise InputError(
            path,
            f"its weights' arrays declare {declared:,} bytes, but {WEIGHTS_ENTRY} holds "
            f"{len(weights):,}",
            stage,
        )


def _unusable(model: keras.Model) -> str | None:
    """Say what makes a loaded model unusable, or return None.

    Outputs that are not class probabilities (the last layer not a softmax, or a mean
    over views of one), or a layer whose weights or constants are not finite (or
    variances not positive).
    """
    outputs = next(
        (layer for layer in reversed(model.layers) if not isinstance(layer, MeanOverViews)), None
    )
    # The layer's function itself, not its config: serializing one imports TensorFlow.
    activation = getattr(outputs, "activation", None)
    if activation is not keras.activations.softmax:
        name = getattr(activation, "__name__", None)
        return (
            f"its last layer's activation is {name!r}, not 'softmax': its outputs are not "
            "class probabilities"
        )
    for layer in model.layers:
        values = [keras.ops.convert_to_numpy(weight) for weight in layer.weights]
        if isinstance(layer, layers.Normalization):
            if layer.mean is None or layer.variance is None:
                return f"layer {layer.name!r} has no mean and variance"
            variance = keras.ops.convert_to_numpy(layer.variance)
            if not np.all(variance > 0):
                return f"layer {layer.name!r} has variances that are not positive"
            values += [keras.ops.convert_to_numpy(layer.mean), variance]
        if not all(np.isfinite(value).all() for value in values):
            return f"layer {layer.name!r} holds values that are not finite"
    return None


def load_classifier(directory: Path, stage: str | None = STAGE) -> Classifier:
    """Load a model folder written by :func:`save_classifier`; its parts must fit together.

    ``stage`` None: a folder the user named, which errors do not send back to a stage.
    """
    names = read_json(directory / CLASSES_FILE, stage, list)
    # Printable, as they reach terminals and CSV files: no control characters.
    if not names or not all(isinstance(name, str) and name.isprintable() for name in names):
        raise InputError(directory / CLASSES_FILE, "not a list of printable class names", stage)
    preprocessing = Preprocessing.load(directory, stage)
    path = directory / MODEL_FILE
    try:
        _check_sizes(path, stage)
        # Numbers out of float32's range warn as they convert: refused, not printed.
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            model = keras.saving.load_model(path, compile=False)
        shapes = (model.input_shape, model.output_shape)
    except InputError:
        raise
    except Exception as error:  # whatever Keras (zipfile, h5py) finds wrong with the file
        raise InputError(
            path, f"not a model Keras can load ({_keras_problem(error)})", stage
        ) from None
    if shapes != ((None, FEATURES), (None, len(names))):
        raise InputError(
            path,
            f"a model of inputs {shapes[0]} and outputs {shapes[1]}, not (None, {FEATURES}) "
            f"and (None, {len(names)}) for {len(names)} class names",
            stage,
        )
    problem = _unusable(model)
    if problem is not None:
        raise InputError(path, problem, stage)
    return Classifier(model, tuple(names), preprocessing)
