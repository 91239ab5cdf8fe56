"""prepare stage: parse the archive, split dev 8:2 into train and validation, fit the scaling.

Outputs stay compact: uint8 images and labels per split, the preprocessing fitted on the
train split only and, where it encodes images (ZCA), their uint8 codes
(cifar10/prepared.py gives the folder's layout).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from cifar10.archive import load_cifar_archive
from cifar10.atomic import atomic_outputs, json_text
from cifar10.params import read_params
from cifar10.prepared import write_prepared
from cifar10.preprocessing import fit_preprocessing
from cifar10.split import check_splittable, data_report, split_dev

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the archive named on the command line into the output folder."""
    parser = argparse.ArgumentParser(prog="python -m stages prepare", description=__doc__)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="prepared-data folder")
    parser.add_argument("--report", type=Path, required=True, help="data.json report")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.prepare

    logger.info("reading %s", arguments.archive)
    archive = load_cifar_archive(arguments.archive)
    check_splittable(archive.dev.labels, params.val_fraction, str(arguments.archive))
    train, validation = split_dev(archive.dev, params.val_fraction, params.seed)
    splits = {"train": train, "validation": validation, "test": archive.test}
    preprocessing = fit_preprocessing(train.images, params)

    logger.info("writing %s", arguments.output)
    with atomic_outputs(
        arguments.output, arguments.report, before_commit=params_file.check_unchanged
    ) as (folder, report_file):
        write_prepared(folder, splits, preprocessing)
        report_file.write_text(
            json_text(data_report(archive, splits, preprocessing, params.val_fraction))
        )
    sizes = ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items())
    print(f"prepared {sizes} images ({params.scaling} scaling) into {arguments.output}")
