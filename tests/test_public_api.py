"""Public surface: __all__ is sorted, complete and importable; importing api starts no Ray."""

import os
import pathlib
import subprocess
import sys

import pytest

import api
import engine

CONTRACT_NAMES = {
    "FFChatAppBridge", "FFChatDataLayer", "ChatAppStorageConfig", "ChatMessage", "ChatSession",
    "FFChatConfigFactory", "ChatConfigTemplate", "create_chat_config_for_development",
    "create_chat_config_for_production", "create_chat_config_for_testing", "get_chat_app_presets",
    "validate_chat_app_config", "optimize_chat_config", "get_recommended_config_for_use_case",
    "FFIntegrationHealthMonitor", "HealthCheckResult", "PerformanceMetric", "create_health_monitor",
    "quick_health_check", "diagnose_bridge_issues", "PerformanceMonitor", "MetricSample", "ChatIntegrationError",
    "ConfigurationError", "InitializationError", "StorageError", "SearchError", "PerformanceError", "ErrorCode",
    "create_validation_error", "create_missing_dependency_error", "wrap_storage_operation_error",
    "validate_bridge_system", "get_version", "get_module_info", "__version__"}


def test_api_all_is_exactly_the_contract_and_sorted():
    """api.__all__ is the contract's list, sorted, and every name resolves."""
    assert set(api.__all__) == CONTRACT_NAMES and api.__all__ == sorted(api.__all__)
    for name in api.__all__:
        assert getattr(api, name) is not None
    assert api.get_module_info()["name"] == "api" and api.get_version() == api.__version__


def test_engine_all_is_sorted_and_resolves():
    """engine.__all__ is sorted and every name resolves."""
    assert engine.__all__ == sorted(engine.__all__)
    for name in engine.__all__:
        assert getattr(engine, name) is not None


_IMPORT_WATCH = """
import os, pathlib, sys
root = pathlib.Path(sys.argv[1])
reads = []

def caller():
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("os", "_collections_abc", "collections.abc"):
        frame = frame.f_back
    return pathlib.Path(frame.f_code.co_filename) if frame is not None else None

def watched(method):
    def wrapper(self, *args):
        path = caller()
        if path is not None and path.is_relative_to(root) and path.relative_to(root).parts[0] in (
                "api", "engine", "actors"):
            reads.append(f"{path.relative_to(root)}: os.environ.{method.__name__}{args}")
        return method(self, *args)
    return wrapper

os._Environ.__getitem__ = watched(os._Environ.__getitem__)
os._Environ.__iter__ = watched(os._Environ.__iter__)
import api
import ray
print(reads)
sys.exit(1 if ray.is_initialized() or reads else 0)
"""


def test_importing_api_starts_no_ray_and_reads_no_environment():
    """A fresh interpreter imports api without initialising Ray, and no module of api, engine or actors
    reads or lists os.environ (os.getenv included) while it is imported."""
    root = pathlib.Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _IMPORT_WATCH, str(root)], capture_output=True, text=True,
                          cwd=root)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_the_environment_watch_sees_a_read_at_import(tmp_path):
    """The watch above is not vacuous: a module of api that reads the environment when imported is caught."""
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("import os\nHOME = os.environ.get('HOME')\n")
    done = subprocess.run([sys.executable, "-c", _IMPORT_WATCH, str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1 and "api/__init__.py: os.environ.__getitem__('HOME',)" in done.stdout, done


def test_api_testing_helpers_exist():
    """api.testing offers upstream's BridgeTestHelper and PerformanceTester, and imports no pytest."""
    import inspect

    from api.testing import BridgeTestHelper, PerformanceTester
    assert inspect.iscoroutinefunction(BridgeTestHelper.create_test_bridge)
    assert inspect.iscoroutinefunction(BridgeTestHelper.cleanup_test_bridge)
    assert inspect.iscoroutinefunction(PerformanceTester.benchmark_operation)
    assert list(inspect.signature(PerformanceTester.benchmark_operation).parameters) == ["operation_func",
                                                                                         "iterations"]
    with pytest.raises(AssertionError, match="Expected 30.0% improvement, got 10.0%"):
        PerformanceTester.assert_performance_improvement(90.0, 100.0)
    code = "import sys, api.testing; sys.exit(1 if 'pytest' in sys.modules else 0)"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_bridge_test_helper_round_trip(ray_runtime):
    """BridgeTestHelper creates a working temporary bridge and removes its directory."""
    import os

    from api.testing import BridgeTestHelper, PerformanceTester
    bridge = await BridgeTestHelper.create_test_bridge({"shard_count": 1})
    path = bridge.config.storage_path
    data = bridge.get_data_layer()
    session_id = await data.storage.create_session("helper", "h")
    timing = await PerformanceTester.benchmark_operation(
        lambda: data.store_chat_message("helper", session_id, {"role": "user", "content": "x"}), 3)
    assert timing["iterations"] == 3 and len(timing["all_times"]) == 3
    await BridgeTestHelper.cleanup_test_bridge(bridge)
    assert not os.path.exists(path)


async def test_validate_bridge_system_round_trip(ray_runtime):
    """validate_bridge_system runs a real store/history/search round trip."""
    assert await api.validate_bridge_system() is True
