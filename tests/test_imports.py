"""The house's floor plan, checked: no import circle (function-level imports included) and no upward import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> folder, as pyproject's package-dir maps them
FOLDERS = {
    "metacompress.compressors": ROOT / "compressors",
    "metacompress.envs": ROOT / "envs",
    "metacompress.agents": ROOT / "agents",
    "metacompress": ROOT / "metacompress",
}
# lower floors may import only these modules of the roof
SHARED_ROOF = {"metacompress.errors", "metacompress._version"}
FLOORS = ["metacompress.compressors", "metacompress.envs", "metacompress.agents"]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            found.setdefault(name, path)
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every metacompress module ``path`` imports, at any depth of the file (functions included)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t for t in targets if t in modules and t != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_no_import_circle(graph):
    """Package faces (``__init__``) only re-export, so edges into a package's own face are left out."""
    def edges(module: str) -> set[str]:
        return {t for t in graph[module] if not module.startswith(t + ".")}

    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges(module)):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("floor", FLOORS)
def test_no_upward_import(graph, floor):
    above = FLOORS[FLOORS.index(floor) + 1 :]
    bad = []
    for module, targets in graph.items():
        if not module.startswith(floor):
            continue
        for target in targets:
            roof = not any(target.startswith(f) for f in FLOORS) and target not in SHARED_ROOF
            if roof or any(target.startswith(f) for f in above):
                bad.append(f"{module} -> {target}")
    assert bad == []
