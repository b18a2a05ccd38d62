"""Imports flow one way: no cycles in the package, a pure model, control-plane modules alone.

The graph counts every import a module runs, at its top or inside a function
(an import deferred into a function still closes a cycle, it only hides it
until the call): ``blobs -> eventlog -> projection -> blobs`` was one.
Imports under ``if TYPE_CHECKING:`` are not run and are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import artifactstore

PACKAGE = Path(artifactstore.__file__).resolve().parent
SRC = PACKAGE.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _imports(node.orelse)  # the body is not run; an else branch is
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(ast.iter_child_nodes(node))


def _targets(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (``from pkg import mod`` names ``pkg.mod``)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports([ast.parse(path.read_text(encoding="utf-8"))]):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        if node.level:
            base = name.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            out.add(full if full in modules else module)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _targets(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    assert "artifactstore.controlplane.eventlog" in graph["artifactstore.controlplane.blobs"]
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_projection_imports_only_tables_and_the_model() -> None:
    targets = _graph()["artifactstore.controlplane.projection"]
    allowed = ("artifactstore.model", "artifactstore.controlplane.db")
    assert sorted(t for t in targets if not t.startswith(allowed)) == []


def test_each_control_plane_module_imports_alone() -> None:
    """In a fresh interpreter, with nothing of the package imported before it."""
    names = sorted(
        n
        for n in _modules()
        if n.startswith("artifactstore.controlplane") and ".migrations" not in n  # Alembic's
    )
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('artifactstore')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "    print(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == names  # every module imported, none skipped
