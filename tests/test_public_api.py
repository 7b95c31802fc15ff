"""Public surface: __all__ is sorted, complete and importable; importing api starts no Ray."""

import subprocess
import sys

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


def test_importing_api_starts_no_ray_and_reads_no_environment():
    """A fresh interpreter imports api without initialising Ray."""
    code = "import api, ray, sys; sys.exit(1 if ray.is_initialized() else 0)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_api_testing_helpers_exist():
    """api.testing offers BridgeTestHelper and PerformanceTester."""
    from api.testing import BridgeTestHelper, PerformanceTester
    assert BridgeTestHelper and PerformanceTester


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
