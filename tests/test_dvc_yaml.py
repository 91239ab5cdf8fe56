"""dvc.yaml against the code: each stage's deps are its modules, its params the sections it reads.

DVC follows neither imports nor attribute reads: a module missing from a stage's deps, or
a params section missing from its ``params``, would leave its results stale when that
changes, and one listed needlessly would rerun it. Both are read from the code by ast.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import REPOSITORY
from ruamel.yaml import YAML

from cifar10.params import Params, read_params
from cifar10.predict import default_model
from cifar10.reports import SeedReports
from stages.__main__ import STAGES

# What every stage's command runs first (`python -m stages <stage>`), before the stage module.
ENTRY_POINT = REPOSITORY / "stages" / "__main__.py"
# A stage's code deps are modules of these folders.
CODE_DEP = re.compile(r"^(stages|cifar10)/[^/]+\.py$")


def pipeline() -> dict:
    return YAML(typ="safe").load((REPOSITORY / "dvc.yaml").read_text())


def module_file(name: str, root: Path) -> Path | None:
    """The file under ``root`` that defines module ``name`` (a package's __init__.py), if any."""
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path, root: Path) -> set[Path]:
    """The files under ``root`` that importing ``path`` runs directly: every module it names.

    Imports anywhere count (in functions, under ``if TYPE_CHECKING:``); ``import a.b``
    runs a/__init__.py and a/b.py; ``from a import b`` runs a/__init__.py, and a/b.py if
    ``b`` is a module rather than a name; relative imports resolve from ``path``'s package.
    """
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.relative_to(root).parent.parts  # a module's or __init__'s
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    files = set()
    for name in filter(None, names):
        parts = name.split(".")
        # Each package on the way is imported first: a.b.c runs a/__init__.py, a/b/__init__.py.
        for end in range(1, len(parts) + 1):
            found = module_file(".".join(parts[:end]), root)
            if found is not None:
                files.add(found)
    return files - {path}


def import_closure(paths: list[Path], root: Path) -> set[Path]:
    """``paths`` and every file under ``root`` that importing them runs, directly or not."""
    closure: set[Path] = set()
    pending = list(paths)
    while pending:
        path = pending.pop()
        if path not in closure:
            closure.add(path)
            pending += imported_files(path, root)
    return closure


def stage_module(name: str) -> str:
    """The module of the stages package that a stage's command runs."""
    match = re.search(r"python -m stages (\w+)\b", pipeline()["stages"][name]["cmd"])
    assert match, f"stage {name}: its command runs no `python -m stages <stage>`"
    return match.group(1)


