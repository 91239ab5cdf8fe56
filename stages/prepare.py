"""prepare stage: parse the archive, split dev into train/validation, fit the input scaling.

Outputs stay compact: uint8 images and labels per split, the statistics fitted on the
train split only, and with ZCA whitening the whitened images as uint8 codes (see
stages/dataset.py for the folder's layout).
"""

from __future__ import annotations

from stages.start import start_command

if __name__ == "__main__":
    start_command()  # before the imports below

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import scipy.linalg
from sklearn.model_selection import train_test_split

from stages.atomic import atomic_outputs, json_text
from stages.cifar import (
    CLASS_NAMES,
    FEATURES,
    IMAGE_SHAPE,
    CifarArchive,
    Split,
    load_cifar_archive,
)
from stages.cli import StageError, run_stage
from stages.dataset import (
    CODES_STANDARDIZATION,
    Preprocessing,
    SplitName,
    Standardization,
    Whitening,
    save_prepared,
)
from stages.params import PrepareParams, read_params_file

# Named, not __name__: run with -m, the module is __main__.
logger = logging.getLogger("stages.prepare")

# Rows per float32 chunk when accumulating statistics: bounded memory, in cache.
_CHUNK_ROWS = 1024
# Rows per chunk of the covariance's products: few chunks, as each adds a 3072 x 3072 sum.
_PRODUCT_CHUNK_ROWS = 8192
# A pixel that never varies gets scale 1 rather than a division by ~0.
_MIN_STD = 1e-3


def check_splittable(labels: np.ndarray, val_fraction: float, source: str) -> None:
    """Refuse a split that a stratified split cannot make, naming the setting or the data.

    Every class present needs 2 images or more, and train and validation each at least
    one image of every class.
    """
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    present = np.flatnonzero(counts)
    single = present[counts[present] == 1]
    if single.size:
        rare = single[0]
        raise StageError(
            f"{source}: 1 development image of class {CLASS_NAMES[rare]!r}; a stratified "
            "split into train and validation needs 2 or more of each class"
        )
    validation_size = math.ceil(val_fraction * len(labels))
    if not len(present) <= validation_size <= len(labels) - len(present):
        raise StageError(
            f"prepare.val_fraction = {val_fraction}: {validation_size} of the {len(labels)} "
            f"development images for validation, but a stratified split of {len(present)} "
            f"classes needs {len(present)} to {len(labels) - len(present)}"
        )


def split_dev(dev: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Split dev into train and validation, stratified by class and seeded."""
    train_index, validation_index = train_test_split(
        np.arange(len(dev.labels)),
        test_size=val_fraction,
        random_state=seed,
        stratify=dev.labels,
    )
    return (
        Split(dev.images[train_index], dev.labels[train_index]),
        Split(dev.images[validation_index], dev.labels[validation_index]),
    )


def _feature_sums(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sum and sum of squares in float64, one small chunk at a time."""
    total = np.zeros(FEATURES)
    total_squares = np.zeros(FEATURES)
    for start in range(0, len(images), _CHUNK_ROWS):
        chunk = images[start : start + _CHUNK_ROWS].astype(np.float32)
        total += chunk.sum(axis=0, dtype=np.float64)
        total_squares += np.square(chunk).sum(axis=0, dtype=np.float64)
    return total, total_squares


def compute_standardization(images: np.ndarray, scaling: str) -> Standardization:
    """Statistics of uint8 ``images`` for a diagonal scaling mode, as float32 per feature.

    ``per_pixel``: z-score per feature; ``per_channel``: z-score per RGB channel;
    ``unit``: the assignment's ``x / 255``.
    """
    if scaling == "unit":
        return Standardization(np.zeros(FEATURES, np.float32), np.full(FEATURES, 255.0, np.float32))
    total, total_squares = _feature_sums(images)
    count = float(len(images))
    if scaling == "per_channel":
        # Features are height-width-channel interleaved: channel = feature index % 3.
        channels = IMAGE_SHAPE[2]
        total = np.tile(total.reshape(-1, channels).sum(axis=0), FEATURES // channels)
        total_squares = np.tile(
            total_squares.reshape(-1, channels).sum(axis=0), FEATURES // channels
        )
        count *= FEATURES // channels
    elif scaling != "per_pixel":
        raise ValueError(f"unknown scaling {scaling!r}: use per_pixel, per_channel or unit")
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - np.square(mean), 0.0))
    scale = np.where(std < _MIN_STD, 1.0, std)
    return Standardization(mean.astype(np.float32), scale.astype(np.float32))


