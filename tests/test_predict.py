"""The prediction command on a model folder the train stage wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_stage
from PIL import Image

from stages.cifar import IMAGE_SHAPE
from stages.dataset import load_model_inputs, load_split
from stages.inference import load_classifier
from stages.predict import percent, read_image, top_classes


def save_png(path: Path, row: np.ndarray) -> Path:
    Image.fromarray(row.reshape(IMAGE_SHAPE)).save(path)
    return path


def test_a_png_round_trips_to_the_same_row(tmp_path: Path, prepared: Path) -> None:
    row = load_split(prepared, "test").images[0]
    np.testing.assert_array_equal(read_image(save_png(tmp_path / "one.png", row)), row)


def test_larger_images_are_resized_to_32_pixels(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (320, 200), (10, 200, 30)).save(big)
    row = read_image(big)
    assert row.shape == (3072,)
    assert row.reshape(IMAGE_SHAPE)[5, 5].tolist() == [10, 200, 30]


def test_the_model_folder_alone_gives_the_evaluate_stages_answers(trained: Path) -> None:
    # From raw images, with the folder's own preprocessing, as evaluate from prepared inputs.
    classifier = load_classifier(trained / "data" / "model")
    assert classifier.whitening is not None  # the committed params use ZCA
    prepared = trained / "data" / "prepared"
    test = load_split(prepared, "test")
    probabilities = classifier.probabilities(test.images)
    expected = classifier.network.predict(load_model_inputs(prepared, "test").images)
    np.testing.assert_array_equal(probabilities, expected)
    best = top_classes(classifier, test.images[:3], count=2)
    assert [len(classes) for classes in best] == [2, 2, 2]
    for classes, row in zip(best, probabilities[:3], strict=True):
        assert classes[0][0] == classifier.class_names[int(row.argmax())]
        assert classes[0][1] >= classes[1][1]


def test_the_command_prints_the_top_classes(trained: Path, tmp_path: Path) -> None:
    rows = load_split(trained / "data" / "prepared", "test").images[:2]
    images = [str(save_png(tmp_path / f"{index}.png", row)) for index, row in enumerate(rows)]
    result = run_stage("predict", [*images, "--top", "3"], trained)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == images
    assert all(line.count("%") == 3 for line in lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not an image", "not an image Pillow can read")],
)
def test_unreadable_images_are_one_line(
    trained: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    result = run_stage("predict", [str(path)], trained, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: {message}")
    assert result.stderr.count("\n") == 1


PERCENTS = [(0.4328, "43.3%"), (0.99996, "99.996%"), (0.9996, "99.96%"), (1.0, "100.0%"),
            (0.00004, "0.004%"), (0.0, "0.0%"), (1 - 1e-7, "99.99999%")]  # fmt: skip


@pytest.mark.parametrize(("probability", "shown"), PERCENTS)
def test_a_probability_never_reads_as_certain_when_it_is_not(
    probability: float, shown: str
) -> None:
    assert percent(probability) == shown
