"""The MLP: the assignment's shape, Keras' outputs against numpy's, and its model folder.

A model folder is Keras' own ``model.keras`` beside the class names and the
preprocessing: whatever damage any of its files takes, it loads as a classifier whose
parts fit together or it is refused in one line naming the file.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import tempfile
import textwrap
import typing
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from helpers import AllocationPeak, run
from hypothesis import given, settings
from hypothesis import strategies as st
from models import (
    example_preprocessing,
    numpy_outputs,
    random_images,
    trained_looking_model,
    write_model_folder,
)

from cifar10.archive import CLASS_NAMES, FEATURES
from cifar10.errors import InputError
from cifar10.model import (
    CLASSES_FILE,
    MAX_MODEL_BYTES,
    MODEL_FILE,
    WEIGHTS_ENTRY,
    Classifier,
    build_model,
    layer_summary,
    load_classifier,
    predict,
    save_classifier,
)
from cifar10.params import TrainParams
from cifar10.preprocessing import ARRAYS_FILE, RECORD_FILE

# Every activation the params schema lets train.activation be.
ACTIVATIONS = typing.get_args(TrainParams.model_fields["activation"].annotation)
FOLDER_FILES = (MODEL_FILE, CLASSES_FILE, RECORD_FILE, ARRAYS_FILE)
# Keras' errors quote whole configs; the line shown is cut well short of that.
MAX_MESSAGE_CHARACTERS = 600


def refusal(folder: Path, stage: str | None = "train") -> str:
    """Load the folder, which must be refused: the message, checked to be one line."""
    with pytest.raises(InputError) as caught:
        load_classifier(folder, stage)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < MAX_MESSAGE_CHARACTERS, message
    return message


def outputs(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """The model's outputs in inference, called eagerly (predict() compiles, for each model)."""
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def test_the_default_model_has_the_assignments_parameter_counts() -> None:
    model = build_model(
        example_preprocessing(), [128, 64], 10, "relu", 0.0, test_time_flip=False, seed=0
    )
    summary = layer_summary(model)
    assert [layer["parameters"] for layer in summary["layers"]] == [0, 393_344, 8_256, 650]
    assert summary["total_parameters"] == 402_250
    assert summary["layers"][0]["type"] == "Normalization"  # constants, not parameters
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize(
    ("dropout", "test_time_flip", "names"),
    [
        (0.3, False, ["standardize", "hidden_1", "dropout_1", "hidden_2", "dropout_2", "output"]),
        (0.0, True, ["mirrored_views", "standardize", "hidden_1", "hidden_2", "output",
                     "mean_over_views"]),
    ],
)  # fmt: skip
def test_dropout_and_the_test_time_flip_add_layers_but_no_parameters(
    dropout: float, test_time_flip: bool, names: list[str]
) -> None:
    model = build_model(
        example_preprocessing(), [128, 64], 10, "relu", dropout,
        test_time_flip=test_time_flip, seed=0,
    )  # fmt: skip
    assert model.count_params() == 402_250
    assert [layer.name for layer in model.layers] == names
    assert model.output_shape == (None, 10)


def test_with_test_time_flip_the_model_predicts_the_mean_over_each_image_and_its_mirror(
    tmp_path: Path,
) -> None:
    # The same weights with and without the flip (the flip's layers have none).
    flipping = trained_looking_model([16, 8], dropout=0.0, test_time_flip=True)
    plain = trained_looking_model([16, 8], dropout=0.0)
    inputs = random_images()
    expected = numpy_outputs(flipping, inputs)  # the mirror image: reversed along its width
    assert not np.allclose(expected, numpy_outputs(plain, inputs), atol=1e-3)
    np.testing.assert_allclose(outputs(flipping, inputs), expected, atol=1e-5)
    # Training sees each image once, as the model without the flip does.
    trained_on = keras.ops.convert_to_numpy(flipping(inputs, training=True))
    np.testing.assert_allclose(trained_on, outputs(plain, inputs), atol=1e-6)
    save_classifier(Classifier(flipping, CLASS_NAMES, example_preprocessing()), tmp_path / "m")
    loaded = load_classifier(tmp_path / "m").model
    # In batches of 16 and a last one of 5: each image with its own mirror image.
    np.testing.assert_allclose(predict(loaded, inputs, batch_size=16), expected, atol=1e-5)


