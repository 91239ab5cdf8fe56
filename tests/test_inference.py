"""Reading a model folder with numpy alone: any bytes give a consistent model or one error.

The folders here are written by hand in the layout Keras writes (conftest.py;
tests/test_model.py reads Keras' own against Keras' predictions), so no test needs Keras.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import AllocationPeak, peak_memory_mib, write_model_folder
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.cifar import CLASS_NAMES, FEATURES
from stages.cli import StageError
from stages.dataset import WHITENING_FILE
from stages.inference import (
    ARCHITECTURE_FILE,
    MAX_ARCHITECTURE_BYTES,
    MAX_LAYERS,
    WEIGHTS_FILE,
    Classifier,
    load_classifier,
    load_network,
)
from stages.params import MAX_MLP_PARAMETERS


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_model_folder(tmp_path / "model")


def inputs(rows: int = 5) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (rows, FEATURES), dtype=np.uint8)


def test_a_model_folder_gives_class_probabilities(folder: Path) -> None:
    classifier = load_classifier(folder)
    probabilities = classifier.probabilities(inputs())
    assert probabilities.shape == (5, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert classifier.network.parameter_count == FEATURES * 4 + 4 + 4 * 10 + 10


def edit_architecture(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / ARCHITECTURE_FILE
    model = json.loads(path.read_text())
    change(model)
    path.write_text(json.dumps(model))


def layer(model: dict, index: int) -> dict:
    return model["config"]["layers"][index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda model: model.update(config=[1, 2]), "not a Keras Sequential model"),
        (lambda model: model["config"].update(layers=[1, 2]), "not a Keras Sequential model"),
        (
            lambda model: model["config"].update(layers=[layer(model, 0)] * (MAX_LAYERS + 1)),
            f"of at most {MAX_LAYERS} layers",
        ),
        (
            lambda model: layer(model, 1)["config"].update(mean=[["x"]] * 3),
            "mean and variance must be 3072 finite numbers each",
        ),
        (
            lambda model: layer(model, 1)["config"].update(mean=[1.0, [2.0]]),
            "mean and variance must be 3072 finite numbers each",
        ),
        (
            lambda model: layer(model, 1)["config"].update(variance=[0.0] * FEATURES),
            "the variances positive",
        ),
        (
            lambda model: layer(model, 2)["config"].update(units=5),
            r"weights of shapes \(3072, 4\) and \(4,\) for layer 'hidden_1' of 5 units",
        ),
        (
            lambda model: layer(model, 2)["config"].update(units="4"),
            "for layer 'hidden_1' of '4' units",
        ),
        (
            lambda model: layer(model, 2)["config"].update(activation=["relu"]),
            r"layer 'hidden_1' \('Dense', \['relu'\]\) is not part of this pipeline's MLP",
        ),
        (
            lambda model: layer(model, 2)["config"].update(name={"a": 1}),
            r"no kernel and bias for layer \{'a': 1\}",
        ),
        (lambda model: layer(model, 4).update(class_name="Conv2D"), "'Conv2D'"),
    ],
)
def test_a_tampered_architecture_is_one_error(
    folder: Path, change: Callable[[dict], None], message: str
) -> None:
    edit_architecture(folder, change)
    with pytest.raises(StageError, match=message) as caught:
        load_network(folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"config": {"layers": 1' + b"0" * 5000 + b"}}", "not valid JSON"),
    ],
)
def test_architecture_that_is_not_json_is_one_error(
    folder: Path, content: bytes, message: str
) -> None:
    (folder / ARCHITECTURE_FILE).write_bytes(content)
    with pytest.raises(StageError, match=f"{ARCHITECTURE_FILE}: {message}"):
        load_network(folder)


def test_an_architecture_file_that_is_a_device_or_too_large_is_refused_unread(
    folder: Path,
) -> None:
    path = folder / ARCHITECTURE_FILE
    path.unlink()
    path.symlink_to("/dev/zero")
    # In a child: read as a file, /dev/zero would never end.
    output, peak = peak_memory_mib(f"""
