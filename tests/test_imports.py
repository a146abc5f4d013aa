"""The package's import graph: every module of nxbar/ imports, and no chain of imports leads back to itself."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nxbar"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The nxbar modules `path` imports (at any depth of its code: a function-level import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` depends on the module pkg.sub; `from mod import name` on mod
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the nxbar modules it imports} of every module below nxbar/."""
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(paths)) - {m} for m, p in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert "nxbar.study.runner" in graph and "nxbar.evaluation" in graph
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_every_nxbar_import_names_a_module_of_this_checkout():
    """An import of a module that is gone (renamed or moved) fails here, whatever else is installed."""
    paths = {_module(p): p for p in PACKAGE.rglob("*.py")}
    root = PACKAGE.parent
    files = [root / "cli.py", *(p for d in ("nxbar", "tests", "tools", "benchmarks") for p in (root / d).rglob("*.py"))]
    missing = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("nxbar"):
                missing |= {f"{path.name}: {node.module}"} - {f"{path.name}: {m}" for m in paths}
            elif isinstance(node, ast.Import):
                missing |= {f"{path.name}: {a.name}" for a in node.names
                            if a.name.startswith("nxbar") and a.name not in paths}
    assert not missing, sorted(missing)