def sections_read(path: Path) -> set[str]:
    """The params a module reads: ``<anything>.params.<section>`` as the whole section, or
    ``section.key`` where it is read only as ``<anything>.params.<section>.<key>``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    read = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "params"
            and node.attr in Params.model_fields
        ):
            parent = parents.get(node)
            read.add(
                f"{node.attr}.{parent.attr}" if isinstance(parent, ast.Attribute) else node.attr
            )
    return {entry for entry in read if entry.split(".")[0] not in read or "." not in entry}


def matrix_params(definition: dict, sections: set[str]) -> set[str]:
    """What a matrix stage over ``${section.key}`` lists for ``sections``: the section's
    other keys one by one. Each value reaches it on its command line; listing the key
    would rerun every instance when one is added."""
    over = {
        tuple(value[2:-1].split("."))
        for value in definition.get("matrix", {}).values()
        if isinstance(value, str) and value.startswith("${")
    }
    expected = set(sections)
    for section, key in over:
        if section in expected:
            expected.remove(section)
            fields = Params.model_fields[section].annotation.model_fields
            expected |= {f"{section}.{name}" for name in fields if name != key}
    return expected


@pytest.mark.parametrize("stage", list(pipeline()["stages"]))
def test_a_stages_code_deps_are_the_modules_its_command_imports(stage: str) -> None:
    module = REPOSITORY / "stages" / f"{stage_module(stage)}.py"
    closure = import_closure([ENTRY_POINT, module], REPOSITORY)
    expected = {path.relative_to(REPOSITORY).as_posix() for path in closure}
    listed = {dep for dep in pipeline()["stages"][stage]["deps"] if CODE_DEP.match(dep)}
    assert listed == expected


@pytest.mark.parametrize("stage", list(pipeline()["stages"]))
def test_a_stages_params_are_what_its_module_reads(stage: str) -> None:
    definition = pipeline()["stages"][stage]
    if stage == "params":
        # It validates the whole file and always runs (always_changed): no section of its own.
        assert "params" not in definition
        return
    module = REPOSITORY / "stages" / f"{stage_module(stage)}.py"
    listed = definition.get("params", [])
    assert all(isinstance(entry, str) for entry in listed), "params are sections or keys"
    assert set(listed) == matrix_params(definition, sections_read(module)) != set()


def test_every_stage_module_is_a_stage_of_the_pipeline() -> None:
    assert sorted(stage_module(name) for name in pipeline()["stages"]) == STAGES


def test_every_output_is_in_dvcs_cache() -> None:
    # A failed stage's outputs come back with `dvc checkout <stage>` only from the cache.
    for name, stage in pipeline()["stages"].items():
        for output in stage.get("outs", []):
            options = next(iter(output.values())) if isinstance(output, dict) else {}
            assert options.get("cache", True), f"stage {name}: {output} is not cached"


def test_every_stage_says_what_it_does() -> None:
    for name, stage in pipeline()["stages"].items():
        assert str(stage.get("desc", "")).strip(), f"stage {name} has no desc"


def test_the_closure_follows_imports_of_every_form(tmp_path: Path) -> None:
    files = {
        "main.py": (
            "from __future__ import annotations\n"
            "import os\n"
            "import pkg.plain\n"
            "from pkg import named, CONSTANT\n"
            "from pkg.sub.deep import thing as alias\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from pkg.typing_only import Kind\n"
            "def later():\n"
            "    import pkg.lazy\n"
        ),
        "pkg/__init__.py": "CONSTANT = 1\n",
        "pkg/plain.py": "from . import relative\n",
        "pkg/named.py": "",
        "pkg/relative.py": "from .sub import deep\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/deep.py": "from ..named import x\nthing = 1\n",
        "pkg/typing_only.py": "",
        "pkg/lazy.py": "",
        "pkg/unused.py": "import pkg.never_imported_by_main\n",
    }
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    closure = import_closure([tmp_path / "main.py"], tmp_path)
    assert {path.relative_to(tmp_path).as_posix() for path in closure} == {
        "main.py", "pkg/__init__.py", "pkg/plain.py", "pkg/named.py",
        "pkg/relative.py", "pkg/sub/__init__.py", "pkg/sub/deep.py", "pkg/typing_only.py",
        "pkg/lazy.py",
    }  # fmt: skip


def test_sections_read_are_attributes_of_a_params_attribute(tmp_path: Path) -> None:
    module = tmp_path / "stage.py"
    module.write_text(
        "train = read_params().params.train\n"
        "batch = params_file.params.evaluate.batch_size\n"
        "other = params.data\n"  # not <anything>.params.<section>
        "dump = params_file.params.model_dump()\n"  # not a section
        "seeds = params_file.params.backprop.seed\n"  # one key only
    )
    assert sections_read(module) == {"train", "evaluate.batch_size", "backprop.seed"}


def resolved(text: str, seed: int) -> str:
    """``text`` with dvc.yaml's vars and ``${item.seed}`` substituted."""
    variables = {key: value for entry in pipeline()["vars"] for key, value in entry.items()}
    variables["item.seed"] = seed
    return re.sub(r"\$\{([\w.]+)\}", lambda match: str(variables[match.group(1)]), text)


def test_the_seed_matrices_write_and_read_the_layout_of_seed_reports() -> None:
    stages = pipeline()["stages"]
    root = Path(resolved("${seed_reports}", 7))
    reports = SeedReports(root, 7)
    assert [resolved(out, 7) for out in stages["train"]["outs"][1:]] == [
        reports.train.folder.as_posix(),
        reports.cost.as_posix(),
    ]
    assert [resolved(out, 7) for out in stages["evaluate"]["outs"]] == [
        reports.evaluation.folder.as_posix()
    ]
    assert resolved(stages["aggregate"]["deps"][0], 7) == root.as_posix()


def test_predicts_default_model_is_the_registrys_the_first_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPOSITORY)
    first = read_params().params.train.seeds[0]
    artifact = pipeline()["artifacts"]["cifar10-mlp"]["path"]
    assert resolved(artifact.replace("${train.seeds[0]}", str(first)), first) == (
        default_model().as_posix()
    )
