"""The import structure stays a directed graph: no module of ours imports (directly or
through others) a module that imports it back, at module level or inside a function.

Cycles are how a codebase loses its layers: views → tasks → services → models is the
direction here, and a service that needs a task sends it by name (`send_run_task`,
`app.send_task`). The graph is read from the source (ast), so the test is fast and
names the cycle it finds."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "core", "accounts", "labeling", "guidelines", "training", "webhooks", "judges",
            "erasure")


def first_party_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every first-party module `name` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = first_party_modules()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
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


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_services_and_selectors_never_import_tasks() -> None:
    """The direction is views/API -> tasks -> services -> models: a service that needs
    background work sends the task by name (core.runs.send_run_task, app.tasks[name])."""
    graph = import_graph()
    service_like = [name for name in graph if ".services" in name or ".selectors" in name
                    or name in {"training.runs", "training.registry", "training.generation", "training.snapshots",
                                "training.schedules", "labeling.importing"}]
    offenders = {name: sorted(t for t in graph[name] if t.endswith(".tasks")) for name in service_like}
    assert {name: tasks for name, tasks in offenders.items() if tasks} == {}


def test_the_engine_and_core_keep_their_boundaries() -> None:
    """training.engine never imports Django or an app; core imports nothing of ours but
    labeling.models (projects, memberships and audit events are what it is about)."""
    graph = import_graph()
    engine = {name: sorted(t for t in targets if not t.startswith("training.engine"))
              for name, targets in graph.items() if name.startswith("training.engine")}
    core = {name: sorted(t for t in targets if not t.startswith("core") and t != "labeling.models"
                         and not t.startswith("config"))
            for name, targets in graph.items() if name.startswith("core")}
    django_in_engine = sorted(
        path.relative_to(ROOT).as_posix() for path in (ROOT / "training" / "engine").rglob("*.py")
        if any(name == "django" or name.startswith("django.") for name in _imported_names(path)))
    assert {name: t for name, t in engine.items() if t} == {}
    assert django_in_engine == []
    assert {name: t for name, t in core.items() if t} == {}


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names