def fit_whitening(images: np.ndarray, epsilon: float, component_share: float) -> Whitening:
    """Fit ZCA whitening with regularization ``epsilon`` (pixels in [0, 1]) on uint8 images.

    The principal components whose variance exceeds ``component_share * epsilon`` are
    whitened exactly; the rest are scaled by epsilon^-1/2 alone, which is off by at most
    1 - (1 + component_share)^-1/2 on each of them.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not 0 < component_share <= 1:
        raise ValueError(f"component_share must be in (0, 1], got {component_share}")
    # One pass: the sums and the (3072, 3072) sums of products, per chunk in float32
    # (exact enough for chunks this small) and across chunks in float64.
    width = images.shape[1]
    total = np.zeros(width)
    products = np.zeros((width, width))
    for start in range(0, len(images), _PRODUCT_CHUNK_ROWS):
        chunk = images[start : start + _PRODUCT_CHUNK_ROWS].astype(np.float32)
        total += chunk.sum(axis=0, dtype=np.float64)
        products += chunk.T @ chunk
    mean = total / len(images)
    # Covariance of the pixels in [0, 1].
    covariance = (products / len(images) - np.outer(mean, mean)) / 255**2
    if not np.trace(covariance) > 0:
        # Nothing varies: the whitened values would all be 0, of spread 0.
        raise StageError(
            "prepare.scaling = 'zca': the train split's images are all the same, so there "
            "is nothing to whiten; check the archive"
        )
    # Only the components that ZCA scales apart from the rest (see Whitening).
    variances, vectors = scipy.linalg.eigh(
        covariance.astype(np.float32),
        driver="evr",
        subset_by_value=(component_share * epsilon, np.inf),
    )
    leading = variances.astype(np.float64)
    gains = 1 / np.sqrt(leading + epsilon) - 1 / np.sqrt(epsilon)
    # The whitened train split's overall spread, which the uint8 codes cover +-4 times:
    # ZCA scales a component of variance lambda to lambda / (lambda + epsilon) along the
    # leading ones and by 1 / epsilon along the rest, whose variances sum to the trace
    # less the leading ones. The whitened values' mean is 0.
    whitened_variance = (
        np.sum(leading / (leading + epsilon)) + (np.trace(covariance) - leading.sum()) / epsilon
    ) / width
    return Whitening(
        mean.astype(np.float32),
        np.ascontiguousarray(vectors.T),
        gains.astype(np.float32),
        epsilon,
        std=float(np.sqrt(whitened_variance)),
    )


def class_counts(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, int]:
    """Images per class name."""
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts, strict=True)}


def data_report(
    archive: CifarArchive,
    splits: dict[SplitName, Split],
    params: PrepareParams,
    whitening: Whitening | None,
) -> dict[str, object]:
    """Describe the data: the shapes the assignment prints, class counts, provenance."""
    dev_size, test_size = len(archive.dev.labels), len(archive.test.labels)
    shapes = {
        "x_dev": (dev_size, *IMAGE_SHAPE),
        "y_dev": (dev_size, 1),
        "x_test": (test_size, *IMAGE_SHAPE),
        "y_test": (test_size, 1),
        "x_dev_flat": (dev_size, FEATURES),
        "x_test_flat": (test_size, FEATURES),
    }
    for name, prefix in (("train", "train"), ("validation", "val")):
        size = len(splits[name].labels)
        shapes[f"x_{prefix}"] = (size, FEATURES)
        shapes[f"y_{prefix}"] = (size, 1)
    report: dict[str, object] = {
        "scaling": params.scaling,
        "val_fraction": params.val_fraction,
        "class_names": list(archive.class_names),
        # Printed as the assignment prints them: "(50000, 32, 32, 3)".
        "shapes": {name: str(shape) for name, shape in shapes.items()},
        "class_counts": {
            name: class_counts(split.labels, archive.class_names) for name, split in splits.items()
        },
    }
    if whitening is not None:
        report["zca"] = {
            "epsilon": whitening.epsilon,
            "leading_components": len(whitening.gains),
            "whitened_std": whitening.std,
        }
    return report


def main() -> None:
    """Prepare the archive named on the command line into the output folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="prepared-data folder")
    parser.add_argument("--report", type=Path, required=True, help="data.json report")
    arguments = parser.parse_args()
    params_file = read_params_file()
    params = params_file.params.prepare

    logger.info("reading %s", arguments.archive)
    archive = load_cifar_archive(arguments.archive)
    check_splittable(archive.dev.labels, params.val_fraction, str(arguments.archive))
    train, validation = split_dev(archive.dev, params.val_fraction, params.seed)
    splits: dict[SplitName, Split] = {
        "train": train,
        "validation": validation,
        "test": archive.test,
    }
    whitening = None
    if params.scaling == "zca":
        fitted_on = train.images[: params.zca_fit_images]
        logger.info("fitting ZCA whitening on %d train images", len(fitted_on))
        whitening = fit_whitening(
            fitted_on,
            params.zca_epsilon,
            params.zca_component_share,
        )
        standardization = CODES_STANDARDIZATION
    else:
        standardization = compute_standardization(train.images, params.scaling)
    report = data_report(archive, splits, params, whitening)
    preprocessing = Preprocessing(params.scaling, whitening)

    logger.info("writing %s", arguments.output)
    with atomic_outputs(
        arguments.output, arguments.report, before_commit=params_file.check_unchanged
    ) as (folder, report_file):
        save_prepared(folder, splits, preprocessing, standardization, archive.class_names)
        report_file.write_text(json_text(report))
    sizes = ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items())
    print(f"prepared {sizes} images ({params.scaling} scaling) into {arguments.output}")


if __name__ == "__main__":
    run_stage(main)
