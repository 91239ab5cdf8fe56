"""Change keys of a params.yaml, read and written as DVC does (YAML 1.2): for tests, benchmarks.

Comments are not kept: the file is written back from its values, in their order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ruamel.yaml import YAML

from cifar10.params import parse_params

Changes = Mapping[str, Mapping[str, object]]  # section -> key -> value


def update_params_file(path: Path, changes: Changes) -> None:
    """Set ``changes`` (section -> key -> value) in the params file at ``path``."""
    params = parse_params(path.read_text(), str(path))
    for section, values in changes.items():
        params[section].update(values)
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w") as file:
        yaml.dump(params, file)
