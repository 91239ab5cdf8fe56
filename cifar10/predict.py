"""cifar10-predict: classify images with a trained model folder, the top classes of each.

Not a DVC stage: the command for using what the pipeline made.

    cifar10-predict photo.jpg frog.png                 # the first seed's, data/models/<seed>
    cifar10-predict --model path/to/model --top 5 *.png

Any image Pillow reads works: it is converted to RGB (16-bit images by their 0-65535
range; images of undefined range, floating-point ones say, are refused) and, if it is
not 32 x 32, resized to 32 x 32 (the model sees what CIFAR-10's images show, nothing
finer). The model folder is self-contained: weights, architecture, preprocessing and
class names. Every image gets its line: its classes, or an error; the status is 1 if
any image could not be read.
"""

from __future__ import annotations

import argparse
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from cifar10.archive import FEATURES, IMAGE_SHAPE
from cifar10.errors import InputError, PipelineError, one_line
from cifar10.files import regular_file_size
from cifar10.model import STAGE, Classifier, load_classifier
from cifar10.params import PARAMS_FILE, read_params

# Where the train stage writes each seed's model (dvc.yaml's `models`; tests check).
MODELS = Path("data/models")
# The largest image read: a 48-megapixel photo fits; decoding and converting one of 64
# million pixels takes up to 0.75 GB (16-bit grey; 0.57 GB for 8-bit colour).
MAX_IMAGE_PIXELS = 64_000_000
# Pillow's modes of more than 8 bits a channel whose range the format defines: 16-bit grey
# (I;16...), and mode I from PNG and from PGM/PPM, which Pillow scales to 0-65535.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_SIXTEEN_BIT_I_FORMATS = frozenset({"PNG", "PPM"})
# What Pillow's decoders raise on a damaged or unsupported file.
_DECODING_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)


def _to_rgb(path: Path, image: Image.Image) -> Image.Image:
    """Convert to 8-bit RGB by the range the image's format defines; refuse it undefined."""
    if image.mode in _SIXTEEN_BIT_MODES or (
        image.mode == "I" and image.format in _SIXTEEN_BIT_I_FORMATS
    ):
        # 0-65535 onto 0-255, rounded: v / 257, in place. Pillow's own conversion clips
        # at 255.
        values = np.asarray(image).astype(np.uint32)
        values += 128
        values //= 257
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        kind = "floating-point" if image.mode == "F" else "32-bit integer"
        raise PipelineError(
            f"{path}: {kind} pixels (mode {image.mode}), whose brightness range the file does "
            "not define; save the image with 8 or 16 bits a channel"
        )
    return image.convert("RGB")


def _upright(picture: Image.Image, orientation: int) -> Image.Image:
    """Turn ``picture`` as its file's EXIF orientation says (a phone's photo, say)."""
    picture.getexif()[ExifTags.Base.Orientation] = orientation
    return ImageOps.exif_transpose(picture)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as a flat uint8 height-width-channel row of 3072 values.

    Only a regular file is read (a pipe or a device could be read forever). Pixels
    convert by the range their format defines (16-bit ones from 0-65535); images whose
    range is not defined, or of more than MAX_IMAGE_PIXELS, are refused. The picture is
    turned upright as its EXIF orientation says.
    """
    height, width, _ = IMAGE_SHAPE
    try:
        regular_file_size(path, None)
        with warnings.catch_warnings():
            # Pillow warns, on stderr, of images above its own bound: refused here as well.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise PipelineError(
                        f"{path}: {image.width} x {image.height} pixels, more than the "
                        f"{MAX_IMAGE_PIXELS:,} predict reads"
                    )
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                picture = _to_rgb(path, image)
        # Turned once small: a square's resize and a turn give the same pixels either way.
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.BOX)
        picture = _upright(picture, orientation)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise PipelineError(
            f"{path}: {one_line(error)}; predict reads at most {MAX_IMAGE_PIXELS:,} pixels"
        ) from None
    except _DECODING_ERRORS as error:
        raise PipelineError(f"{path}: not an image Pillow can read ({one_line(error)})") from None
    return np.asarray(picture, np.uint8).reshape(FEATURES)


# Decimals a probability may take so that it does not read as 0% or 100% when it is not.
MAX_PERCENT_DECIMALS = 6


def percent(probability: float) -> str:
    """Format a probability with one decimal, or with as many more as keep it off 0% and 100%."""
    for decimals in range(1, MAX_PERCENT_DECIMALS + 1):
        text = f"{probability:.{decimals}%}"
        if not 0 < probability < 1 or text not in (f"{0:.{decimals}%}", f"{1:.{decimals}%}"):
            return text
    return text


def top_classes(
    classifier: Classifier, images: np.ndarray, count: int
) -> list[list[tuple[str, float]]]:
    """List the ``count`` likeliest classes of each image, with their probabilities."""
    probabilities = classifier.probabilities(images)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :count]
    return [
        [(classifier.class_names[index], float(row[index])) for index in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]


def default_model() -> Path:
    """Return the kept model of the pipeline in this folder: its first seed's."""
    if not PARAMS_FILE.is_file():
        raise InputError(
            PARAMS_FILE,
            "no such file, so no pipeline here to take the model from; run in the "
            "pipeline's folder, or give the model folder with --model",
        )
    return MODELS / str(read_params().params.train.seeds[0])


def main(argv: Sequence[str] | None = None) -> None:
    """Print each readable image's top classes; then each unreadable one's error, status 1."""
    parser = argparse.ArgumentParser(
        prog="cifar10-predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", type=Path, nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--model", type=Path, help="model folder (default: the first of train.seeds' model)"
    )
    parser.add_argument("--top", type=int, default=3, help="classes to show per image")
    arguments = parser.parse_args(argv)
    if arguments.top < 1:
        parser.error(f"--top must be at least 1, got {arguments.top}")

    # Only the pipeline's own model folder is the train stage's to write again.
    stage = None
    if arguments.model is None:
        arguments.model = default_model()
        stage = STAGE
    if not arguments.model.is_dir():
        raise InputError(arguments.model, "no such model folder", stage)
    classifier = load_classifier(arguments.model, stage)
    readable: list[tuple[Path, np.ndarray]] = []
    failures: list[str] = []
    for path in arguments.images:
        try:
            readable.append((path, read_image(path)))
        except PipelineError as error:
            failures.append(str(error))
    if readable:
        paths, rows = zip(*readable, strict=True)
        for path, classes in zip(
            paths, top_classes(classifier, np.stack(rows), arguments.top), strict=True
        ):
            shown = ", ".join(f"{name} {percent(probability)}" for name, probability in classes)
            print(f"{path}: {shown}")
    if failures:
        raise PipelineError("\n".join(failures))
