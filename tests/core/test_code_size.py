"""Issue 18's size limits hold: short functions, a short ``run_workflow``, thin CLI modules.

Measured with ``ast``: a function's length is ``end_lineno - lineno + 1`` (its decorators are
not counted, nested functions count towards the function that holds them and are checked on
their own as well). A CLI module's length is its number of lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "medimg"

MAX_FUNCTION_LINES = 60
MAX_RUN_WORKFLOW_LINES = 40
MAX_CLI_MODULE_LINES = 120

# Functions that are pure data tables and may be longer, as "path:function": reason.
DATA_TABLES: dict[str, str] = {}


def _functions() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                found.append((rel, node.name, node.end_lineno - node.lineno + 1))
    return found


def test_no_function_over_the_limit() -> None:
    too_long = [
        f"{rel}:{name}:{lines}"
        for rel, name, lines in _functions()
        if lines > MAX_FUNCTION_LINES and f"{rel}:{name}" not in DATA_TABLES
    ]
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: " + ", ".join(too_long)


def test_data_table_allow_list_is_current() -> None:
    present = {f"{rel}:{name}" for rel, name, lines in _functions() if lines > MAX_FUNCTION_LINES}
    stale = sorted(set(DATA_TABLES) - present)
    assert not stale, f"allow-listed functions no longer over the limit (remove them): {stale}"


def test_run_workflow_is_short() -> None:
    lengths = [f"{rel}:{name}:{lines}" for rel, name, lines in _functions() if name == "run_workflow"]
    assert lengths, "run_workflow not found"
    too_long = [entry for entry in lengths if int(entry.rsplit(":", 1)[1]) > MAX_RUN_WORKFLOW_LINES]
    assert not too_long, f"run_workflow over {MAX_RUN_WORKFLOW_LINES} lines: {too_long}"


def test_cli_modules_are_thin() -> None:
    too_long = []
    for path in sorted((PKG / "cli").glob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_CLI_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT).as_posix()}:{lines}")
    assert not too_long, f"cli modules over {MAX_CLI_MODULE_LINES} lines: " + ", ".join(too_long)
