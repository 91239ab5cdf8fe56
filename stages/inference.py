"""Run a saved model with numpy alone: evaluation and prediction load no deep-learning framework.

A model folder written by stages/model.py is self-contained: Keras' own files (the
architecture as JSON, the weights as ``.weights.h5``), the class names, and the
preprocessing that turns images into the model's inputs. The MLP uses four kinds of
layers (``InputLayer``, ``Normalization``, ``Dense``, ``Dropout``), whose inference is a
few numpy lines each, so evaluating and predicting never import Keras (and with it JAX
or TensorFlow). tests/test_model.py checks the predictions against Keras' on both
backends.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import special

from stages.cifar import FEATURES
from stages.cli import StageError, read_small_file, regular_file_size, upstream_error
from stages.dataset import Preprocessing, load_class_names, read_preprocessing
from stages.params import MAX_MLP_PARAMETERS

ARCHITECTURE_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
STAGE = "train"
# model.json holds the standardization's 2 x 3072 numbers: 130 kB for any MLP here.
MAX_ARCHITECTURE_BYTES = 4 << 20
# The input, the standardization, a dense and a dropout layer for each of the 8 hidden
# layers params.py allows, and the output.
MAX_LAYERS = 32
# What h5py raises on a damaged file varies with the damage.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum for stability."""
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": special.expit,
    "tanh": np.tanh,
    # Keras' default gelu is the exact one, with the error function.
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2, dtype=x.dtype))),
    "softmax": softmax,
}


