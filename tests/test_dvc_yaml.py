"""dvc.yaml against the code: each stage's deps are exactly the modules it imports.

DVC does not follow imports: a module missing from a stage's deps would leave its
results stale when that module changes, and one listed needlessly would rerun it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPOSITORY
from ruamel.yaml import YAML

STAGES_PACKAGE = REPOSITORY / "stages"


def pipeline() -> dict:
    return YAML(typ="safe").load((REPOSITORY / "dvc.yaml").read_text())


def imported_modules(path: Path) -> set[str]:
    """The modules of the stages package that the file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            # `from stages import x` imports stages.x; `from stages.x import y`, stages.x.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {
            name
            for name in names
            if name.startswith("stages.")
            and (STAGES_PACKAGE / f"{name.removeprefix('stages.')}.py").is_file()
        }
    return found


def import_closure(module: str) -> set[str]:
    """``module`` and every module of the package it imports, directly or not."""
    closure, pending = set(), [module]
    while pending:
        name = pending.pop()
        if name not in closure:
            closure.add(name)
            pending += imported_modules(STAGES_PACKAGE / f"{name.removeprefix('stages.')}.py")
    return closure


def stage_modules() -> dict[str, str]:
    """Each stage of dvc.yaml, and the module its command runs."""
    modules = {}
    for name, stage in pipeline()["stages"].items():
        match = re.search(r"python -m (stages\.\w+)", stage["cmd"])
        assert match, f"stage {name}: its command runs no module of the stages package"
        modules[name] = match.group(1)
    return modules


@pytest.mark.parametrize("stage", list(pipeline()["stages"]))
def test_a_stages_code_deps_are_the_modules_it_imports(stage: str) -> None:
    expected = {
        f"stages/{name.removeprefix('stages.')}.py"
        for name in import_closure(stage_modules()[stage])
    }
    expected.add("stages/__init__.py")  # imported before any module of the package
    listed = {dep for dep in pipeline()["stages"][stage]["deps"] if dep.startswith("stages/")}
    assert listed == expected


def test_the_closure_follows_imports_of_every_form(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text(
        "import stages.cli\nfrom stages import atomic\nfrom stages.params import read_params_file\n"
        "def later():\n    from stages.dataset import load_split\n"
        "import stages_other\nfrom stages.cifar import FEATURES as X\n"
    )
    assert imported_modules(module) == {
        "stages.cli", "stages.atomic", "stages.params", "stages.dataset", "stages.cifar"
    }  # fmt: skip


def test_every_output_is_in_dvcs_cache() -> None:
    # A failed stage's outputs come back with `dvc checkout <stage>` only from the cache.
    for name, stage in pipeline()["stages"].items():
        for output in stage.get("outs", []):
            options = next(iter(output.values())) if isinstance(output, dict) else {}
            assert options.get("cache", True), f"stage {name}: {output} is not cached"
