"""Classify images with a trained model folder: the top classes and their probabilities.

Not a DVC stage: the command for using what the pipeline made.

    python -m stages.predict photo.jpg frog.png                 # the model of data/model
    python -m stages.predict --model path/to/model --top 5 *.png

Any image Pillow reads works: it is converted to RGB and, if it is not 32 x 32, resized
to 32 x 32 (the model sees what CIFAR-10's images show, nothing finer). The model folder
is self-contained: weights, architecture, preprocessing and class names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.cifar import FEATURES, IMAGE_SHAPE
from stages.cli import StageError, run_stage
from stages.inference import Classifier, load_classifier

DEFAULT_MODEL = Path("data/model")  # where the train stage writes it (dvc.yaml)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as a flat uint8 height-width-channel row of 3072 values."""
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as error:
        raise StageError(f"{path}: not an image Pillow can read ({error})") from None
    height, width, _ = IMAGE_SHAPE
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BOX)
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


def main() -> None:
    """Print each image's top classes."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", type=Path, nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder")
    parser.add_argument("--top", type=int, default=3, help="classes to show per image")
    arguments = parser.parse_args()
    if arguments.top < 1:
        parser.error(f"--top must be at least 1, got {arguments.top}")

    classifier = load_classifier(arguments.model)
    images = np.stack([read_image(path) for path in arguments.images])
    for path, classes in zip(
        arguments.images, top_classes(classifier, images, arguments.top), strict=True
    ):
        shown = ", ".join(f"{name} {percent(probability)}" for name, probability in classes)
        print(f"{path}: {shown}")


if __name__ == "__main__":
    run_stage(main)
