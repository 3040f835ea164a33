"""The layering in docs/architecture.md holds, no import cycle exists, and generated docs match the code.

The import graph is read from the source (``ast``), not by importing: every ``import`` and
``from ... import`` anywhere in a module counts, at its top, inside a function or under
``if TYPE_CHECKING:``. An import names a module: ``from medimg.io import dicom`` names the
subpackage ``medimg.io.dicom``, ``from medimg.io import Volume`` the package ``medimg.io``
(its ``__init__``). A package's ``__init__`` that re-exports from its own submodules imports
them like any other module, so a submodule importing its package back would be a cycle.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "medimg"

# The documented order: each medimg package (a subpackage, or a top-level module) and what it may
# import. docs/architecture.md shows the same table (checked below); ``medimg`` is the package root
# (``medimg/__init__.py``: the version), ``__main__`` is ``python -m medimg``.
_BASE = {"io", "config", "errors", "extras"}  # the ground floor: every layer from data up may use it
_MODEL = {"data", "models", "evaluation", "tasks"} | _BASE  # what serving and studies build on
ALLOWED: dict[str, set[str]] = {
    "medimg": set(),
    "errors": set(),
    "templating": set(),
    "telemetry": set(),
    "extras": {"errors"},
    "io": {"errors", "extras"},
    "config": {"errors", "extras"},
    "tasks": {"errors"},
    "data": {"io", "config", "tasks", "errors", "extras"},
    "models": {"io", "config", "tasks", "errors", "extras"},
    "evaluation": {"io", "tasks", "errors", "extras", "templating"},
    "inference": _MODEL | {"telemetry", "medimg"},
    "training": _MODEL | {"inference", "telemetry", "medimg"},
    "explain": _MODEL | {"inference", "templating"},
    "detection": _MODEL - {"tasks"} | {"training", "inference", "templating", "telemetry", "medimg"},
    "generative": _BASE - {"extras"}
    | {"training", "inference", "data", "models", "evaluation", "templating", "telemetry", "medimg"},
    "cli": _MODEL
    | {"detection", "generative", "training", "inference", "explain", "templating", "telemetry", "medimg"},
    "__main__": {"cli"},
}

# The rows of docs/architecture.md's picture, bottom first: a package imports only rows below its own.
TIERS: tuple[set[str], ...] = (
    {"medimg", "errors", "templating", "telemetry"},
    {"extras"},
    {"io", "config", "tasks"},
    {"data", "models", "evaluation"},
    {"inference"},
    {"training", "explain"},
    {"detection", "generative"},
    {"cli"},
    {"__main__"},
)


@cache
def _modules() -> dict[str, Path]:
    """Every module of medimg by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _package(module: str) -> str:
    """``medimg.io.dicom.headers`` -> ``io``; ``medimg.errors`` -> ``errors``; ``medimg`` -> ``medimg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medimg"


def _resolve(name: str) -> str | None:
    """The medimg module a dotted name lives in (the longest prefix that is a module)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in _modules():
            return ".".join(parts)
        parts.pop()
    return None


@cache
def _imports(module: str) -> tuple[tuple[str, int], ...]:
    """(imported medimg module, line) for every import statement anywhere in ``module``."""
    path = _modules()[module]
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, one level up per extra dot
                up = here[: len(here) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in _modules() else base for a in node.names]
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "medimg" else None
            if target is not None and target != module:
                found.append((target, node.lineno))
    return tuple(found)


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _ in _imports(m)} for m in _modules()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


def test_every_package_has_a_documented_place():
    packages = {_package(m) for m in _modules()}
    assert packages == set(ALLOWED), (
        f"undocumented: {sorted(packages - set(ALLOWED))}; gone: {sorted(set(ALLOWED) - packages)} "
        "(add the package to ALLOWED here and to the table in docs/architecture.md)"
    )


