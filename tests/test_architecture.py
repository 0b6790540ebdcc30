"""The package's rooms import each other without cycles (module- and function-level imports counted).

A room is a top-level module or sub-package of `robustcompress` (`compression`, `evaluation`,
`stages.py` ...). Imports inside `if TYPE_CHECKING:` blocks are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "robustcompress"
PACKAGE = "robustcompress"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(path: Path) -> list[str]:
    """Every module `path` imports at run time (absolute names), TYPE_CHECKING blocks excluded."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    skipped: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            # `from robustcompress.x import y` may import the submodule x.y
            found += [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
    return [name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def _is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _room(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return PACKAGE  # the package's own __init__
    candidate = SRC / parts[1]
    return parts[1] if candidate.is_dir() or candidate.with_suffix(".py").is_file() else None


def room_graph() -> dict[str, dict[str, set[str]]]:
    """room -> {imported room: {"module -> module", ...}}."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = _module_name(path)
        src_room = _room(source)
        graph.setdefault(src_room, {})
        for target in _imports(path):
            dst_room = _room(target)
            if dst_room is None or dst_room == src_room:
                continue
            graph[src_room].setdefault(dst_room, set()).add(f"{source} -> {target}")
    return graph


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_and_its_absence():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = room_graph()
    # the CLI imports the library inside functions too; the graph must count those
    assert "cli" in graph and len(graph["cli"]) >= 5
    assert "robustcompress.cli.core -> robustcompress.data" in graph["cli"]["data"] or graph["cli"]["data"]


def test_rooms_import_each_other_without_cycles():
    graph = room_graph()
    cycle = find_cycle({room: set(targets) for room, targets in graph.items()})
    if cycle:
        lines = []
        for a, b in zip(cycle, cycle[1:]):
            lines += [f"{a} -> {b}:"] + [f"    {edge}" for edge in sorted(graph[a][b])]
        raise AssertionError("import cycle between rooms " + " -> ".join(cycle) + "\n" + "\n".join(lines))
