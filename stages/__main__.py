"""Run a stage of dvc.yaml: ``python -m stages <stage> [arguments]`` (``--help`` for each)."""

from __future__ import annotations

import pkgutil
import sys

import stages
from cifar10.command import run

STAGES = sorted(
    module.name for module in pkgutil.iter_modules(stages.__path__) if module.name[0] != "_"
)


def main() -> int:
    """Run the stage named by the first argument."""
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:  # noqa: PLR2004
        print(f"usage: python -m stages {{{','.join(STAGES)}}} [arguments]", file=sys.stderr)
        return 2
    return run(f"stages.{sys.argv[1]}", sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
