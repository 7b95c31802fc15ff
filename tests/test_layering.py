"""Layering is executable: engine never imports ray/actors/api/asyncio; api never imports engine machinery."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "engine": {"ray", "actors", "api", "asyncio"},
    "actors": {"api"},
    "api": {"scale_tests", "engine.filesystem", "engine.simulated_filesystem", "engine.segment", "engine.compaction",
            "engine.shard_state", "engine.verify",
            "engine.message_log", "engine.fence", "engine.recovery", "engine.active_segment", "engine.upkeep",
            "engine.compactor", "engine.shard_cache", "engine.search_index", "engine.shard",
            "engine.session_store", "engine.codec"},
}


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).parts[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield package + "." + (node.module or "")
            else:
                yield node.module or ""


def test_no_forbidden_import_edges():
    """Walk every module of engine/, actors/ and api/ and fail on a forbidden import."""
    problems = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imports(path):
                for bad in forbidden:
                    if name == bad or name.startswith(bad + "."):
                        problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert problems == []


def test_one_api_module_owns_every_actor_call():
    """Only api/backend.py calls `.remote(`: the rest of api asks it through methods."""
    callers = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "api").rglob("*.py")
                     if ".remote(" in path.read_text())
    assert callers == ["api/backend.py"]