def test_the_model_standardizes_its_uint8_inputs_as_the_preprocessing_does() -> None:
    preprocessing = example_preprocessing()
    model = build_model(preprocessing, [8], 10, "relu", 0.0, test_time_flip=False, seed=0)
    inputs = random_images()
    features = keras.ops.convert_to_numpy(model.layers[0](inputs.astype(np.float32)))
    np.testing.assert_allclose(features, preprocessing.features(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_keras_outputs_match_the_numpy_reference_before_and_after_saving(
    tmp_path: Path, activation: str
) -> None:
    model = trained_looking_model([16, 8], activation)
    inputs = random_images()
    expected = numpy_outputs(model, inputs)
    np.testing.assert_allclose(outputs(model, inputs), expected, atol=1e-5)
    save_classifier(Classifier(model, CLASS_NAMES, example_preprocessing()), tmp_path / "model")
    loaded = load_classifier(tmp_path / "model").model
    np.testing.assert_allclose(outputs(loaded, inputs), expected, atol=1e-5)


def test_a_model_folder_gives_class_probabilities_of_images(tmp_path: Path) -> None:
    classifier = load_classifier(write_model_folder(tmp_path / "model"))
    images = random_images(5)
    probabilities = classifier.probabilities(images)
    assert probabilities.shape == (5, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert classifier.model.count_params() == FEATURES * 4 + 4 + 4 * 10 + 10
    # The folder's ZCA makes the model's inputs from the images.
    codes = classifier.preprocessing.model_inputs(images)
    assert not np.array_equal(codes, images)
    np.testing.assert_allclose(probabilities, numpy_outputs(classifier.model, codes), atol=1e-5)


def test_a_saved_folder_loads_back_and_saves_the_same_bytes(tmp_path: Path) -> None:
    first = write_model_folder(tmp_path / "first", hidden_units=[16, 8])
    loaded = load_classifier(first)
    save_classifier(loaded, tmp_path / "second")
    for name in FOLDER_FILES:
        assert (first / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    assert loaded.class_names == CLASS_NAMES
    saved = example_preprocessing(whitening=True)
    assert loaded.preprocessing.scaling == saved.scaling
    np.testing.assert_array_equal(loaded.preprocessing.mean, saved.mean)
    np.testing.assert_array_equal(loaded.preprocessing.whitening.components,
                                  saved.whitening.components)  # fmt: skip


def test_the_model_file_is_keras_own_format(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "model", test_time_flip=True)
    with zipfile.ZipFile(folder / MODEL_FILE) as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", WEIGHTS_ENTRY]
    # Keras alone loads the same model, once cifar10.augmentation (imported by this test's
    # modules) has registered the test-time flip's layers, as the README says.
    by_keras = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    inputs = random_images(4)
    np.testing.assert_allclose(
        predict(by_keras, inputs, batch_size=4),
        numpy_outputs(load_classifier(folder).model, inputs),
        atol=1e-5,
    )


# Loads model folders with the TensorFlow backend, in a process of its own.
TENSORFLOW_PREDICT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import keras
    import numpy as np
    from cifar10.model import load_classifier, predict
    assert keras.backend.backend() == "tensorflow"
    root = Path(sys.argv[1])
    inputs = np.load(root / "inputs.npy")
    for folder in sorted(root.glob("model-*")):
        classifier = load_classifier(folder)
        np.save(folder / "tensorflow.npy", predict(classifier.model, inputs, batch_size=64))
    """
)


@pytest.mark.integration
def test_keras_outputs_match_the_numpy_reference_on_tensorflow(tmp_path: Path) -> None:
    inputs = random_images(200)
    np.save(tmp_path / "inputs.npy", inputs)
    expected = {}
    models = {
        activation: trained_looking_model([128, 64], activation) for activation in ACTIVATIONS
    }
    models["flip"] = trained_looking_model([128, 64], test_time_flip=True)
    for name, model in models.items():
        folder = tmp_path / f"model-{name}"
        save_classifier(Classifier(model, CLASS_NAMES, example_preprocessing()), folder)
        expected[name] = numpy_outputs(model, inputs)
    run(
        [sys.executable, "-c", TENSORFLOW_PREDICT, str(tmp_path)],
        tmp_path,
        environment={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    for activation, outputs in expected.items():
        on_tensorflow = np.load(tmp_path / f"model-{activation}" / "tensorflow.npy")
        np.testing.assert_allclose(on_tensorflow, outputs, atol=1e-5, err_msg=activation)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_model_folder(tmp_path / "model")


def other_model(hidden_units: list[int], n_classes: int, features: int = FEATURES) -> keras.Model:
    if features != FEATURES:
        return keras.Sequential([keras.Input((features,)), keras.layers.Dense(n_classes)])
    return build_model(
        example_preprocessing(), hidden_units, n_classes, "relu", 0.0, test_time_flip=False, seed=0
    )


@pytest.mark.parametrize(
    ("model", "names", "message"),
    [
        (
            lambda: other_model([4], 10),
            ("a", "b"),
            r"outputs \(None, 10\), not \(None, 3072\) and \(None, 2\) for 2 class names",
        ),
        (lambda: other_model([4], 5), CLASS_NAMES, r"outputs \(None, 5\), not"),
        (lambda: other_model([], 10, features=100), CLASS_NAMES, r"inputs \(None, 100\) and"),
    ],
)
def test_a_model_that_does_not_fit_is_refused_in_one_line(
    tmp_path: Path, model: Callable[[], keras.Model], names: tuple[str, ...], message: str
) -> None:
    save_classifier(Classifier(model(), names, example_preprocessing()), tmp_path / "model")
    text = refusal(tmp_path / "model")
    assert text.startswith(f"{tmp_path / 'model' / MODEL_FILE}: a model of ")
    assert text.endswith("; run `dvc repro train` to write it again")
    assert re.search(message, text), text


def damage_model_file(folder: Path, change: str) -> None:
    path = folder / MODEL_FILE
    if change == "missing":
        path.unlink()
    elif change == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif change == "not a zip":
        path.write_bytes(b"not a zip archive")
    elif change == "a folder":
        path.unlink()
        path.mkdir()
    elif change == "a device":
        path.unlink()
        path.symlink_to("/dev/zero")  # read as a file, it would never end
    else:  # larger than any model: sparse, so nothing is written
        os.truncate(path, MAX_MODEL_BYTES + 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", "missing; run `dvc repro train`"),
        ("truncated", "not a model Keras can load (File is not a zip file)"),
        ("not a zip", "not a model Keras can load (File is not a zip file)"),
        ("a folder", "not a regular file"),
        ("a device", "not a regular file"),
        ("too large", f"{MAX_MODEL_BYTES + 1:,} bytes, more than the {MAX_MODEL_BYTES:,}"),
    ],
)
def test_a_missing_or_damaged_model_file_is_one_line_read_in_bounded_memory(
    folder: Path, change: str, message: str
) -> None:
    damage_model_file(folder, change)
    with AllocationPeak() as peak:
        text = refusal(folder)
    assert text.startswith(f"{folder / MODEL_FILE}: {message}"), text
    assert peak.bytes < 16 << 20


def rewrite_entry(folder: Path, name: str, data: bytes | None) -> None:
    """Replace (None: remove) one entry of the folder's model.keras, keeping the others."""
    path = folder / MODEL_FILE
    with zipfile.ZipFile(path) as archive:
        entries = {entry: archive.read(entry) for entry in archive.namelist()}
    entries[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for entry, content in entries.items():
            if content is not None:
                archive.writestr(entry, content)


def model_config(folder: Path) -> dict:
    with zipfile.ZipFile(folder / MODEL_FILE) as archive:
        return json.loads(archive.read("config.json"))


def layer(config: dict, index: int) -> dict:
    """The config of a layer: 0 the input, 1 standardize, 2 hidden_1, 3 dropout_1, 4 output."""
    return config["config"]["layers"][index]


LAMBDA = {
    "name": "code",
    "function": {"class_name": "__lambda__", "config": {"code": "x", "defaults": None}},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda config: config.update(config=[1, 2]), "Expected 'config' to be a dict"),
        (lambda config: config["config"].update(layers=[1, 2]), "not a model Keras can load"),
        (lambda config: layer(config, 2)["config"].update(units=5), "expected axis -1 of input"),
        (lambda config: layer(config, 2)["config"].update(units="4"), "invalid value for `units`"),
        (
            lambda config: layer(config, 2)["config"].update(activation=["relu"]),
            "Could not interpret activation function identifier",
        ),
        (lambda config: layer(config, 2)["config"].update(name={"a": 1}), "Argument `name`"),
        (lambda config: layer(config, 4).update(class_name="NoSuchLayer"), "NoSuchLayer"),
        (lambda config: layer(config, 4).update(class_name="Conv2D"), "Conv2D.__init__()"),
        # Keras' safe mode: a model file never runs code.
        (
            lambda config: layer(config, 3).update(class_name="Lambda", config=LAMBDA),
            "risk of arbitrary code execution",
        ),
        (
            lambda config: layer(config, 1)["config"].update(mean=[["x"]] * 3),
            "`mean` and `variance` must have the same shape",
        ),
        (
            lambda config: layer(config, 1)["config"]["mean"].__setitem__(7, float("inf")),
            "layer 'standardize' holds values that are not finite",
        ),
        (
            lambda config: layer(config, 1)["config"].update(variance=[0.0] * FEATURES),
            "layer 'standardize' has variances that are not positive",
        ),
    ],
)
def test_a_tampered_architecture_is_one_line(
    folder: Path, change: Callable[[dict], None], message: str
) -> None:
    config = model_config(folder)
    change(config)
    rewrite_entry(folder, "config.json", json.dumps(config).encode())
    text = refusal(folder)
    assert text.startswith(f"{folder / MODEL_FILE}: ")
    assert message in text, text


@pytest.mark.parametrize(
    ("entry", "content", "message"),
    [
        ("config.json", b"\xff\xfe not utf-8", "not a model Keras can load (Expecting value"),
        ("config.json", b"[" * 100_000 + b"]" * 100_000, "maximum recursion depth exceeded"),
        ("config.json", b'{"config": {"layers": 1' + b"0" * 5000 + b"}}", "limit (4300 digits)"),
        ("config.json", None, "no item named 'config.json'"),
        (WEIGHTS_ENTRY, None, "Expected a model.weights.h5 or model.weights.npz file"),
        (WEIGHTS_ENTRY, b"not hdf5", "file signature not found"),
    ],
)
def test_an_entry_of_the_model_file_that_is_not_its_format_is_one_line(
    folder: Path, entry: str, content: bytes | None, message: str
) -> None:
    rewrite_entry(folder, entry, content)
    text = refusal(folder)
    assert text.startswith(f"{folder / MODEL_FILE}: ")
    assert message in text, text


def replace_dataset(name: str, **dataset: object) -> Callable[[h5py.File], None]:
    def change(weights: h5py.File) -> None:
        del weights[name]
        weights.create_dataset(name, **dataset)

    return change


KERNEL = "layers/dense/vars/0"  # hidden_1's kernel, as Keras lays out the weights


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            # 2^40 values declared, a few bytes stored: refused before anything allocates them.
            replace_dataset(KERNEL, shape=(1 << 20, 1 << 20), dtype="f4", chunks=(1, 1024)),
            "its weights' arrays declare 4,398,046,",
        ),
        (
            # 1 GiB: below the 4 GiB from which Keras itself refuses to read such arrays.
            replace_dataset(KERNEL, shape=(1 << 13, 1 << 15), dtype="f4", chunks=(1, 1024)),
            "its weights' arrays declare 1,073,7",
        ),
        (
            replace_dataset(KERNEL, data=np.zeros((FEATURES, 4), "S4")),
            "could not convert string to float",
        ),
        (replace_dataset(KERNEL, data=np.zeros((2, 2, 2), "f4")), "must match"),
        (replace_dataset(KERNEL, data=np.zeros((FEATURES, 3), "f4")), "variable.shape=(3072, 4)"),
        (
            replace_dataset(KERNEL, data=np.full((FEATURES, 4), np.nan, "f4")),
            "layer 'hidden_1' holds values that are not finite",
        ),
        (
            replace_dataset(KERNEL, data=np.full((FEATURES, 4), 1e300)),
            "overflow encountered in cast",
        ),
        (
            lambda weights: weights["layers/dense/vars"].create_dataset("2", data=[1.0]),
            "expected 2 variables, but received 3",
        ),
        (lambda weights: weights.move("layers", "other"), "expected 2 variables, but received 0"),
    ],
)
def test_tampered_weights_are_one_line_in_bounded_memory(
    folder: Path, change: Callable[[h5py.File], None], message: str
) -> None:
    with zipfile.ZipFile(folder / MODEL_FILE) as archive:
        weights = io.BytesIO(archive.read(WEIGHTS_ENTRY))
    with h5py.File(weights, "r+") as file:
        change(file)
    rewrite_entry(folder, WEIGHTS_ENTRY, weights.getvalue())
    with AllocationPeak() as peak:
        text = refusal(folder)
    assert text.startswith(f"{folder / MODEL_FILE}: ")
    assert message in text, text
    assert peak.bytes < 16 << 20


