"""The assignment's MLP as a Keras model: building, describing, saving and loading it.

The model starts with a ``Normalization`` layer holding the prepare stage's
standardization as constants (no parameters), so it takes the uint8 inputs of the
prepared data directly; its saved folder adds the class names and the preprocessing
(the scaling mode, and with ZCA the whitening), so it is all a prediction needs
(stages/inference.py). It runs on either of Keras' backends (``train.backend``).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from stages.cifar import FEATURES
from stages.dataset import Preprocessing, Standardization, write_class_names, write_preprocessing
from stages.inference import ARCHITECTURE_FILE, WEIGHTS_FILE, weights_sha256


def build_model(
    standardization: Standardization,
    hidden_units: list[int],
    n_classes: int,
    activation: str,
    dropout: float,
    *,
    seed: int,
) -> keras.Sequential:
    """Build the MLP: standardize, dense hidden layers, optional dropout, softmax.

    Its initial weights and dropout masks are drawn from ``seed`` alone.
    """
    # An independent seed for each layer that draws at random.
    layer_seeds = iter(np.random.SeedSequence(seed).generate_state(2 * len(hidden_units) + 1))

    def dense(units: int, activation: str, name: str) -> layers.Dense:
        initializer = keras.initializers.GlorotUniform(seed=int(next(layer_seeds)))
        return layers.Dense(units, activation, kernel_initializer=initializer, name=name)

    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=(FEATURES,), name="pixels"))
    model.add(
        layers.Normalization(
            mean=standardization.mean, variance=standardization.scale**2, name="standardize"
        )
    )
    for index, units in enumerate(hidden_units, start=1):
        model.add(dense(units, activation, f"hidden_{index}"))
        # Drawn with or without dropout, so that it leaves the weights' seeds alone.
        dropout_seed = int(next(layer_seeds))
        if dropout > 0:
            model.add(layers.Dropout(dropout, seed=dropout_seed, name=f"dropout_{index}"))
    model.add(dense(n_classes, "softmax", "output"))
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


def dense_weights_sha256(model: keras.Model) -> str:
    """Return :func:`stages.inference.weights_sha256` of the model's dense layers, in order."""
    return weights_sha256(
        (keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(layer.bias))
        for layer in model.layers
        if isinstance(layer, layers.Dense)
    )


def save_model(
    model: keras.Model,
    directory: Path,
    class_names: tuple[str, ...],
    preprocessing: Preprocessing,
) -> None:
    """Save a self-contained model folder; the same model gives the same bytes.

    Architecture (JSON) and weights (.weights.h5) as Keras writes them, the class
    names, and the preprocessing that makes the model's inputs from images.
    """
    directory.mkdir()
    (directory / ARCHITECTURE_FILE).write_text(model.to_json(indent=2) + "\n")
    model.save_weights(directory / WEIGHTS_FILE)
    write_class_names(directory, class_names)
    write_preprocessing(directory, preprocessing)


def load_model(directory: Path) -> keras.Model:
    """Load a model saved by :func:`save_model`."""
    model = keras.models.model_from_json((directory / ARCHITECTURE_FILE).read_text())
    model.load_weights(directory / WEIGHTS_FILE)
    return model
