"""engine/ type-checks under mypy --strict (the style guide's rule, made executable)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_engine_passes_mypy_strict():
    """`mypy --strict engine` reports no issues."""
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                             "--cache-dir", "/tmp/ffchat-mypy-cache", "engine"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