def test_a_folder_named_by_the_user_is_not_sent_back_to_a_stage(tmp_path: Path) -> None:
    assert refusal(tmp_path / "elsewhere", stage=None) == (
        f"{tmp_path / 'elsewhere' / CLASSES_FILE}: missing"
    )
    assert refusal(tmp_path / "elsewhere").endswith("; run `dvc repro train` to write it again")


@pytest.mark.parametrize(
    ("content", "file", "message"),
    [
        (b'["a", "b"]', MODEL_FILE, "for 2 class names"),
        (b'"airplane"', CLASSES_FILE, "expected a JSON list, got str"),
        (b"[]", CLASSES_FILE, "not a list of printable class names"),
        (json.dumps(list(range(10))).encode(), CLASSES_FILE, "not a list of printable"),
        # A terminal's escape sequence would reach predict's output raw.
        (json.dumps(["cat\x1b[2J", *"bcdefghij"]).encode(), CLASSES_FILE, "not a list of"),
        (b"\xff", CLASSES_FILE, "not valid JSON"),
    ],
)
def test_tampered_class_names_are_one_line(
    folder: Path, content: bytes, file: str, message: str
) -> None:
    (folder / CLASSES_FILE).write_bytes(content)
    text = refusal(folder)
    assert text.startswith(f"{folder / file}: ")
    assert message in text, text


