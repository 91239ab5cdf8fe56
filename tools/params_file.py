"""Change keys of a params.yaml as DVC does (its own modify_yaml): for tests and benchmarks.

Comments and the file's layout stay; only the values changed are written anew.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dvc.utils.serialize import modify_yaml

Changes = Mapping[str, Mapping[str, object]]  # section -> key -> value


def update_params_file(path: Path, changes: Changes) -> None:
    """Set ``changes`` (section -> key -> value) in the params file at ``path``."""
    with modify_yaml(path) as params:
        for section, values in changes.items():
            params[section].update(values)
