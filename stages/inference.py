"""Run a saved model with numpy alone: evaluation and prediction load no deep-learning framework.

A model folder written by stages/model.py is self-contained: Keras' own files (the
architecture as JSON, the weights as ``.weights.h5``), the class names, and with ZCA
the whitening that turns images into the model's inputs. The MLP uses four kinds of
layers (``InputLayer``, ``Normalization``, ``Dense``, ``Dropout``), whose inference is a
few numpy lines each; importing Keras (and with it JAX or TensorFlow) would cost 3-5 s
per process. tests/test_model.py checks the predictions against Keras' on both backends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import special

from stages.cli import StageError, upstream_error
from stages.dataset import Whitening, load_class_names, load_whitening

ARCHITECTURE_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
STAGE = "train"


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


def _weights_by_layer(path: Path) -> dict[str, list[np.ndarray]]:
    """Each layer's variables in Keras' .weights.h5 layout: layers/<key>/vars/<i>."""
    weights: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as file:
            for group in file.get("layers", {}).values():
                variables = group.get("vars")
                if variables is None or "name" not in variables.attrs:
                    continue
                weights[str(variables.attrs["name"])] = [
                    np.asarray(variables[str(index)], np.float32) for index in range(len(variables))
                ]
    except FileNotFoundError:
        raise upstream_error(path, STAGE) from None
    except (OSError, KeyError) as error:
        raise upstream_error(path, STAGE, f"unreadable or truncated weights ({error})") from None
    return weights


def load_network(directory: Path) -> DenseNetwork:
    """Load a model folder saved by stages/model.py; refuse anything else, naming the file."""
    architecture_file = directory / ARCHITECTURE_FILE
    try:
        architecture = json.loads(architecture_file.read_text())
        layer_configs = architecture["config"]["layers"]
    except FileNotFoundError:
        raise upstream_error(architecture_file, STAGE) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise upstream_error(
            architecture_file, STAGE, f"not a Keras Sequential model ({error!r})"
        ) from None
    weights_file = directory / WEIGHTS_FILE
    weights = _weights_by_layer(weights_file)
    mean = scale = None
    layers: list[Dense] = []
    for layer in layer_configs:
        kind, config = layer.get("class_name"), layer.get("config", {})
        name = config.get("name")
        if kind == "Normalization" and mean is None and not layers:
            mean = np.asarray(config["mean"], np.float32).reshape(-1)
            scale = np.sqrt(np.asarray(config["variance"], np.float32).reshape(-1))
        elif kind == "Dense" and config.get("activation") in ACTIVATIONS:
            variables = weights.get(name, [])
            if len(variables) != 2 or variables[0].ndim != 2:  # noqa: PLR2004 (kernel, bias)
                raise StageError(f"{weights_file}: no kernel and bias for layer {name!r}")
            if variables[0].shape[1] != config.get("units"):
                raise StageError(
                    f"{weights_file}: weights of shape {variables[0].shape} for layer {name!r} "
                    f"of {config.get('units')} units; the weights and {ARCHITECTURE_FILE} "
                    "do not match"
                )
            layers.append(Dense(variables[0], variables[1], config["activation"]))
        elif kind not in ("InputLayer", "Dropout"):
            raise StageError(
                f"{architecture_file}: layer {name!r} ({kind}, {config.get('activation', '')}) "
                "is not part of this pipeline's MLP"
            )
    if mean is None or scale is None or not layers:
        raise StageError(f"{architecture_file}: expected a Normalization layer then Dense layers")
    widths = [mean.shape[0]] + [layer.kernel.shape[1] for layer in layers]
    for layer, width in zip(layers, widths, strict=False):
        if layer.kernel.shape[0] != width or layer.bias.shape != (layer.kernel.shape[1],):
            raise StageError(
                f"{weights_file}: weights of shape {layer.kernel.shape} do not follow a layer "
                f"of {width} units; the weights and {architecture_file.name} do not match"
            )
    return DenseNetwork(mean, scale, tuple(layers))


@dataclass(frozen=True)
class Classifier:
    """A model folder put together: images in, class probabilities out."""

    network: DenseNetwork
    class_names: tuple[str, ...]
    whitening: Whitening | None  # None: the model reads the images themselves

    def probabilities(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities of (N, 3072) uint8 height-width-channel images."""
        inputs = self.whitening.encode(images) if self.whitening is not None else images
        return self.network.predict(inputs, batch_size)


def load_classifier(directory: Path) -> Classifier:
    """Load a self-contained model folder; its parts must fit together."""
    network = load_network(directory)
    class_names = load_class_names(directory, STAGE)
    if len(class_names) != network.layers[-1].bias.size:
        raise StageError(
            f"{directory}: {len(class_names)} class names for a model of "
            f"{network.layers[-1].bias.size} outputs"
        )
    return Classifier(network, class_names, load_whitening(directory, STAGE))