def weights_sha256(kernels_and_biases: Iterable[tuple[np.ndarray, np.ndarray]]) -> str:
    """Identify a network's weights exactly: sha256 over every layer's shapes and float32 values.

    The train stage records it for the weights it keeps and evaluate recomputes it
    from the saved folder: equal digests mean the very same weights.
    """
    digest = hashlib.sha256()
    for pair in kernels_and_biases:
        for values in pair:
            array = np.ascontiguousarray(values, np.float32)
            digest.update(repr(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Dense:
    """One dense layer: activation(inputs @ kernel + bias)."""

    kernel: np.ndarray  # (inputs, units) float32
    bias: np.ndarray  # (units,) float32
    activation: str


@dataclass(frozen=True)
class DenseNetwork:
    """A standardization followed by dense layers, as the saved Keras MLP computes them."""

    mean: np.ndarray  # (features,) float32
    scale: np.ndarray  # (features,) float32: the square root of Keras' variance
    layers: tuple[Dense, ...]

    @property
    def parameter_count(self) -> int:
        """Trainable parameters, as Keras counts them."""
        return sum(layer.kernel.size + layer.bias.size for layer in self.layers)

    @property
    def weights_sha256(self) -> str:
        """The digest of :func:`weights_sha256` for these layers."""
        return weights_sha256((layer.kernel, layer.bias) for layer in self.layers)

    def predict(self, inputs: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (float32) of uint8 inputs, ``batch_size`` rows at a time."""
        if inputs.ndim != 2 or inputs.shape[1] != self.mean.shape[0]:  # noqa: PLR2004
            raise ValueError(f"inputs must be (N, {self.mean.shape[0]}), got {inputs.shape}")
        outputs = []
        for start in range(0, len(inputs), batch_size):
            values = (
                inputs[start : start + batch_size].astype(np.float32) - self.mean
            ) / self.scale
            for layer in self.layers:
                values = ACTIVATIONS[layer.activation](values @ layer.kernel + layer.bias)
            outputs.append(values)
        return np.concatenate(outputs) if outputs else np.empty((0, self.layers[-1].bias.size))


def _layer_configs(path: Path, stage: str | None) -> list[tuple[object, dict]]:
    """Read the class name and config of each layer of a Keras Sequential ``model.json``."""
    try:
        architecture = json.loads(read_small_file(path, MAX_ARCHITECTURE_BYTES, stage))
    except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, too deeply nested
        raise upstream_error(path, stage, f"not valid JSON ({error})") from None
    config = architecture.get("config") if isinstance(architecture, dict) else None
    layers = config.get("layers") if isinstance(config, dict) else None
    if not (
        isinstance(layers, list)
        and 0 < len(layers) <= MAX_LAYERS
        and all(
            isinstance(layer, dict) and isinstance(layer.get("config"), dict) for layer in layers
        )
    ):
        raise upstream_error(
            path, stage, f"not a Keras Sequential model of at most {MAX_LAYERS} layers"
        )
    return [(layer.get("class_name"), layer["config"]) for layer in layers]


def _standardization(path: Path, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return a Normalization layer's mean and scale (the square root of its variance)."""
    try:
        with np.errstate(over="ignore"):  # beyond float32's range: refused below
            mean = np.asarray(config.get("mean"), np.float32).reshape(-1)
            variance = np.asarray(config.get("variance"), np.float32).reshape(-1)
    except (ValueError, TypeError):
        mean = variance = np.empty(0, np.float32)
    if not (
        mean.shape == variance.shape == (FEATURES,)
        and np.isfinite(mean).all()
        and np.isfinite(variance).all()
        and (variance > 0).all()
    ):
        raise StageError(
            f"{path}: the Normalization layer's mean and variance must be {FEATURES} finite "
            "numbers each, the variances positive"
        )
    return mean, np.sqrt(variance)


def _read_variables(path: Path, variables: h5py.Group, budget: int) -> list[np.ndarray]:
    """Read one layer's variables, each checked in kind and size before it is read."""
    if len(variables) > 2:  # noqa: PLR2004 (a kernel and a bias)
        raise StageError(f"{path}: {len(variables)} variables for a Dense layer")
    arrays = []
    for index in range(len(variables)):
        dataset = variables.get(str(index))
        if not (
            isinstance(dataset, h5py.Dataset)
            and dataset.dtype.kind == "f"
            and dataset.ndim in (1, 2)
            and dataset.external is None
            and not dataset.is_virtual
        ):
            raise StageError(f"{path}: {variables.name}/{index} is not a float array of the file")
        budget -= dataset.size
        if budget < 0:
            raise StageError(
                f"{path}: more than {MAX_MLP_PARAMETERS:,} weights, more than the train "
                "stage writes"
            )
        with np.errstate(over="ignore"):  # a float64 beyond float32's range: refused below
            values = np.asarray(dataset[()], np.float32)
        if not np.isfinite(values).all():
            raise StageError(f"{path}: {variables.name}/{index} holds values that are not finite")
        arrays.append(values)
    return arrays


def _weights_of(path: Path, file: h5py.File, names: set[str]) -> dict[str, list[np.ndarray]]:
    """Read the named layers' variables in Keras' .weights.h5 layout: layers/<key>/vars/<i>."""
    groups = file.get("layers")
    if not isinstance(groups, h5py.Group) or len(groups) > MAX_LAYERS:
        raise StageError(f"{path}: not the weights of a Keras model of at most {MAX_LAYERS} layers")
    weights: dict[str, list[np.ndarray]] = {}
    budget = MAX_MLP_PARAMETERS
    for group in groups.values():
        variables = group.get("vars") if isinstance(group, h5py.Group) else None
        name = variables.attrs.get("name") if isinstance(variables, h5py.Group) else None
        if not (isinstance(name, str) and name in names):
            continue
        if name in weights:
            raise StageError(f"{path}: two sets of weights for layer {reprlib.repr(name)}")
        weights[name] = _read_variables(path, variables, budget)
        budget -= sum(array.size for array in weights[name])
    return weights


def _read_weights(path: Path, names: set[str], stage: str | None) -> dict[str, list[np.ndarray]]:
    regular_file_size(path, stage)
    try:
        with h5py.File(path, "r") as file:
            return _weights_of(path, file, names)
    except _H5_ERRORS as error:
        raise upstream_error(path, stage, f"unreadable or truncated weights ({error})") from None


def load_network(directory: Path, stage: str | None = STAGE) -> DenseNetwork:
    """Load a model folder saved by stages/model.py; refuse anything else, naming the file.

    Every size is checked before it is read, so memory stays within what the largest
    model the train stage writes needs. ``stage`` None: a folder the user named, which
    errors do not send back to a stage.
    """
    architecture_file = directory / ARCHITECTURE_FILE
    weights_file = directory / WEIGHTS_FILE
    configs = _layer_configs(architecture_file, stage)
    dense_names = {
        config.get("name")
        for kind, config in configs
        if kind == "Dense" and isinstance(config.get("name"), str)
    }
    weights = _read_weights(weights_file, dense_names, stage)
    mean = scale = None
    layers: list[Dense] = []
    for kind, config in configs:
        name, activation = config.get("name"), config.get("activation")
        if kind == "Normalization" and mean is None and not layers:
            mean, scale = _standardization(architecture_file, config)
        elif kind == "Dense" and isinstance(activation, str) and activation in ACTIVATIONS:
            layers.append(
                _dense(weights_file, config, weights.get(name) if isinstance(name, str) else None)
            )
        elif kind not in ("InputLayer", "Dropout"):
            raise StageError(
                f"{architecture_file}: layer {reprlib.repr(name)} ({reprlib.repr(kind)}, "
                f"{reprlib.repr(activation)}) is not part of this pipeline's MLP"
            )
    if mean is None or scale is None or not layers:
        raise StageError(f"{architecture_file}: expected a Normalization layer then Dense layers")
    widths = [mean.shape[0]] + [layer.kernel.shape[1] for layer in layers]
    for layer, width in zip(layers, widths, strict=False):
        if layer.kernel.shape[0] != width:
            raise StageError(
                f"{weights_file}: weights of shape {layer.kernel.shape} do not follow a layer "
                f"of {width} units; the weights and {architecture_file.name} do not match"
            )
    return DenseNetwork(mean, scale, tuple(layers))


def _dense(path: Path, config: dict, variables: list[np.ndarray] | None) -> Dense:
    """Build a Dense layer from its config and its (kernel, bias), which must fit it."""
    name, units = reprlib.repr(config.get("name")), config.get("units")
    if variables is None or len(variables) != 2:  # noqa: PLR2004 (kernel, bias)
        raise StageError(f"{path}: no kernel and bias for layer {name}")
    kernel, bias = variables
    if not (
        type(units) is int and kernel.ndim == 2 and kernel.shape[1] == units  # noqa: PLR2004
    ) or bias.shape != (kernel.shape[1],):
        raise StageError(
            f"{path}: weights of shapes {kernel.shape} and {bias.shape} for layer {name} of "
            f"{reprlib.repr(units)} units; the weights and {ARCHITECTURE_FILE} do not match"
        )
    return Dense(kernel, bias, config["activation"])


@dataclass(frozen=True)
class Classifier:
    """A model folder put together: images in, class probabilities out."""

    network: DenseNetwork
    class_names: tuple[str, ...]
    preprocessing: Preprocessing

    def probabilities(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities of (N, 3072) uint8 height-width-channel images."""
        return self.network.predict(self.preprocessing.model_inputs(images), batch_size)


def load_classifier(directory: Path, stage: str | None = STAGE) -> Classifier:
    """Load a self-contained model folder; its parts must fit together.

    ``stage`` as for :func:`load_network`.
    """
    network = load_network(directory, stage)
    class_names = load_class_names(directory, stage)
    if len(class_names) != network.layers[-1].bias.size:
        raise StageError(
            f"{directory}: {len(class_names)} class names for a model of "
            f"{network.layers[-1].bias.size} outputs"
        )
    preprocessing = read_preprocessing(directory, stage)
    whitening = preprocessing.whitening
    if whitening is not None and whitening.mean.shape != (FEATURES,):
        raise StageError(
            f"{directory}: a whitening of {whitening.mean.shape[0]} values per image, not "
            f"{FEATURES}"
        )
    return Classifier(network, class_names, preprocessing)
