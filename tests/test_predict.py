"""cifar10-predict: images in, the top classes of a model folder out, every failure one line."""

from __future__ import annotations

import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import MODEL, SEED_REPORTS, AllocationPeak, run, run_stage, write_params
from models import random_images, write_model_folder
from PIL import Image

from cifar10.archive import IMAGE_SHAPE
from cifar10.command import run as run_command
from cifar10.errors import PipelineError
from cifar10.model import load_classifier
from cifar10.predict import percent, read_image, top_classes
from cifar10.prepared import read_split
from cifar10.reports import EvaluationReports


def save_png(path: Path, row: np.ndarray) -> Path:
    Image.fromarray(row.reshape(IMAGE_SHAPE)).save(path)
    return path


def predict(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run cifar10-predict in this process: its status, stdout and stderr."""
    capsys.readouterr()
    status = run_command("cifar10.predict", argv, environ=dict(os.environ))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_png_round_trips_to_the_same_row(tmp_path: Path) -> None:
    row = random_images(1)[0]
    np.testing.assert_array_equal(read_image(save_png(tmp_path / "one.png", row)), row)


def test_larger_images_are_resized_to_32_pixels(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (320, 200), (10, 200, 30)).save(big)
    row = read_image(big)
    assert row.shape == (3072,)
    assert row.reshape(IMAGE_SHAPE)[5, 5].tolist() == [10, 200, 30]


# EXIF orientation -> how the stored pixels must turn to stand upright (the EXIF spec).
_UPRIGHT = {
    3: lambda pixels: np.rot90(pixels, 2),
    6: lambda pixels: np.rot90(pixels, -1),  # a phone held upright: stored lying on its side
    8: lambda pixels: np.rot90(pixels, 1),
    2: lambda pixels: pixels[:, ::-1],
}


@pytest.mark.parametrize("orientation", sorted(_UPRIGHT))
@pytest.mark.parametrize("size", [(32, 32), (96, 64)])
def test_a_photo_is_turned_upright_as_its_exif_orientation_says(
    tmp_path: Path, orientation: int, size: tuple[int, int]
) -> None:
    stored = random_images(1)[0].reshape(IMAGE_SHAPE)
    if size != (32, 32):  # each pixel a block, so the resize gives back `stored` exactly
        stored = stored.repeat(size[1] // 32, axis=0).repeat(size[0] // 32, axis=1)
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[0x0112] = orientation  # the Orientation tag's number, from the EXIF spec
    path = tmp_path / "photo.png"
    image.save(path, exif=exif)
    upright = _UPRIGHT[orientation](stored)
    height, width = upright.shape[:2]
    expected = upright.reshape(32, height // 32, 32, width // 32, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(read_image(path).reshape(IMAGE_SHAPE), expected)


def test_what_is_not_a_regular_file_is_refused_unread(
    model_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_png(tmp_path / "good.png", np.full(3072, 120, np.uint8))
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)  # opened, it would block until a writer came: forever
    status, out, err = predict([str(fifo), "/dev/zero", str(good)], capsys)
    assert status == 1
    assert [line.split(":")[0] for line in out.splitlines()] == [str(good)]
    assert err.splitlines() == [
        f"error: {fifo}: not a regular file",
        "error: /dev/zero: not a regular file",
    ]


@pytest.fixture
def model_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder, with params and the first seed's model folder: predict's default."""
    write_params(tmp_path)
    write_model_folder(tmp_path / MODEL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_command_prints_the_top_classes_of_each_image(
    model_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = random_images(2)
    images = [str(save_png(tmp_path / f"{index}.png", row)) for index, row in enumerate(rows)]
    status, out, _ = predict([*images, "--top", "3"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == images
    # The oracle: the classifier's own ranking of the same images.
    best = top_classes(load_classifier(model_project / MODEL), rows, 3)
    for line, classes in zip(lines, best, strict=True):
        shown = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
        assert shown == [name for name, _ in classes]
        assert line.count("%") == 3


def test_the_top_classes_are_the_likeliest_in_order(model_project: Path) -> None:
    classifier = load_classifier(model_project / MODEL)
    images = random_images(4)
    probabilities = classifier.probabilities(images)
    names = np.asarray(classifier.class_names)
    best = top_classes(classifier, images, 2)
    assert [[name for name, _ in classes] for classes in best] == [
        names[np.argsort(-row)[:2]].tolist() for row in probabilities
    ]
    assert [[value for _, value in classes] for classes in best] == [
        sorted(row, reverse=True)[:2] for row in probabilities.tolist()
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "missing"), (b"not an image", "not an image Pillow can read")],
)
def test_unreadable_images_are_one_line(
    model_project: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    message: str,
) -> None:
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    status, _, err = predict([str(path)], capsys)
    assert status == 1
    assert err.startswith(f"error: {path}: {message}")
    assert err.count("\n") == 1


def test_every_image_is_reported_and_any_failure_ends_with_status_1(
    model_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_png(tmp_path / "good.png", np.full(3072, 120, np.uint8))
    missing, broken = tmp_path / "missing.png", tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    also_good = save_png(tmp_path / "also.png", np.full(3072, 30, np.uint8))
    status, out, err = predict([str(image) for image in (good, missing, broken, also_good)],
                               capsys)  # fmt: skip
    assert status == 1
    assert [line.split(":")[0] for line in out.splitlines()] == [str(good), str(also_good)]
    assert err.splitlines() == [
        f"error: {missing}: missing",
        f"error: {broken}: not an image Pillow can read (cannot identify image file '{broken}')",
    ]


def test_the_usage_line_names_the_command_to_run(
    model_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        predict([], capsys)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("usage: cifar10-predict [-h]")


def test_a_missing_model_folder_is_the_train_stages_only_if_it_is_the_pipelines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    image = str(save_png(tmp_path / "x.png", np.zeros(3072, np.uint8)))
    status, _, err = predict([image, "--model", "/missing"], capsys)
    assert status == 1
    assert err == "error: /missing: no such model folder\n"
    _, _, err = predict([image], capsys)
    assert err == (
        f"error: {MODEL}: no such model folder; run `dvc repro train` to write it again\n"
    )


def test_a_damaged_model_folder_named_by_the_user_is_one_line_without_a_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_model_folder(tmp_path / "mine")
    (folder / "model.keras").write_bytes(b"not a zip")
    image = str(save_png(tmp_path / "x.png", np.zeros(3072, np.uint8)))
    status, out, err = predict([image, "--model", str(folder)], capsys)
    assert (status, out) == (1, "")
    assert err.startswith(f"error: {folder / 'model.keras'}: not a model Keras can load")
    assert err.count("\n") == 1
    assert "dvc repro" not in err


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
    with pytest.raises(PipelineError) as caught:
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
    with AllocationPeak() as peak, pytest.raises(PipelineError, match=message) as caught:
        read_image(path)
    assert "\n" not in str(caught.value)
    assert peak.bytes < 1 << 20


EVALUATE_ARGUMENTS = ["--prepared", "data/prepared", "--model", MODEL,
                      "--train-reports", str(SEED_REPORTS.train.folder),
                      "--output", "evaluated"]  # fmt: skip


@pytest.mark.integration
def test_the_model_folder_alone_gives_the_evaluate_stages_answers(
    trained: Path, tmp_path: Path
) -> None:
    # The oracle: what the evaluate stage wrote from the prepared data (codes made by the
    # prepare stage); here the folder's own preprocessing starts from the raw images.
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder, symlinks=True)
    run_stage("evaluate", EVALUATE_ARGUMENTS, folder)
    written = pd.read_csv(EvaluationReports(folder / "evaluated").test_predictions)
    classifier = load_classifier(folder / MODEL)
    test_images = read_split(folder / "data" / "prepared", "test").images
    probabilities = classifier.probabilities(test_images)
    names = np.asarray(classifier.class_names)
    assert written["predicted"].tolist() == names[probabilities.argmax(axis=1)].tolist()
    np.testing.assert_allclose(written["confidence"], probabilities.max(axis=1), atol=1e-6)
    best = top_classes(classifier, test_images[:3], 2)
    assert [[name for name, _ in classes] for classes in best] == [
        names[np.argsort(-row)[:2]].tolist() for row in probabilities[:3]
    ]


@pytest.mark.integration
def test_the_console_script_prints_the_top_classes(trained: Path, tmp_path: Path) -> None:
    rows = read_split(trained / "data" / "prepared", "test").images[:2]
    images = [str(save_png(tmp_path / f"{index}.png", row)) for index, row in enumerate(rows)]
    script = Path(sys.executable).with_name("cifar10-predict")
    result = run([str(script), *images, "--top", "3"], trained)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == images
    assert all(line.count("%") == 3 for line in lines)
    missing = run([str(script), str(tmp_path / "missing.png")], trained, check=False)
    assert missing.returncode == 1
    assert missing.stderr == f"error: {tmp_path / 'missing.png'}: missing\n"


def test_outside_the_pipeline_predict_asks_for_the_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml: not the pipeline's folder
    image = str(save_png(tmp_path / "x.png", np.zeros(3072, np.uint8)))
    status, _, err = predict([image], capsys)
    assert status == 1
    assert err == (
        "error: params.yaml: no such file, so no pipeline here to take the model from; run in "
        "the pipeline's folder, or give the model folder with --model\n"
    )
