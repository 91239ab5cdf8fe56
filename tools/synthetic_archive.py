"""Write synthetic archives in the official CIFAR-10 format, for tests, demos and benchmarks.

python -m tools.synthetic_archive --output /tmp/cifar-synthetic.tar.gz --images-per-batch 500
"""

from __future__ import annotations

import argparse
import gzip
import io
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cifar10.archive import (
    CLASS_NAMES,
    FEATURES,
    FOLDER,
    META_FILE,
    TEST_BATCH,
    TRAIN_BATCHES,
    Split,
    interleaved_to_planar,
)


def write_archive(path: Path, members: Mapping[str, bytes]) -> None:
    """Write ``members`` (name inside cifar-10-batches-py/ -> bytes) as a reproducible tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    # No name and mtime=0 in the gzip header: the same images give the same bytes and md5.
    with (
        path.open("wb") as file,
        gzip.GzipFile(filename="", fileobj=file, mode="wb", mtime=0) as compressed,
    ):
        compressed.write(buffer.getvalue())


def synthetic_split(size: int, rng: np.random.Generator, templates: np.ndarray) -> Split:
    """Draw ``size`` images around per-class templates: noisy, but learnable."""
    labels = rng.permutation(np.arange(size) % len(CLASS_NAMES)).astype(np.uint8)
    noise = rng.normal(0.0, 40.0, size=(size, FEATURES)).astype(np.float32)
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels)


def synthetic_members(images_per_batch: int, seed: int = 0) -> dict[str, bytes]:
    """Pickle the members of a synthetic archive of 6 x ``images_per_batch`` images.

    Each class is a random smooth colour pattern plus noise, so a model can learn it;
    the format (pickles, names, planar layout) is exactly the official one.
    """
    if images_per_batch <= 0:
        raise ValueError(f"images_per_batch must be positive, got {images_per_batch}")
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(len(CLASS_NAMES), 4, 4, 3)).astype(np.float32)
    templates = coarse.repeat(8, axis=1).repeat(8, axis=2).reshape(len(CLASS_NAMES), FEATURES)
    members: dict[str, bytes] = {
        META_FILE: pickle.dumps(
            {
                b"num_cases_per_batch": images_per_batch,
                b"label_names": [name.encode() for name in CLASS_NAMES],
                b"num_vis": FEATURES,
            },
            protocol=2,
        )
    }
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        split = synthetic_split(images_per_batch, rng, templates)
        batch = {
            b"batch_label": f"synthetic {name}".encode(),
            b"labels": split.labels.tolist(),
            b"data": interleaved_to_planar(split.images),
            b"filenames": [f"{name}_{index:05d}.png".encode() for index in range(images_per_batch)],
        }
        members[name] = pickle.dumps(batch, protocol=2)
    return members


def make_synthetic_archive(path: Path, images_per_batch: int, seed: int = 0) -> None:
    """Write a CIFAR-10-format archive of 6 x ``images_per_batch`` synthetic images."""
    write_archive(path, synthetic_members(images_per_batch, seed))


def main() -> None:
    """Write a synthetic archive of the requested size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--images-per-batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    make_synthetic_archive(arguments.output, arguments.images_per_batch, arguments.seed)
    print(f"wrote {arguments.output}: {6 * arguments.images_per_batch} synthetic images")


if __name__ == "__main__":
    main()
