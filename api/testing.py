"""Test helpers with upstream's shapes: temporary bridges and a simple operation benchmark (no pytest)."""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from typing import Any, Awaitable, Callable

TEMP_TEST_DATA_PREFIX = "ff_chat_bridge_test_"
PERFORMANCE_TEST_ITERATIONS = 10


class TestDataManager:
    """Creates temporary storage paths and removes them."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.temp_dirs: list[str] = []

    def create_temp_storage_path(self) -> str:
        directory = tempfile.mkdtemp(prefix=TEMP_TEST_DATA_PREFIX)
        self.temp_dirs.append(directory)
        return directory

    def cleanup_all(self) -> None:
        for directory in self.temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.temp_dirs.clear()


# The temporary directory of each test bridge, removed by cleanup_test_bridge (weak: a bridge that is
# never cleaned up does not stay alive because of this table).
_CLEANUPS: "weakref.WeakKeyDictionary[Any, Callable[[], None]]" = weakref.WeakKeyDictionary()


class BridgeTestHelper:
    """Create a bridge on a temporary path, and clean both up."""

    @staticmethod
    async def create_test_bridge(config_overrides: dict[str, Any] | None = None) -> Any:
        from .bridge import FFChatAppBridge
        manager = TestDataManager()
        options = {"performance_mode": "balanced", **(config_overrides or {})}
        try:
            bridge = await FFChatAppBridge.create_for_chat_app(manager.create_temp_storage_path(), options)
        except BaseException:
            manager.cleanup_all()
            raise
        _CLEANUPS[bridge] = manager.cleanup_all
        return bridge

    @staticmethod
    async def cleanup_test_bridge(bridge: Any) -> None:
        try:
            await bridge.close()
        finally:
            cleanup = _CLEANUPS.pop(bridge, None)
            if cleanup is not None:
                cleanup()


class PerformanceTester:
    """Times an async operation over a number of iterations."""

    @staticmethod
    async def benchmark_operation(operation_func: Callable[[], Awaitable[Any]],
                                  iterations: int = PERFORMANCE_TEST_ITERATIONS) -> dict[str, Any]:
        times = []
        for _ in range(iterations):
            started = time.perf_counter()
            await operation_func()
            times.append((time.perf_counter() - started) * 1000)
        return {"average_ms": sum(times) / len(times), "min_ms": min(times), "max_ms": max(times),
                "iterations": iterations, "all_times": times}

    @staticmethod
    def assert_performance_improvement(new_time: float, baseline_time: float,
                                       expected_improvement: float = 0.3) -> None:
        actual = (baseline_time - new_time) / baseline_time
        assert actual >= expected_improvement, f"Expected {expected_improvement:.1%} improvement, got {actual:.1%}"


__all__ = ["BridgeTestHelper", "PerformanceTester", "TestDataManager"]
