"""The MLP: the assignment's shape, saving, and inference with numpy against Keras' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from stages.cifar import CLASS_NAMES, FEATURES
from stages.cli import StageError
from stages.dataset import Preprocessing, Standardization
from stages.inference import ARCHITECTURE_FILE, WEIGHTS_FILE, load_network
from stages.model import build_model, layer_summary, load_model, save_model

# The model folders here carry no whitening: their inputs are the images themselves.
UNIT = Preprocessing("unit")


def standardization(seed: int = 1) -> Standardization:
    rng = np.random.default_rng(seed)
    return Standardization(
        rng.uniform(100, 150, FEATURES).astype(np.float32),
        rng.uniform(40, 80, FEATURES).astype(np.float32),
    )


def inputs(rows: int = 37, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(rows, FEATURES), dtype=np.uint8)


def trained_looking_model(hidden_units: list[int], activation: str = "relu") -> keras.Model:
    """A model with random weights of a trained model's scale (not the initial ones)."""
    model = build_model(standardization(), hidden_units, 10, activation, 0.2, seed=0)
    rng = np.random.default_rng(3)
    model.set_weights(
        [
            rng.normal(0, 2 / np.sqrt(w.shape[0]), w.shape).astype(np.float32)
            for w in model.get_weights()
        ]
    )
    return model


def test_default_model_has_the_assignments_parameter_counts() -> None:
    model = build_model(standardization(), [128, 64], 10, "relu", 0.0, seed=0)
    summary = layer_summary(model)
    assert [layer["parameters"] for layer in summary["layers"]] == [0, 393_344, 8_256, 650]
    assert summary["total_parameters"] == 402_250
    assert summary["layers"][0]["type"] == "Normalization"  # constants, not parameters
    assert model.output_shape == (None, 10)


def test_dropout_adds_layers_but_no_parameters() -> None:
    model = build_model(standardization(), [128, 64], 10, "relu", 0.3, seed=0)
    assert model.count_params() == 402_250
    assert [layer.name for layer in model.layers] == [
        "standardize", "hidden_1", "dropout_1", "hidden_2", "dropout_2", "output",
    ]  # fmt: skip


def test_the_model_standardizes_its_uint8_inputs() -> None:
    model = build_model(standardization(), [8], 10, "relu", 0.0, seed=0)
    features = keras.ops.convert_to_numpy(model.layers[0](inputs().astype(np.float32)))
    np.testing.assert_allclose(
        features, standardization().transform(inputs()), rtol=1e-5, atol=1e-5
    )


def test_saved_model_loads_back_and_saves_the_same_bytes(tmp_path: Path) -> None:
    model = trained_looking_model([16, 8])
    save_model(model, tmp_path / "first", CLASS_NAMES, UNIT)
    save_model(load_model(tmp_path / "first"), tmp_path / "second", CLASS_NAMES, UNIT)
    for name in (ARCHITECTURE_FILE, WEIGHTS_FILE, "classes.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
def test_numpy_inference_matches_keras(tmp_path: Path, activation: str) -> None:
    model = trained_looking_model([16, 8], activation)
    save_model(model, tmp_path / "model", CLASS_NAMES, UNIT)
    expected = keras.ops.convert_to_numpy(model(inputs(), training=False))
    network = load_network(tmp_path / "model")
    assert network.parameter_count == model.count_params()
    np.testing.assert_allclose(network.predict(inputs(), batch_size=10), expected, atol=1e-5)


# Loads the saved model with Keras on the TensorFlow backend, in a process of its own.
TENSORFLOW_PREDICT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    assert keras.backend.backend() == "tensorflow"
    folder = sys.argv[1]
    model = keras.models.model_from_json(open(f"{folder}/model.json").read())
    model.load_weights(f"{folder}/model.weights.h5")
    np.save(f"{folder}/tensorflow.npy", model.predict(np.load(f"{folder}/inputs.npy"), verbose=0))
    """
)


def test_numpy_inference_matches_keras_on_tensorflow(tmp_path: Path) -> None:
    save_model(trained_looking_model([128, 64]), tmp_path / "model", CLASS_NAMES, UNIT)
    np.save(tmp_path / "model" / "inputs.npy", inputs(200))
    subprocess.run(
        [sys.executable, "-c", TENSORFLOW_PREDICT, str(tmp_path / "model")],
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
        capture_output=True,
    )
    expected = np.load(tmp_path / "model" / "tensorflow.npy")
    np.testing.assert_allclose(
        load_network(tmp_path / "model").predict(inputs(200)), expected, atol=1e-5
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_model(trained_looking_model([16, 8]), tmp_path / "model", CLASS_NAMES, UNIT)
    return tmp_path / "model"


def test_missing_or_truncated_files_are_named(saved: Path) -> None:
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(StageError, match=f"{WEIGHTS_FILE}: unreadable or truncated weights"):
        load_network(saved)
    weights.unlink()
    with pytest.raises(StageError, match=f"{WEIGHTS_FILE}: missing; run `dvc repro train`"):
        load_network(saved)
    (saved / ARCHITECTURE_FILE).write_text("{not json")
    with pytest.raises(StageError, match=f"{ARCHITECTURE_FILE}: not valid JSON"):
        load_network(saved)


def test_weights_of_another_architecture_are_refused(tmp_path: Path, saved: Path) -> None:
    save_model(trained_looking_model([32, 8]), tmp_path / "other", CLASS_NAMES, UNIT)
    (saved / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(
        StageError, match=r"shapes \(3072, 32\) and \(32,\) for layer 'hidden_1' of 16 units"
    ):
        load_network(saved)


def test_a_layer_outside_the_mlp_is_refused(saved: Path) -> None:
    architecture = json.loads((saved / ARCHITECTURE_FILE).read_text())
    architecture["config"]["layers"][2]["class_name"] = "Conv2D"
    (saved / ARCHITECTURE_FILE).write_text(json.dumps(architecture))
    with pytest.raises(
        StageError, match="\\('Conv2D', 'relu'\\) is not part of this pipeline's MLP"
    ):
        load_network(saved)


def test_weights_file_layout_is_keras_own(saved: Path) -> None:
    with h5py.File(saved / WEIGHTS_FILE) as file:
        names = {group["vars"].attrs["name"] for group in file["layers"].values()}
    assert names >= {"standardize", "hidden_1", "hidden_2", "output"}
