"""The house's rules, checked on the code as it is: the import-linter contracts of pyproject.toml hold (layers, the
engine imports nothing else of stepjepa, no library module imports a command) and no two modules import each other,
directly or around a loop (type-checking imports included)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm over direct imports)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_the_cycle_finder_finds_a_loop_and_nothing_else():
    """The finder itself, on a hand-made graph: a -> b -> c -> a is one cycle; d -> a is not part of it."""
    graph = grimp.ImportGraph()
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.d", "p.a")):
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_no_module_imports_itself_around_a_loop():
    graph = grimp.build_graph("stepjepa")
    assert import_cycles(graph) == []


def test_the_import_contracts_of_pyproject_hold(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "3 kept, 0 broken" in out


@pytest.mark.parametrize("package", ["core", "data", "training", "evaluation", "experiments", "bench"])
def test_each_package_says_what_it_owns(package):
    import importlib

    doc = importlib.import_module(f"stepjepa.{package}").__doc__
    assert doc and len(doc.split()) >= 8