def edit_arrays(folder: Path, arrays: dict[str, np.ndarray | None]) -> None:
    path = folder / ARRAYS_FILE
    with np.load(path) as saved:
        kept = {**dict(saved), **arrays}
    np.savez(path, **{name: array for name, array in kept.items() if array is not None})


def edit_record(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / RECORD_FILE
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda folder: edit_arrays(folder, {"mean": np.zeros(3, np.float32)}), ARRAYS_FILE,
         "mean must be float32 of shape (3072,)"),
        (lambda folder: edit_arrays(folder, {"gains": None}), ARRAYS_FILE, "'gains' missing"),
        (lambda folder: edit_arrays(folder, {"gains": np.zeros(3)}), ARRAYS_FILE,
         "must be float32"),
        (lambda folder: edit_record(folder, lambda record: record["whitening"].update(std=-1)),
         ARRAYS_FILE, "epsilon and std positive"),
        (lambda folder: edit_record(folder, lambda record: record.update(scaling="bogus")),
         ARRAYS_FILE, "scaling 'bogus' is not one of"),
        (lambda folder: (folder / RECORD_FILE).write_bytes(b"{"), RECORD_FILE, "not valid JSON"),
        (lambda folder: (folder / ARRAYS_FILE).write_bytes(b"PK"), ARRAYS_FILE,
         "unreadable or truncated"),
        (lambda folder: (folder / ARRAYS_FILE).unlink(), ARRAYS_FILE, "missing"),
    ],
)  # fmt: skip
def test_a_tampered_preprocessing_is_one_line_naming_the_file(
    folder: Path, damage: Callable[[Path], None], file: str, message: str
) -> None:
    damage(folder)
    text = refusal(folder)
    assert text.startswith(f"{folder / file}: ")
    assert message in text, text