from pathlib import Path
from stages.cli import StageError
from stages.inference import load_network
try:
    load_network(Path({str(folder)!r}))
except StageError as error:
    print(error)
""")
    assert output.startswith(f"{path}: not a regular file; run `dvc repro train`")
    assert peak < 200, peak
    path.unlink()
    path.write_bytes(b" ")
    os.truncate(path, MAX_ARCHITECTURE_BYTES + 1)  # sparse
    with pytest.raises(StageError, match="4,194,305 bytes, more than the 4,194,304 it can be"):
        load_network(folder)


def edit_weights(folder: Path, change: Callable[[h5py.File], None]) -> None:
    with h5py.File(folder / WEIGHTS_FILE, "r+") as weights:
        change(weights)


def replace_dataset(name: str, **dataset: object) -> Callable[[h5py.File], None]:
    def change(weights: h5py.File) -> None:
        del weights[name]
        weights.create_dataset(name, **dataset)

    return change


KERNEL = "layers/dense/vars/0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            # 2^40 values declared, a few bytes stored: refused before h5py allocates them.
            replace_dataset(KERNEL, shape=(1 << 20, 1 << 20), dtype="f4", chunks=(1, 1024)),
            f"more than {MAX_MLP_PARAMETERS:,} weights",
        ),
        (replace_dataset(KERNEL, data=np.zeros((FEATURES, 4), "S4")), "is not a float array"),
        (replace_dataset(KERNEL, data=np.zeros((2, 2, 2), "f4")), "is not a float array"),
        (
            replace_dataset(KERNEL, data=np.full((FEATURES, 4), np.nan, "f4")),
            "holds values that are not finite",
        ),
        (
            replace_dataset(KERNEL, data=np.full((FEATURES, 4), 1e300)),
            "holds values that are not finite",
        ),
        (lambda weights: weights["layers/dense/vars"].attrs.modify("name", "x"), "no kernel"),
        (
            lambda weights: weights["layers/dense/vars"].create_dataset("2", data=[1.0]),
            "3 variables for a Dense layer",
        ),
        (lambda weights: weights.copy("layers/dense", "layers/again"), "two sets of weights"),
        (lambda weights: weights.move("layers", "other"), "not the weights of a Keras model"),
        (
            replace_dataset(KERNEL, data=np.zeros((FEATURES, 3), "f4")),
            r"weights of shapes \(3072, 3\) and \(4,\) for layer 'hidden_1' of 4 units",
        ),
    ],
)
def test_tampered_weights_are_one_error_in_bounded_memory(
    folder: Path, change: Callable[[h5py.File], None], message: str
) -> None:
    edit_weights(folder, change)
    with AllocationPeak() as peak, pytest.raises(StageError, match=message) as caught:
        load_network(folder)
    assert "\n" not in str(caught.value)
    assert peak.bytes < 16 << 20


def test_weights_that_are_not_hdf5_are_one_error(folder: Path) -> None:
    (folder / WEIGHTS_FILE).write_bytes(b"not hdf5")
    with pytest.raises(StageError, match="unreadable or truncated weights"):
        load_network(folder)


def test_a_folder_named_by_the_user_is_not_sent_back_to_a_stage(tmp_path: Path) -> None:
    with pytest.raises(StageError) as caught:
        load_classifier(tmp_path / "elsewhere", stage=None)
    assert str(caught.value) == f"{tmp_path / 'elsewhere' / ARCHITECTURE_FILE}: missing"
    with pytest.raises(StageError, match="run `dvc repro train`"):
        load_classifier(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'["a", "b"]', "2 class names for a model of 10 outputs"),
        (b'"airplane"', "not a list of class names"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_tampered_class_names_are_one_error(folder: Path, content: bytes, message: str) -> None:
    (folder / "classes.json").write_bytes(content)
    with pytest.raises(StageError, match=message):
        load_classifier(folder)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mean": np.zeros(3, np.float32)}, "not a whitening"),
        ({"epsilon": np.zeros(5)}, "not a whitening"),
        ({"std": np.array(-1.0)}, "epsilon and std positive"),
        ({"gains": np.zeros(3, np.float64)}, "must be float32"),
    ],
)
def test_a_tampered_whitening_is_one_error(
    folder: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = folder / WHITENING_FILE
    with np.load(path) as saved:
        np.savez(path, **{**dict(saved), **arrays})
    with pytest.raises(StageError, match=message):
        load_classifier(folder)


def test_an_npz_array_larger_than_a_whitening_is_refused_unread(folder: Path) -> None:
    # A header that claims 2^40 floats, followed by 8 bytes of them.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    )
    with zipfile.ZipFile(folder / WHITENING_FILE, "w") as archive:
        archive.writestr("mean.npy", header.getvalue() + bytes(8))
    with (
        AllocationPeak() as peak,
        pytest.raises(StageError, match=r"mean\.npy: an array of shape \(1099511627776,\)"),
    ):
        load_classifier(folder)
    assert peak.bytes < 16 << 20


# The property: any change to any file of the folder gives a model whose parts fit
# together, or one StageError, within the memory the largest model needs.
def model_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_model_folder(Path(scratch) / "model")
        return {path.name: path.read_bytes() for path in folder.iterdir()}


FILES = model_files()
# float32 weights, and a float64 copy of them while they are converted, at most.
TRACED_PEAK_BYTES = 12 * MAX_MLP_PARAMETERS + (32 << 20)


def check_consistent(classifier: Classifier) -> None:
    network = classifier.network
    widths = [network.mean.shape[0]] + [layer.kernel.shape[1] for layer in network.layers]
    assert widths[0] == FEATURES
    assert widths[-1] == len(classifier.class_names)
    for layer, width in zip(network.layers, widths, strict=False):
        assert layer.kernel.shape[0] == width
        assert layer.bias.shape == (layer.kernel.shape[1],)
        assert np.isfinite(layer.kernel).all()
        assert np.isfinite(layer.bias).all()
    assert (network.scale > 0).all()
    assert classifier.probabilities(inputs(2)).shape == (2, widths[-1])


@st.composite
def changed_file(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int]]]:
    """A file of the folder and a few bytes of it to flip or replace, or where to cut it.

    Mostly in the first and last kilobytes, where the structure is (headers, HDF5
    metadata, the zip directory); the middle is numbers.
    """
    name = draw(st.sampled_from(sorted(FILES)))
    size = len(FILES[name])
    edge = st.integers(0, min(1023, size - 1))
    position = edge | edge.map(lambda offset: size - 1 - offset) | st.integers(0, size - 1)
    changes = draw(
        st.lists(
            st.tuples(st.sampled_from(["flip", "replace", "cut"]), position, st.integers(0, 255)),
            min_size=1,
            max_size=3,
        )
    )
    return name, changes


def changed(name: str, changes: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(FILES[name])
    for kind, position, value in changes:
        if position >= len(data):
            continue
        if kind == "flip":
            data[position] ^= 1 << (value % 8)
        elif kind == "replace":
            data[position] = value
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=150, deadline=None)
@given(change=changed_file())
def test_any_model_folder_gives_a_consistent_model_or_one_error(
    change: tuple[str, list[tuple[str, int, int]]],
) -> None:
    changed_name, changes = change
    changed_data = changed(changed_name, changes)
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        for name, data in FILES.items():
            (folder / name).write_bytes(changed_data if name == changed_name else data)
        message = ""
        with AllocationPeak() as peak:
            try:
                classifier = load_classifier(folder)
            except StageError as error:
                classifier, message = None, str(error)
        if classifier is not None:
            check_consistent(classifier)
    assert "\n" not in message
    assert peak.bytes < TRACED_PEAK_BYTES
