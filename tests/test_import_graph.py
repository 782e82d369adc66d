"""mlcloud's modules import each other without a cycle (read from their source, in milliseconds).

Imports at module level count, those under ``if TYPE_CHECKING:`` and ``try:`` too (mypy follows
them); imports inside functions do not. ``from package import submodule`` needs the submodule,
not the package's ``__init__``.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlcloud"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    found: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):
            nodes += node.body + node.orelse + getattr(node, "finalbody", [])
            nodes += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
        elif isinstance(node, ast.Import):
            found |= {owner(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else owner(node.module)
                      for a in node.names}
    return {name for name in found if name}


def test_the_import_graph_has_no_cycle() -> None:
    modules = module_names()
    graph = {name: imports(ast.parse(path.read_text()), modules) - {name} for name, path in modules.items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' → '.join(exc.args[1])}")


def test_the_sdk_does_not_import_the_host() -> None:
    modules = module_names()
    for name in (n for n in modules if n.startswith("mlcloud.sdk")):
        assert not {i for i in imports(ast.parse(modules[name].read_text()), modules) if i.startswith("mlcloud.host")}
