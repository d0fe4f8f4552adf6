"""The determinism core's modules import each other without a loop, counting imports inside
functions too (a loop held together by a function-level import breaks when the order changes)."""

import ast
from pathlib import Path

import sglang_tokenweave.determinism as package

PACKAGE = package.__name__
ROOT = Path(package.__file__).parent


def _siblings_imported(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and node.module.startswith(PACKAGE + "."):
                base = node.module[len(PACKAGE) + 1:]
            else:
                continue
            # ``from . import a, b`` names modules; ``from .a import x`` names module a.
            found.update([alias.name for alias in node.names] if base is None else [base.split(".")[0]])
        elif isinstance(node, ast.Import):
            found.update(a.name[len(PACKAGE) + 1:].split(".")[0] for a in node.names
                         if a.name.startswith(PACKAGE + "."))
    return found & modules


def _import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"}
    return {m: _siblings_imported(ROOT / f"{m}.py", modules) for m in sorted(modules)}


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = "done"
        return []

    for start in graph:
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return []


def test_graph_sees_the_sampling_modules_imports():
    graph = _import_graph()
    assert {"sampling_plan", "sampling_kernel"} <= graph["sampling"]
    assert {"sampling_plan", "sampling_kernel"} <= graph["row_table"]
    assert "sampling_plan" in graph["sampling_kernel"]


def test_no_import_loop():
    cycle = _find_cycle(_import_graph())
    assert cycle == [], " -> ".join(cycle)


def test_find_cycle_reports_a_loop():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
