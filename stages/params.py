"""params stage: validate the whole params.yaml and record what identifies a local archive.

DVC runs it before every other stage (dvc.yaml), so a typo in any key fails any
``dvc repro``; the archive's record makes a local file replaced in place, with no md5 to
pin it, rerun the download stage.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from cifar10.atomic import atomic_outputs, json_text
from cifar10.download import archive_identity
from cifar10.params import read_params

# Constant, so that the stages that depend on it rerun for their own params only.
VALID_RECORD = "params.yaml passed the schema of cifar10/params.py\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Validate params.yaml; record that it was valid and what identifies the archive."""
    parser = argparse.ArgumentParser(prog="python -m stages params", description=__doc__)
    parser.add_argument("--valid", type=Path, required=True, help="record of a valid params.yaml")
    parser.add_argument("--archive", type=Path, required=True, help="archive identity JSON")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    identity = archive_identity(params_file.params.data, os.environ)
    outputs = atomic_outputs(
        arguments.valid, arguments.archive, before_commit=params_file.check_unchanged
    )
    with outputs as (valid_file, archive_file):
        valid_file.write_text(VALID_RECORD)
        archive_file.write_text(json_text(identity))
