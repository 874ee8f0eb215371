"""The layout the README promises: load → record → analyse → view, with the pages on top.

The import contracts (stages import downwards only, no circles at any depth in explorer/ or pages/,
explorer/ never imports streamlit or pages) are import-linter's, configured in pyproject.toml
([tool.importlinter]); this module runs it. What no tool checks is here, parsed with `ast`: modules
and functions stay small, in explorer/ and pages/, unless a `# long: <why>` comment says why not.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LONG_MARK = "# long:"
SOURCES = {str(p.relative_to(ROOT)): p for folder in ("explorer", "pages") for p in sorted((ROOT / folder).rglob("*.py"))}


def lint_imports() -> list[str]:
    """The import-linter command, next to this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("import-linter is not installed: `pip install -r requirements-test.txt -c constraints.txt`")
    return [found, "--no-cache"]


def test_import_contracts_hold():
    done = subprocess.run(lint_imports(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and " KEPT" in done.stdout


def _marked(lines: list[str], first: int, last: int) -> bool:
    return any(LONG_MARK in line for line in lines[max(0, first): last])


@pytest.mark.parametrize("path", sorted(SOURCES))
def test_modules_and_functions_stay_small_unless_marked(path):
    text = SOURCES[path].read_text()
    lines = text.splitlines()
    problems = []
    if len(lines) > MAX_MODULE_LINES and not _marked(lines, 0, 40):
        problems.append(f"{len(lines)} lines (over {MAX_MODULE_LINES}, no '{LONG_MARK}' near the top)")
    for node in ast.walk(ast.parse(text, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            size = node.end_lineno - first + 1
            if size > MAX_FUNCTION_LINES and not _marked(lines, first - 3, node.lineno + 3):
                problems.append(f"{node.name}() is {size} lines (over {MAX_FUNCTION_LINES}, no '{LONG_MARK}')")
    assert not problems, f"{path}: " + "; ".join(problems)
