"""Size limits made checkable: modules over 400 lines and functions over 50 lines (style.md §4).

    python tools/check_sizes.py [DIR ...]     (default: engine actors api scale_tests tests)

A function's size runs from its `def` line to its last line, decorators excluded; a nested
function counts on its own and inside its parent. Exits 1 when anything is over a limit.
"""

from __future__ import annotations

import ast
import pathlib
import sys

MODULE_LINES_MAX = 400
FUNCTION_LINES_MAX = 50
DEFAULT_DIRS = ("engine", "actors", "api", "scale_tests", "tests")


def oversized(path: pathlib.Path) -> list[str]:
    """One line per limit the file breaks: the module's length, then each long function."""
    text = path.read_text()
    found = []
    lines = len(text.splitlines())
    if lines > MODULE_LINES_MAX:
        found.append(f"{path}: module {lines} lines")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > FUNCTION_LINES_MAX:
                found.append(f"{path}:{node.lineno}: {node.name} {size} lines")
    return found


def main(argv: list[str]) -> int:
    found = [line for folder in (argv or DEFAULT_DIRS)
             for path in sorted(pathlib.Path(folder).rglob("*.py")) for line in oversized(path)]
    print("\n".join(found) if found else "sizes ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
