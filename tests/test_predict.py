"""The prediction command on a model folder the train stage wrote."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import AllocationPeak, run_stage, write_model_folder
from PIL import Image

from stages.cifar import IMAGE_SHAPE
from stages.cli import StageError
from stages.dataset import load_split
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


def test_the_model_folder_alone_gives_the_evaluate_stages_answers(
    trained: Path, tmp_path: Path
) -> None:
    # The oracle: what the evaluate stage wrote from the prepared data (codes made by the
    # prepare stage); here the folder's own preprocessing starts from the raw images.
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder, symlinks=True)
    arguments = ["--prepared", "data/prepared", "--model", "data/model",
                 "--summary", "reports/train/summary.json",
                 "--history", "reports/train/history.json", "--metrics", "metrics.json",
                 "--predictions", "predictions.csv", "--per-class", "per_class.csv"]  # fmt: skip
    run_stage("evaluate", arguments, folder)
    written = pd.read_csv(folder / "predictions.csv")
    classifier = load_classifier(folder / "data" / "model")
    probabilities = classifier.probabilities(
        load_split(folder / "data" / "prepared", "test").images
    )
    names = np.asarray(classifier.class_names)
    assert written["predicted"].tolist() == names[probabilities.argmax(axis=1)].tolist()
    np.testing.assert_allclose(written["confidence"], probabilities.max(axis=1), atol=1e-6)
    best = top_classes(classifier, load_split(folder / "data" / "prepared", "test").images[:3], 2)
    assert [[name for name, _ in classes] for classes in best] == [
        names[np.argsort(-row)[:2]].tolist() for row in probabilities[:3]
    ]


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


def png_bytes(width: int, height: int, color_type: int, depth: int, raw: bytes) -> bytes:
    """A PNG written by hand: Pillow writes no 16-bit colour, nor a header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def grey16(path: Path, values: np.ndarray) -> Path:
    if path.suffix == ".pgm":
        height, width = values.shape
        path.write_bytes(f"P5\n{width} {height}\n65535\n".encode() + values.astype(">u2").tobytes())
    else:
        Image.fromarray(values.astype(np.uint16)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
def test_sixteen_bit_grey_images_are_scaled_from_their_full_range(
    tmp_path: Path, suffix: str
) -> None:
    # Pillow's own conversion clips 16-bit values to 255: all but the darkest turn white.
    values = np.full((32, 32), 40000)
    values[0, :3] = [0, 128, 65535]
    row = read_image(grey16(tmp_path / f"grey{suffix}", values)).reshape(IMAGE_SHAPE)
    assert row[0, :3, 0].tolist() == [0, 0, 255]
    assert (row[1:] == 156).all()  # 40000 / 257 = 155.6


def test_sixteen_bit_colour_keeps_its_high_bytes(tmp_path: Path) -> None:
    pixels = np.zeros((32, 32, 3), ">u2")
    pixels[...] = [65535, 32768, 257]
    path = tmp_path / "colour16.png"
    path.write_bytes(png_bytes(32, 32, 2, 16, b"".join(b"\0" + row.tobytes() for row in pixels)))
    assert read_image(path)[:3].tolist() == [255, 128, 1]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.linspace(0, 1, 32 * 32, dtype=np.float32), "floating-point pixels (mode F)"),
        (np.arange(32 * 32, dtype=np.int32) * 1000, "32-bit integer pixels (mode I)"),
    ],
)
def test_images_of_undefined_range_are_refused_not_guessed(
    tmp_path: Path, values: np.ndarray, kind: str
) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(values.reshape(32, 32)).save(path)
    with pytest.raises(StageError) as caught:
        read_image(path)
    assert str(caught.value) == (
        f"{path}: {kind}, whose brightness range the file does not define; save the image "
        "with 8 or 16 bits a channel"
    )


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (9_000, "9000 x 9000 pixels, more than the 64,000,000 predict reads"),
        (10_000, r"Image size \(100000000 pixels\) exceeds limit"),  # Pillow's warning
        (20_000, r"Image size \(400000000 pixels\) exceeds limit"),  # Pillow's error
    ],
)
def test_images_of_too_many_pixels_are_refused_undecoded(
    tmp_path: Path, side: int, message: str
) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(side, side, 0, 1, b""))  # a header; the pixels are not there
    with AllocationPeak() as peak, pytest.raises(StageError, match=message) as caught:
        read_image(path)
    assert "\n" not in str(caught.value)
    assert peak.bytes < 1 << 20


@pytest.fixture
def model_project(tmp_path: Path) -> Path:
    """A folder whose data/model is a model folder: the pipeline's default for predict."""
    write_model_folder(tmp_path / "data" / "model")
    return tmp_path


def test_every_image_is_reported_and_any_failure_ends_with_status_1(
    model_project: Path, tmp_path: Path
) -> None:
    good = save_png(tmp_path / "good.png", np.full(3072, 120, np.uint8))
    missing, broken = tmp_path / "missing.png", tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    also_good = save_png(tmp_path / "also.png", np.full(3072, 30, np.uint8))
    images = [good, missing, broken, also_good]
    result = run_stage("predict", [str(image) for image in images], model_project, check=False)
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        str(good),
        str(also_good),
    ]
    assert result.stderr.splitlines() == [
        f"error: {missing}: no such file",
        f"error: {broken}: not an image Pillow can read (cannot identify image file '{broken}')",
    ]


def test_the_usage_line_names_the_command_to_run(model_project: Path) -> None:
    result = run_stage("predict", [], model_project, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m stages.predict [-h]")


def test_a_missing_model_folder_is_the_train_stages_only_if_it_is_the_pipelines(
    tmp_path: Path,
) -> None:
    image = save_png(tmp_path / "x.png", np.zeros(3072, np.uint8))
    mine = run_stage("predict", [str(image), "--model", "/missing"], tmp_path, check=False)
    assert mine.returncode == 1
    assert mine.stderr == "error: /missing: no such model folder\n"
    default = run_stage("predict", [str(image)], tmp_path, check=False)
    assert default.stderr == (
        "error: data/model: no such model folder; run `dvc repro train` to write it again\n"
    )
