"""The layers import only what DESIGN.md §5 lets them (docs/design.md, "Layers").

An AST walk over the package's files, so a forbidden import fails here with the chain that
makes it. Every import counts: at module level, inside a function, under ``TYPE_CHECKING``
(a type-only import is still a dependency); importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``. A contract is broken when a module of the layer reaches a forbidden module
directly or through other modules, since importing it would load that module too.
"""

from __future__ import annotations

import ast
import shutil
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pytest

import propylon

ROOT = Path(propylon.__file__).parent

# what the data plane (workers and their supervisor) may never load: it runs from the IR
_COLD_PATH = ("propylon.config", "propylon.translate", "propylon.controlplane", "propylon.cli")

CONTRACTS = [
    pytest.param("propylon.proxy", _COLD_PATH, id="proxy-knows-only-the-IR"),
    pytest.param("propylon.runtime", ("propylon.proxy", *_COLD_PATH),
                 id="runtime-takes-pools-through-a-factory"),
    pytest.param("propylon.filters", ("propylon.proxy", "propylon.runtime", *_COLD_PATH),
                 id="filters-are-data-plane"),
    pytest.param("propylon.controlplane", ("propylon.proxy", "propylon.filters"),
                 id="control-plane-is-not-a-proxy"),
    pytest.param("propylon.net", ("propylon.proxy", "propylon.runtime", "propylon.filters",
                                  *_COLD_PATH),
                 id="net-is-neutral"),
]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``module``'s imports load, with their packages."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    loaded: set[str] = set()
    for name in found:
        while name:
            if name in known:
                loaded.add(name)
            name = name.rpartition(".")[0]
    loaded.discard(module)
    return loaded


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    known = set(files)
    return {
        name: imported(ast.parse(path.read_text(encoding="utf-8")), name,
                       path.name == "__init__.py", known)
        for name, path in files.items()
    }


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(graph: dict[str, set[str]], layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """One import chain per forbidden module the layer reaches (shortest first found)."""
    found: dict[str, list[str]] = {}
    for start in sorted(m for m in graph if _within(m, [layer])):
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            for target in sorted(graph[current]):
                if target in came_from:
                    continue
                came_from[target] = current
                if _within(target, forbidden):
                    if target not in found:
                        chain: list[str] = []
                        step: str | None = target
                        while step is not None:
                            chain.append(step)
                            step = came_from[step]
                        found[target] = chain[::-1]
                    continue  # what it imports in turn is its own contract's business
                queue.append(target)
    return [" -> ".join(chain) for chain in found.values()]


@pytest.mark.parametrize("layer, forbidden", CONTRACTS)
def test_layer_imports(layer: str, forbidden: tuple[str, ...]) -> None:
    broken = violations(import_graph(ROOT), layer, forbidden)
    assert not broken, f"{layer} must not import {', '.join(forbidden)}:\n" + "\n".join(broken)


def test_every_layer_of_a_contract_exists() -> None:
    graph = import_graph(ROOT)
    for contract in CONTRACTS:
        layer, forbidden = contract.values
        assert isinstance(layer, str) and isinstance(forbidden, tuple)
        for name in (layer, *forbidden):
            assert name in graph, f"{name} is not a package: the contract checks nothing"


@pytest.mark.parametrize("statement", [
    pytest.param("from propylon.config import KINDS\n", id="module-level"),
    pytest.param("def f():\n    from propylon.translate import translate\n", id="in-a-function"),
    pytest.param("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from propylon.standalone import BuildResult\n", id="type-only-indirect"),
])
def test_a_forbidden_import_is_found(tmp_path: Path, statement: str) -> None:
    """The checker itself: the package with one forbidden import added to a proxy module."""
    copy = tmp_path / "propylon"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    clock = copy / "proxy" / "clock.py"
    clock.write_text(clock.read_text(encoding="utf-8") + "\n" + statement, encoding="utf-8")
    broken = violations(import_graph(copy), "propylon.proxy", _COLD_PATH)
    assert broken and all("propylon.proxy.clock -> " in chain for chain in broken)
