"""Size limits made executable: no module over 400 lines, no function over 50 (the bar issue 9 set,
inside style.md §4's hard caps). A function runs from its `def` line to its last line, decorators
excluded; a nested function counts on its own and inside its parent."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULE_LINES_MAX = 400
FUNCTION_LINES_MAX = 50
CHECKED = ("engine", "actors", "api", "scale_tests", "tests")


def _modules():
    return [path for directory in CHECKED for path in sorted((ROOT / directory).rglob("*.py"))]


def oversized(source: str, name: str) -> list[str]:
    """What in `source` is over a limit, as 'name: ...' lines."""
    problems = []
    lines = source.count("\n") + (not source.endswith("\n") and bool(source))
    if lines > MODULE_LINES_MAX:
        problems.append(f"{name}: {lines} lines (module limit {MODULE_LINES_MAX})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > FUNCTION_LINES_MAX:
                problems.append(f"{name}:{node.lineno} {node.name}: {length} lines (function limit {FUNCTION_LINES_MAX})")
    return problems


def test_no_module_or_function_is_over_its_limit():
    """Every module of the project (tests included) is within the size limits."""
    problems = [problem for path in _modules()
                for problem in oversized(path.read_text(), str(path.relative_to(ROOT)))]
    assert problems == []


@pytest.mark.parametrize("source, expected", [
    ("x = 1\n" * 401, "401 lines"),
    ("def f():\n" + "    x = 1\n" * 50, "f: 51 lines"),
])
def test_the_check_sees_an_oversized_module_and_function(source, expected):
    """The checker itself: a 401-line module and a 51-line function are reported."""
    assert any(expected in problem for problem in oversized(source, "snippet"))