def test_documented_order_is_strict():
    """The table itself is an order: no package may import, even through others, one that imports it."""
    assert all(deps <= set(ALLOWED) for deps in ALLOWED.values())
    assert _cycles(ALLOWED) == []
    assert sorted(p for tier in TIERS for p in tier) == sorted(ALLOWED), "every package in one row"
    row = {p: k for k, tier in enumerate(TIERS) for p in tier}
    upward = [f"{p} -> {d}" for p, deps in ALLOWED.items() for d in deps if row[d] >= row[p]]
    assert not upward, f"allowed imports that do not go down a row of the picture: {upward}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downwards(package):
    bad = [
        f"{_modules()[m].relative_to(ROOT)}:{line} imports {target} ({_package(target)!r} is not below {package!r})"
        for m in sorted(_modules())
        if _package(m) == package
        for target, line in _imports(m)
        if _package(target) != package and _package(target) not in ALLOWED[package]
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        graph[_package(module)] |= {_package(t) for t in targets} - {_package(module)}
    assert _cycles(dict(graph)) == []


def test_no_import_cycle_between_modules():
    graph = _graph()
    cycles = _cycles(graph)
    report = [
        "cycle: "
        + ", ".join(c)
        + "\n  "
        + "\n  ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in cycles
    ]
    assert not cycles, "\n".join(report)


def test_the_graph_sees_every_kind_of_import():
    """Guards the parser: imports inside functions, under TYPE_CHECKING, relative, of subpackages."""
    model_io = {t for t, _ in _imports("medimg.inference.model_io")}
    assert "medimg.models.networks" in model_io  # imported inside a function
    assert "medimg.io.dicom.frames" in {t for t, _ in _imports("medimg.io.dicom.slicetiming")}
    assert "medimg.io.atomic" in {t for t, _ in _imports("medimg.io")}  # an __init__ re-export counts
    assert "medimg" in {t for t, _ in _imports("medimg.training.run")}  # from medimg import __version__
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_architecture_doc_shows_the_enforced_table():
    """docs/architecture.md's table lists, per package, exactly the packages ALLOWED lets it import."""
    text = (ROOT / "docs/architecture.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and re.fullmatch(r"`[\w.]+`", cells[0]) and cells[0].strip("`") in ALLOWED:
            rows[cells[0].strip("`")] = {n for n in re.findall(r"`([\w.]+)`", cells[1]) if n in ALLOWED}
    assert rows == ALLOWED, (
        "docs/architecture.md's table differs from ALLOWED in tests/core/test_architecture.py"
    )


def test_generated_docs_are_current():
    from medimg.cli.reference import cli_reference
    from medimg.config.reference import reference_document

    assert (ROOT / "docs/workflow-reference.md").read_text().strip() == reference_document().strip(), (
        "docs/workflow-reference.md is stale: run `make docs`"
    )
    assert (ROOT / "docs/cli.md").read_text().strip() == cli_reference().strip(), (
        "docs/cli.md is stale: run `make docs`"
    )


def test_no_task_name_comparison_outside_the_strategies() -> None:
    """Layers read a task's facts (``medimg.tasks``) instead of comparing its name (issue 18).

    Any ``task == "..."`` / ``task != "..."`` (also ``wf.task``, ``summary.task`` and the like,
    in code and in the packaged templates) outside ``medimg/tasks/`` and the schema is a branch
    a new task would have to find.
    """
    name = r"""["'][a-z_]+["']"""
    pattern = re.compile(
        rf"""\btask\s*(==|!=)\s*{name}|{name}\s*(==|!=)\s*[\w.]*task\b|\btask\s+(not\s+)?in\s*[(\[{{]\s*{name}"""
    )
    found = []
    for path in sorted(PKG.rglob("*")):
        if path.suffix not in (".py", ".html", ".j2"):
            continue
        if (PKG / "tasks") in path.parents or (PKG / "config") in path.parents:  # the strategies, the schema
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "task names compared outside medimg/tasks:\n" + "\n".join(found)
