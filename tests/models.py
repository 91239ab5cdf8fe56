"""Model folders for the tests, and the numpy reference that Keras' outputs are checked against."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from scipy import special

from cifar10.archive import CLASS_NAMES, FEATURES, IMAGE_SHAPE
from cifar10.augmentation import MeanOverViews, MirroredViews
from cifar10.model import Classifier, build_model, save_classifier
from cifar10.preprocessing import Preprocessing, Whitening


def random_images(rows: int = 37, seed: int = 0) -> np.ndarray:
    """Uint8 images (flat, height-width-channel) of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)


def example_preprocessing(seed: int = 1, *, whitening: bool = False) -> Preprocessing:
    """A preprocessing of plausible statistics, with or without a small ZCA whitening."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(100, 150, FEATURES).astype(np.float32)
    scale = rng.uniform(40, 80, FEATURES).astype(np.float32)
    if not whitening:
        return Preprocessing("per_pixel", mean, scale)
    components = np.linalg.qr(rng.normal(size=(FEATURES, 3)))[0].T.astype(np.float32)
    fitted = Whitening(
        rng.uniform(100, 150, FEATURES).astype(np.float32),
        np.ascontiguousarray(components),
        np.array([-1.0, -0.5, -0.1], np.float32),
        0.3,
        std=2.0,
    )
    return Preprocessing("zca", mean, scale, fitted)


def trained_looking_model(
    hidden_units: list[int],
    activation: str = "relu",
    preprocessing: Preprocessing | None = None,
    dropout: float = 0.2,
    *,
    test_time_flip: bool = False,
) -> keras.Model:
    """A model with random weights of a trained model's scale (not the initial ones)."""
    model = build_model(
        preprocessing or example_preprocessing(),
        hidden_units,
        len(CLASS_NAMES),
        activation,
        dropout,
        test_time_flip=test_time_flip,
        seed=0,
    )
    rng = np.random.default_rng(3)
    model.set_weights(
        [
            rng.normal(0, 2 / np.sqrt(weights.shape[0]), weights.shape).astype(np.float32)
            for weights in model.get_weights()
        ]
    )
    return model


def write_model_folder(
    folder: Path, hidden_units: list[int] | None = None, *, test_time_flip: bool = False
) -> Path:
    """A model folder as the train stage writes one (small, with ZCA whitening)."""
    preprocessing = example_preprocessing(whitening=True)
    model = trained_looking_model(
        hidden_units or [4], preprocessing=preprocessing, test_time_flip=test_time_flip
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(Classifier(model, CLASS_NAMES, preprocessing), folder)
    return folder


# The trusted reference for the Keras model: its layers' arithmetic in numpy.
ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": special.expit,
    "tanh": np.tanh,
    # Keras' default gelu is the exact one, with the error function.
    "gelu": lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2))),
    "softmax": lambda x: special.softmax(x, axis=-1),
}


def numpy_outputs(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """The outputs of a Normalization-then-Dense Keras model, computed with numpy in float64.

    Dropout is the identity in inference; with test-time flips, the outputs are the mean
    of the images' and their mirror images' (each reversed along its width).
    """
    values = inputs.astype(np.float64)
    for layer in model.layers:
        if isinstance(layer, MirroredViews):
            mirrored = values.reshape(-1, *IMAGE_SHAPE)[:, :, ::-1].reshape(-1, FEATURES)
            values = np.concatenate([values, mirrored])
        elif isinstance(layer, MeanOverViews):
            values = values.reshape(2, -1, values.shape[-1]).mean(axis=0)
        elif isinstance(layer, keras.layers.Normalization):
            mean, variance = (np.asarray(part, np.float64) for part in (layer.mean, layer.variance))
            values = (values - mean) / np.sqrt(variance)
        elif isinstance(layer, keras.layers.Dense):
            kernel, bias = (np.asarray(weight, np.float64) for weight in layer.get_weights())
            # By the function's name: get_config() would import TensorFlow (Keras' serializer).
            values = ACTIVATIONS[layer.activation.__name__](values @ kernel + bias)
        elif not isinstance(layer, keras.layers.Dropout):
            raise TypeError(f"the numpy reference has no {type(layer).__name__}")
    return values
