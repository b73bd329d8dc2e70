"""The shape of the code: modules import only downwards, and nothing grows too big.

* No import cycle between the modules of ``src/unspool``. Every import of an unspool module
  counts, inside functions too, except those under ``if TYPE_CHECKING:`` (never executed)
  and those inside functions whose line (or the line above) says ``lazy`` in a comment: they
  exist only to keep ``import unspool`` light and must point downwards anyway.
* No module over 700 lines, no class over 400.
* SQL lives in the stores layer: only its modules import SQLAlchemy.

Run ``python tests/test_architecture.py`` to print the import graph and the largest modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "unspool"
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 400
# The stores layer: the schema, the one writer and the SQL of its batches, claiming a run,
# the writes that read first, and the reads.
STORES_LAYER = {
    "_schema.py", "_metadata_store.py", "_batch_sql.py", "_ownership.py", "_store_writes.py",
    "_dashboard_queries.py",
}
STORES_LAYER_PREFIX = "_queries"  # _queries.py and its per-table modules _queries_*.py


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            return [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        if node.module and node.module.split(".")[0] == "unspool":
            parts = node.module.split(".")
            return [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        return []
    return [a.name.split(".")[1] for a in node.names if a.name.startswith("unspool.")]


def import_graph() -> dict[str, set[str]]:
    """Module -> the unspool modules it imports (see the module docstring for what counts)."""
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        text = path.read_text()
        lines = text.splitlines()

        def visit(node: ast.AST, in_function: bool, name: str = name, lines: list[str] = lines) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    for other in child.orelse:
                        visit(other, in_function)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    found = [t for t in _targets(child) if t in modules and t != name]
                    context = " ".join(lines[max(child.lineno - 2, 0):child.lineno])
                    if found and not (in_function and "#" in context and "lazy" in context):
                        graph[name].update(found)
                    continue
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

        visit(ast.parse(text), False)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Lines per module and per class (``module.Class``)."""
    modules, classes = {}, {}
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        modules[path.name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                classes[f"{path.stem}.{node.name}"] = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    return modules, classes


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_over_700_lines_and_no_class_over_400() -> None:
    modules, classes = sizes()
    assert {m: n for m, n in modules.items() if n > MAX_MODULE_LINES} == {}
    assert {c: n for c, n in classes.items() if n > MAX_CLASS_LINES} == {}


def sqlalchemy_importers() -> set[str]:
    """Modules of ``src/unspool`` (subpackages too, as paths) that import SQLAlchemy anywhere,
    inside functions and under ``TYPE_CHECKING`` included."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "sqlalchemy" or n.startswith("sqlalchemy.") for n in names):
                found.add(path.relative_to(PACKAGE).as_posix())
    return found


def test_only_the_stores_layer_imports_sqlalchemy() -> None:
    outside = {
        m for m in sqlalchemy_importers()
        if m not in STORES_LAYER and not m.startswith(STORES_LAYER_PREFIX)
    }
    assert outside == set(), f"SQL outside the stores layer; move it to _queries or the store's writer: {outside}"


if __name__ == "__main__":
    graph = import_graph()
    print(f"{len(graph)} modules; in an import cycle: {sum(len(c) for c in cycles(graph))}")
    for module in sorted(graph):
        print(f"  {module} -> {', '.join(sorted(graph[module])) or '(nothing)'}")
    modules, classes = sizes()
    print("largest modules:", ", ".join(f"{m} {n}" for m, n in sorted(modules.items(), key=lambda x: -x[1])[:6]))
    print("largest classes:", ", ".join(f"{c} {n}" for c, n in sorted(classes.items(), key=lambda x: -x[1])[:6]))
