"""Imports inside the package run one way: no module pair (or longer circle) imports each other.

Every import counts, including those under TYPE_CHECKING and inside functions: a circle hidden
there still ties the two modules together for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dotmac.events

PACKAGE_ROOT = Path(dotmac.events.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            # `from pkg import module` runs pkg's __init__ too: both are edges.
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_in_the_package() -> None:
    graph = _import_graph()
    assert "dotmac.events.engine.subscription" in graph  # the walk found the package
    assert _circles(graph) == []


def test_the_walk_sees_a_circle_hidden_under_type_checking() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _circles(graph) == [["a", "b"]]


def test_the_adapter_contract_depends_on_nothing_above_it() -> None:
    graph = _import_graph()
    assert graph["dotmac.events.transport"] == set()


def test_the_engine_never_imports_an_adapter_and_adapters_never_import_each_other() -> None:
    graph = _import_graph()
    engine = [m for m in graph if m.startswith("dotmac.events.engine")]
    for module in engine:
        assert not any(t.startswith("dotmac.events.adapters") for t in graph[module]), module
    for transport in ("redis", "kafka"):
        for module in (m for m in graph if m.startswith(f"dotmac.events.adapters.{transport}.")):
            others = {t for t in graph[module] if t.startswith("dotmac.events.adapters.")}
            assert all(
                t.startswith(
                    (
                        f"dotmac.events.adapters.{transport}",
                        f"dotmac.events.adapters.{transport}_config",
                    )
                )
                for t in others
            ), (module, others)
