"""Layering is executable: every module of engine/, actors/, api/ and scale_tests/ is parsed with `ast`,
and every imported module *and name* is checked against the rules below.

- engine never imports ray, asyncio, actors, api or scale_tests;
- actors never import api or scale_tests;
- api never imports scale_tests (not through importlib strings either), and from engine only the
  data modules of `API_MAY_USE_FROM_ENGINE`: a name imported from engine counts where it is
  defined, so `from engine import Shard` fails as `from engine.shard import Shard` does;
- scale_tests (the harness) may drive every layer.
"""

import ast
import functools
import importlib.metadata
import pathlib
import re
import tomllib

import pytest

import api.__main__ as api_main

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "actors", "api", "scale_tests")
# Packages (with all their submodules) a layer must never import.
FORBIDDEN = {
    "engine": {"ray", "asyncio", "actors", "api", "scale_tests"},
    "actors": {"api", "scale_tests"},
    "api": {"scale_tests"},
    "scale_tests": set(),
}
# The engine modules api may import from: data, never machinery (MessageLog, ShardCache, SearchIndex,
# Shard, ShardState, FileSystem, segments, codec, compaction...). A name counts where it is defined.
API_MAY_USE_FROM_ENGINE = {
    "engine.config": "config models (EngineConfig, Durability, MB)",
    "engine.errors": "the error hierarchy",
    "engine.models": "value validation: ids, messages, timestamps, session and profile records",
    "engine.operations": "the typed operations and replies that cross the Ray boundary",
    "engine.backup_ops": "the typed operations of an online backup",
    "engine.routing": "shard_index_for / user_shard_index",
    "engine.storable": "storable-value checks and their limits",
    "engine.text": "query-term helpers",
    "engine.metrics": "latency percentiles and the metrics tally (pure functions and counts over numbers)",
}
# A string that names a module, optionally with an attribute: an entry point value or an import_module path.
_MODULE_STRING = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?")
_IMPORT_FUNCTIONS = {"import_module", "__import__"}


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_path(module):
    base = ROOT.joinpath(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _absolute(module, level, target, is_package):
    """`from <level dots><target> import ...` inside `module`, as an absolute module name."""
    if not level:
        return target or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def _imports(tree, module, is_package):
    """(imported module, imported name or None, line) for every import, including string ones."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node.level, node.module, is_package)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if alias.name != "*" and _source_path(submodule):
                    yield submodule, None, node.lineno
                else:
                    yield source, alias.name, node.lineno
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in _IMPORT_FUNCTIONS and node.args and isinstance(node.args[0], ast.Constant):
                yield str(node.args[0].value), None, node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            if _MODULE_STRING.fullmatch(node.value):  # "scale_tests.__main__:main", an entry point value
                yield node.value.split(":")[0], None, node.lineno


@functools.cache
def _defined_in(module, name):
    """The module where `name`, as seen in `module`, is defined: follows re-exports (`from .x import name`)."""
    path = _source_path(module)
    if path is None:
        return module
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node.level, node.module, path.name == "__init__.py")
                    submodule = f"{source}.{alias.name}"
                    return submodule if _source_path(submodule) else _defined_in(source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname == name:
                    return alias.name
    return module


def _within(module, packages):
    return any(module == package or module.startswith(package + ".") for package in packages)


def violations(source, module, is_package=False):
    """The forbidden import edges of one module's `source`; `module` is its dotted name (api.bridge)."""
    layer = module.split(".")[0]
    problems = []
    for target, name, line in _imports(ast.parse(source), module, is_package):
        shown = f"{module}:{line} imports {target}" + (f".{name}" if name else "")
        if _within(target, FORBIDDEN[layer]):
            problems.append(shown)
        elif layer == "api" and _within(target, {"engine", "actors"}):
            # Through actors too: `from actors.shard_actor import Shard` is engine machinery.
            origin = _defined_in(target, name) if name and name != "*" else target
            if _within(origin, {"engine"}) and origin not in API_MAY_USE_FROM_ENGINE:
                problems.append(f"{shown} (defined in {origin}, not an allowed engine data module)")
    return problems


def _modules():
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_every_package_has_a_rule_and_every_module_is_checked():
    """No top-level package escapes the rules, and the walk reaches every module of every layer."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(PACKAGES) == set(FORBIDDEN)
    for package in PACKAGES:
        assert any(path.relative_to(ROOT).parts[0] == package for path in _modules()), package


def test_no_forbidden_import_edges():
    """Walk every module of engine/, actors/, api/ and scale_tests/ and fail on a forbidden import."""
    problems = []
    for path in _modules():
        problems += violations(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert problems == []


@pytest.mark.parametrize("snippet", [
    "from engine import Shard",
    "from engine.shard import Shard",
    "import engine.shard",
    "import engine",
    "from engine import shard_cache",
    "from engine import MessageLog as Log",
    "from engine.search_index import SearchIndex",
    "from ..engine.shard_state import ShardState",
    "from engine.filesystem import FileSystem",
    "from actors.shard_actor import Shard",
    "from actors.router_actor import flow_for",
    "import scale_tests.__main__",
    "from scale_tests import measure",
    "importlib.import_module('scale_tests.__main__')",
    "BENCH = 'scale_tests.__main__:main'",
])
def test_checker_rejects_machinery_and_harness_imports_in_api(snippet):
    """The checker itself: an api module naming engine machinery or the harness is rejected."""
    assert violations(snippet + "\n", "api._snippet") != []


@pytest.mark.parametrize("snippet", [
    "from engine.errors import EngineError, InvalidInput",
    "from engine import errors",
    "from engine.config import MB, EngineConfig",
    "from engine.models import validate_id",
    "from engine.operations import Operation",
    "from engine.routing import shard_index_for",
    "from engine.storable import MAX_BATCH_CONTENT_BYTES",
    "from engine.text import query_terms",
    "from engine import validate_id",
    "from . import runtime",
])
def test_checker_accepts_engine_data_in_api(snippet):
    """Data from engine (errors, config, value validation, operations, routing, text) stays allowed."""
    assert violations(snippet + "\n", "api._snippet") == []


@pytest.mark.parametrize("snippet, module", [
    ("import ray", "engine._snippet"), ("import asyncio", "engine._snippet"),
    ("from api import FFChatAppBridge", "engine._snippet"), ("from ..actors import deploy", "engine._snippet"),
    ("from api.errors import ChatIntegrationError", "actors._snippet"),
])
def test_checker_rejects_upward_imports(snippet, module):
    """engine imports no ray/asyncio/actors/api; actors import no api."""
    assert violations(snippet + "\n", module) != []


def _bench(argv):
    return 0


def test_bench_is_found_through_the_entry_point_group(monkeypatch):
    """`chat-bridge bench` loads the harness from the ff_chat_bridge.commands entry point, never by import."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][api_main.PLUGIN_GROUP] == {"bench": "scale_tests.__main__:main",
                                                             "verify": "engine.verify:main"}
    assert api_main.PLUGIN_GROUP == "ff_chat_bridge.commands"
    point = importlib.metadata.EntryPoint("bench", f"{__name__}:_bench", api_main.PLUGIN_GROUP)
    monkeypatch.setattr(api_main, "entry_points", lambda group: [point] if group == api_main.PLUGIN_GROUP else [])
    assert api_main._plugin("bench") is _bench
    with pytest.raises(SystemExit):
        api_main._plugin("missing")


def test_one_api_module_owns_every_actor_call():
    """Only api/backend.py calls `.remote(`: the rest of api asks it through methods."""
    callers = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "api").rglob("*.py")
                     if ".remote(" in path.read_text())
    assert callers == ["api/backend.py"]