def test_an_array_larger_than_memory_in_the_preprocessing_is_one_line(
    folder: Path,
) -> None:
    # A header that claims 2^40 floats, followed by 8 bytes of them.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    )
    with zipfile.ZipFile(folder / ARRAYS_FILE, "w") as archive:
        archive.writestr("mean.npy", header.getvalue() + bytes(8))
    # numpy reserves the 4 TiB (address space, which tracemalloc counts) and fails at
    # the 9th byte: memory holds no more than the bytes that are there.
    assert refusal(folder).startswith(f"{folder / ARRAYS_FILE}: unreadable or truncated")


# The property: any damage to any file of the folder gives a classifier whose parts fit
# together, or one InputError line, allocating little more than the files hold.
@functools.cache
def model_files() -> dict[str, bytes]:
    """The files of a model folder, by name (written once, when a test first asks)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_model_folder(Path(scratch) / "model")
        return {path.name: path.read_bytes() for path in folder.iterdir()}


TRACED_PEAK_BYTES = 32 << 20  # the folder is 0.3 MB


def check_consistent(classifier: Classifier) -> None:
    assert classifier.model.input_shape == (None, FEATURES)
    assert classifier.model.output_shape == (None, len(classifier.class_names))
    inputs = classifier.preprocessing.model_inputs(random_images(2))
    probabilities = outputs(classifier.model, inputs)
    assert probabilities.shape == (2, len(classifier.class_names))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


@st.composite
def changed_file(draw: st.DrawFn) -> tuple[str, list[tuple[str, int, int]]]:
    """A file of the folder and a few bytes of it to flip or replace, or where to cut it.

    Mostly in the first and last kilobytes, where the structure is (headers, the zip
    directory, HDF5 metadata); the middle is numbers.
    """
    name = draw(st.sampled_from(sorted(model_files())))
    size = len(model_files()[name])
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
    data = bytearray(model_files()[name])
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


@pytest.mark.integration
@settings(max_examples=150, deadline=None)
@given(change=changed_file())
def test_any_damaged_model_folder_gives_a_consistent_classifier_or_one_line(
    change: tuple[str, list[tuple[str, int, int]]],
) -> None:
    changed_name, changes = change
    changed_data = changed(changed_name, changes)
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        for name, data in model_files().items():
            (folder / name).write_bytes(changed_data if name == changed_name else data)
        message = ""
        with AllocationPeak() as peak:
            try:
                classifier = load_classifier(folder)
            except InputError as error:
                classifier, message = None, str(error)
        if classifier is not None:
            check_consistent(classifier)
    assert "\n" not in message
    assert peak.bytes < TRACED_PEAK_BYTES


def test_a_model_whose_outputs_are_not_probabilities_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    # A linear last layer: predict would print "horse 634.1%", evaluate take logs of scores.
    model = build_model(example_preprocessing(), [4], 10, "relu", 0.0, test_time_flip=False, seed=0)
    model.layers[-1].activation = keras.activations.linear
    save_classifier(Classifier(model, CLASS_NAMES, example_preprocessing()), tmp_path / "model")
    text = refusal(tmp_path / "model")
    assert text == (
        f"{tmp_path / 'model' / MODEL_FILE}: its last layer's activation is 'linear', not "
        "'softmax': its outputs are not class probabilities; run `dvc repro train` to write "
        "it again"
    )
