"""download stage: fetch the CIFAR-10 archive, or verify a local copy, and check it.

See cifar10/download.py: pooch downloads with retries and checks the md5; a local copy
(``data.archive``, or ``CIFAR10_ARCHIVE`` for a copy of the official one) is verified.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from cifar10.download import download, local_archive, use_local_archive
from cifar10.params import read_params


def main(argv: Sequence[str] | None = None) -> None:
    """Fetch or copy the archive to ``--output``, as params.yaml's data section says."""
    parser = argparse.ArgumentParser(prog="python -m stages download", description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="archive destination")
    arguments = parser.parse_args(argv)
    params_file = read_params()
    params = params_file.params.data
    local = local_archive(params, os.environ)
    if local is not None:
        path, setting = local
        source = str(path)
        md5 = use_local_archive(
            path, arguments.output, params.md5, setting=setting,
            before_commit=params_file.check_unchanged,
        )  # fmt: skip
    else:
        source = params.url
        md5 = download(
            params.url, arguments.output, params.md5, retries=params.retries,
            timeout=params.timeout_seconds, before_commit=params_file.check_unchanged,
        )  # fmt: skip
    check = (
        "matches data.md5"
        if params.md5 is not None
        else "data.md5 is null, so the archive's own checks passed; set it to this value"
    )
    print(f"wrote {arguments.output} from {source}: md5 {md5} ({check})")
