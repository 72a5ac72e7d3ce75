"""The package's import graph: no cycle, no stage importing a later one, no shared code importing a stage.

Every module of ``ragd_train`` is parsed with :mod:`ast` (nothing is imported), and every
``import``/``from ... import`` in it counts: at module level, inside functions and under
``TYPE_CHECKING`` alike, since a lazy import is still a dependency.

The workflow's stages, in order, are the packages in :data:`STAGES`; a stage may use an earlier
stage, never a later one. The orchestrators (:data:`ORCHESTRATORS`) may use anything. Everything
else (``chat``, ``ragd`` and the top-level modules) is shared by several stages and imports none.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "ragd_train"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
STAGES = ("generate", "embeddings", "reranker", "llm", "evaluate")
ORCHESTRATORS = {f"{PACKAGE}.{name}" for name in ("cli", "management", "runner")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _owner(name: str) -> str | None:
    """The module ``name`` refers to: itself, else its longest prefix that is a module."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import obj`` imports mod
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
            targets = [t for t in targets if t in modules()] or [module]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                owner = _owner(target)
                if owner is not None and owner != name:
                    found.add(owner)
    return found


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imports_of(name, path)) for name, path in modules().items()}


def stage_of(name: str) -> int | None:
    """The index in :data:`STAGES` of the stage ``name`` belongs to, or None."""
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def find_cycle(edges: dict[str, frozenset[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read() -> None:
    """The parser sees the package (guards the other tests against passing on an empty graph)."""
    edges = graph()
    assert f"{PACKAGE}.cli" in edges and f"{PACKAGE}.generate.build" in edges
    assert f"{PACKAGE}.errors" in edges[f"{PACKAGE}.jsonl_io"]
    assert all(stage_of(f"{PACKAGE}.{stage}") is not None for stage in STAGES)


def test_find_cycle_reports_the_cycle() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_stage_imports_a_later_stage() -> None:
    bad = [
        f"{name} ({STAGES[stage_of(name)]}) imports {target} ({STAGES[stage_of(target)]})"
        for name, targets in graph().items()
        if stage_of(name) is not None
        for target in sorted(targets)
        if stage_of(target) is not None and stage_of(target) > stage_of(name)
    ]
    assert not bad, "a stage imports a later stage:\n" + "\n".join(bad)


def test_shared_code_imports_no_stage() -> None:
    bad = [
        f"{name} imports {target} (stage {STAGES[stage_of(target)]})"
        for name, targets in graph().items()
        if stage_of(name) is None and name not in ORCHESTRATORS
        for target in sorted(targets)
        if stage_of(target) is not None
    ]
    assert not bad, "shared code imports a stage:\n" + "\n".join(bad)
