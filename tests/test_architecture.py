"""docs/architecture.md against the code: its picture of the imports is the code's own."""

from __future__ import annotations

import ast
import re

from helpers import REPOSITORY

PACKAGES = ("stages", "cifar10")
ARCHITECTURE = REPOSITORY / "docs" / "architecture.md"


def modules() -> list[str]:
    """Every module of the two packages but their ``__init__``, as ``package.module``."""
    return sorted(
        f"{package}.{path.stem}"
        for package in PACKAGES
        for path in (REPOSITORY / package).glob("*.py")
        if path.stem != "__init__"
    )


def direct_imports(module: str) -> set[str]:
    """The modules of the two packages that ``module`` imports at run time.

    Imports under ``if TYPE_CHECKING:`` are annotations only and left out.
    """
    path = REPOSITORY / f"{module.replace('.', '/')}.py"
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    known = set(modules())
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found - {module}


def reduced_edges() -> list[tuple[str, str]]:
    """Each direct import that no chain of other imports implies (a transitive reduction)."""
    graph = {module: direct_imports(module) for module in modules()}

    def reachable_without(source: str, target: str) -> set[str]:
        pending = [other for other in graph[source] if other != target]
        seen = set(pending)
        while pending:
            for following in graph[pending.pop()] - seen:
                seen.add(following)
                pending.append(following)
        return seen

    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if target not in reachable_without(source, target)
    )


def mermaid() -> str:
    """The import picture of docs/architecture.md, computed from the code."""
    lines = ["flowchart TD"]
    for package in PACKAGES:
        lines.append(f"  subgraph {package}")
        lines += [f'    {name.replace(".", "_")}["{name.split(".")[1]}"]'
                  for name in modules() if name.startswith(f"{package}.")]  # fmt: skip
        lines.append("  end")
    lines += [f"  {source.replace('.', '_')} --> {target.replace('.', '_')}"
              for source, target in reduced_edges()]  # fmt: skip
    return "\n".join(lines)


def test_the_picture_of_the_imports_is_the_codes() -> None:
    text = ARCHITECTURE.read_text()
    (shown,) = re.findall(r"```mermaid\n(flowchart TD\n  subgraph stages.*?)\n```", text, re.DOTALL)
    assert shown == mermaid(), (
        "docs/architecture.md: paste the picture of tests/test_architecture.py"
    )


def test_every_module_is_described_once() -> None:
    text = ARCHITECTURE.read_text()
    described = re.findall(r"^\| `((?:stages|cifar10)/\w+\.py)` \|", text, re.MULTILINE)
    assert sorted(described) == sorted(f"{name.replace('.', '/')}.py" for name in modules())


def test_the_reduction_keeps_only_imports_no_chain_implies() -> None:
    edges = set(reduced_edges())
    assert ("cifar10.model", "cifar10.preprocessing") in edges
    # model imports errors itself, but also files, which imports errors.
    assert "cifar10.errors" in direct_imports("cifar10.model")
    assert ("cifar10.model", "cifar10.errors") not in edges
