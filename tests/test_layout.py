"""The layout the README promises, checked on the source: load → record → analyse → view.

Parsed with `ast`, nothing is imported: imports point down the stages only, the import graph
inside explorer/ has no circle, explorer/ never imports streamlit, and modules and functions
stay small unless a `# long: <why>` comment says why one may not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explorer"
STAGES = ("presets", "model", "record", "analyse", "views", "compare", "cli")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_MARK = "# long:"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> int:
    """Rank of a module's stage; explorer/__init__ and __main__ sit above every stage."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else len(STAGES)


def imported(module: str, tree: ast.Module) -> set[str]:
    """Every module named by an import anywhere in the file (function-local ones included)."""
    names: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)   # `from explorer.x import module`
    return names


TREES = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}
GRAPH = {m: {n for n in imported(m, t) if n in MODULES and n != m} for m, t in TREES.items()}


def test_imports_point_down_the_stages_only():
    upward = [f"{m} ({STAGES[stage(m)] if stage(m) < len(STAGES) else 'top'}) imports {n} ({STAGES[stage(n)]})"
              for m, targets in GRAPH.items() for n in sorted(targets) if stage(n) > stage(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles_inside_explorer():
    circles: list[str] = []
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                circles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


def test_explorer_never_imports_streamlit():
    found = [m for m, t in TREES.items() for n in imported(m, t) if n.split(".")[0] == "streamlit"]
    assert not found, found


def _marked(lines: list[str], first: int, last: int) -> bool:
    return any(LONG_MARK in line for line in lines[max(0, first): last])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small_unless_marked(module):
    lines = MODULES[module].read_text().splitlines()
    problems = []
    if len(lines) > MAX_MODULE_LINES and not _marked(lines, 0, 40):
        problems.append(f"{len(lines)} lines (over {MAX_MODULE_LINES}, no '{LONG_MARK}' near the top)")
    for node in ast.walk(TREES[module]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            size = node.end_lineno - first + 1
            if size > MAX_FUNCTION_LINES and not _marked(lines, first - 3, node.lineno + 3):
                problems.append(f"{node.name}() is {size} lines (over {MAX_FUNCTION_LINES}, no '{LONG_MARK}')")
    assert not problems, f"{module}: " + "; ".join(problems)
