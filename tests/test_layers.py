"""The package's modules import each other in layers: no import cycle, read with ``ast``; and its
packages point one way: no two of them (``data``, ``text``, ``benchmark``, ..., or a top-level
module) import each other, even through modules that form no cycle.

Every import counts, at module level or inside a function (a run-time import is still a
dependency), and so does ``importlib.import_module("recbole_mtl...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_mtl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` refers to (``a.b.C`` -> ``a.b`` when C is not a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """``{module: {package modules it imports}}`` for every module of the package."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                found = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found = [node.args[0].value]
            for target in found:
                if target.split(".")[0] != "recbole_mtl":
                    continue
                module = _resolve(target, modules)
                if module and module != name and not name.startswith(module + "."):
                    targets.add(module)  # a package's own __init__ runs first anyway
        graph[name] = targets
    return graph


def _unit(module: str) -> str:
    """The package ``module`` belongs to: ``recbole_mtl.data.validate.reader`` -> ``recbole_mtl.data``
    (a top-level module is its own: ``recbole_mtl.cli``)."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``{package: {packages its modules import}}`` from the module graph, imports within a package left out."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_unit(module), set()).update(_unit(t) for t in targets if _unit(t) != _unit(module))
    return packages


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_names_it():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "recbole_mtl.errors" in graph["recbole_mtl.cli"]  # imported inside functions only


def test_no_import_cycle_among_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_package_graph_sees_two_packages_that_import_each_other_without_a_module_cycle():
    modules = {"recbole_mtl.data.a": {"recbole_mtl.text.b"}, "recbole_mtl.text.b": {"recbole_mtl.data.c"},
               "recbole_mtl.data.c": set(), "recbole_mtl.cli": {"recbole_mtl.data.a"}}
    assert find_cycle(modules) is None
    packages = package_graph(modules)
    assert packages == {"recbole_mtl.data": {"recbole_mtl.text"}, "recbole_mtl.text": {"recbole_mtl.data"},
                        "recbole_mtl.cli": {"recbole_mtl.data"}}
    assert find_cycle(packages) == ["recbole_mtl.data", "recbole_mtl.text", "recbole_mtl.data"]


def test_packages_point_one_way():
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "packages that import each other: " + " -> ".join(cycle)


def test_text_sits_above_data():
    """``text`` builds user texts from ``data``'s training windows; ``data`` knows the text-feature files
    only through :mod:`recbole_mtl.data.feature_files` (where they live, their sidecar checks)."""
    packages = package_graph(import_graph())
    assert "recbole_mtl.data" in packages["recbole_mtl.text"]
    assert "recbole_mtl.text" not in packages["recbole_mtl.data"]
