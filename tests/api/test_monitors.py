"""Health monitor and performance monitor over a live bridge."""

import time
from datetime import datetime, timedelta

import pytest

from api import (FFIntegrationHealthMonitor, PerformanceMonitor, create_health_monitor, diagnose_bridge_issues,
                 quick_health_check)
from tests.factories import message

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray


# ---------------------------------------------------------------- contract §7 shapes (upstream's)
MB = 1024 * 1024
STORE_RECOMMENDATIONS = ["Optimize store_chat_message performance", "Check system resources and configuration"]
PERFORMANCE_CAUSES = ["System resource constraints", "Suboptimal configuration", "Database/storage bottlenecks",
                      "Cache misses"]
PERFORMANCE_STEPS = ["Monitor system resources during operation", "Profile operation performance",
                     "Review cache hit rates", "Check storage I/O patterns"]


@pytest.fixture
def calm_host(monkeypatch):
    """The host reads 5% CPU, 30% memory, 40% disk and a 100 MB process, so only the bridge decides."""
    import psutil
    real_memory, real_disk, real_process = psutil.virtual_memory, psutil.disk_usage, psutil.Process

    class Process(real_process):
        def memory_info(self):
            return super().memory_info()._replace(rss=100 * MB)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 5.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real_memory()._replace(percent=30.0))
    monkeypatch.setattr(psutil, "disk_usage", lambda path: real_disk(path)._replace(percent=40.0))
    monkeypatch.setattr(psutil, "Process", Process)


@pytest.fixture
def shard_latency(bridge, monkeypatch):
    """Every shard probe reports the latency the test sets (5 ms unless changed)."""
    real_probe_all = bridge.backend.probe_all
    latency = {"ms": 5.0}

    async def probe_all(timeout_s):
        return [{**probe, "response_time_ms": latency["ms"]} if not probe.get("unavailable") else probe
                for probe in await real_probe_all(timeout_s)]
    monkeypatch.setattr(bridge.backend, "probe_all", probe_all)
    return latency


@pytest.fixture
def quiet_metrics(bridge):
    """The bridge's operation metrics start empty (other tests of the module share the bridge)."""
    bridge.get_data_layer().reset_metrics()
    yield bridge.get_data_layer().metrics
    bridge.get_data_layer().reset_metrics()


@pytest.fixture
def slow_store(quiet_metrics):
    """This bridge's metrics hold one store_chat_message of 150 ms (degraded: 100..300 ms)."""
    quiet_metrics.record("store_chat_message", 150.0, True, False, False)


async def test_fresh_bridge_is_healthy_with_five_components(bridge, calm_host, shard_latency, quiet_metrics):
    """On a calm host, a fresh bridge is healthy: five healthy components, no issue, score 100, nothing written."""
    users_before = await bridge.get_data_layer().storage.list_users()
    report = await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()
    assert set(report["component_health"]) == {"bridge", "storage", "data_layer", "configuration", "cache"}
    assert report["component_health"]["bridge"]["message"] == "Bridge operating normally"
    assert report["component_health"]["storage"]["details"]["shards_total"] == 2
    assert set(report["system_health"]) == {"cpu", "memory", "disk", "process", "ray"}
    assert report["system_health"]["ray"]["shard_count"] == 2
    for name, component in report["component_health"].items():
        assert component["status"] == "healthy", (name, component)
    assert report["issues_detected"] == []
    assert report["overall_status"] == "healthy" and report["optimization_score"] == 100
    assert await bridge.get_data_layer().storage.list_users() == users_before


async def test_diagnose_and_analytics_shapes(bridge):
    """diagnose_issues and get_performance_analytics return their documented keys."""
    monitor = await create_health_monitor(bridge)
    diagnosis = await monitor.diagnose_issues()
    assert set(diagnosis) == {"timestamp", "issues_found", "diagnostics", "resolution_plan", "priority_actions"}
    analytics = await monitor.get_performance_analytics(1)
    assert set(analytics) == {"time_range_hours", "timestamp", "performance_trends", "optimization_history",
                              "recommendations", "summary"}
    assert (await quick_health_check(bridge))["component_health"]["bridge"]["status"] == "healthy"
    assert "issues_found" in await diagnose_bridge_issues(bridge)


async def test_background_monitoring_starts_and_stops_quickly(bridge):
    """Background monitoring runs checks on the bridge's loop and stops within a second."""
    import asyncio
    monitor = FFIntegrationHealthMonitor(bridge)
    monitor.start_background_monitoring(interval_minutes=0.001)
    thread = monitor._monitoring_thread
    assert monitor._background_monitoring and thread.is_alive()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if monitor.last_health_check is not None:
            break
    assert monitor.last_health_check is not None
    started = time.monotonic()
    monitor.stop_background_monitoring()
    assert time.monotonic() - started < 1.0
    assert monitor._monitoring_thread is None and not monitor._background_monitoring


async def test_performance_monitor_collects_and_alerts(bridge, session, quiet_metrics):
    """Samples come from real metrics; exactly the two strict thresholds raise formatted alerts."""
    data = bridge.get_data_layer()
    user_id, session_id = session
    await data.store_chat_message(user_id, session_id, message("monitored"))
    await data.get_chat_history(user_id, session_id)
    monitor = PerformanceMonitor(bridge, thresholds={"avg_response_time_ms": 0.0001, "cache_hit_rate": 0.99,
                                                     "p95_response_time_ms": 1e9, "memory_usage_mb": 1e9,
                                                     "error_rate": 1.0})
    samples = await monitor.collect_metrics()
    names = {s.name for s in samples}
    assert {"store_chat_message_avg_ms", "store_chat_message_p95_ms", "avg_response_time_ms", "memory_usage_mb",
            "cluster_memory_mb", "health_check_ms", "cache_hit_rate", "error_rate"} <= names
    summary = monitor.get_performance_summary()
    assert summary["active_alerts"] == 2
    assert [a.split(":")[0] for a in summary["alerts"]] == ["High avg_response_time_ms", "Low cache hit rate"]
    assert summary["alerts"][1] == "Low cache hit rate: 0.00% < 99.00%"
    assert summary["current_metrics"]["memory_usage_mb"]["latest"] > 0


async def test_a_warning_issue_makes_overall_status_degraded_with_upstream_item_shape(
        bridge, calm_host, shard_latency, slow_store):
    """A store averaging 150 ms is one performance issue of severity warning, shaped as upstream's, and
    the overall status is degraded; the recommendations are upstream's texts, first-seen order."""
    report = await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()
    assert report["issues_detected"] == [
        {"type": "performance", "operation": "store_chat_message", "severity": "warning",
         "message": "store_chat_message performance is degraded (150.0ms)",
         "recommendations": STORE_RECOMMENDATIONS}]
    assert report["overall_status"] == "degraded"
    assert report["recommendations"] == [
        "Configure an embedder to enable vector and hybrid search, or disable enable_vector_search",
        *STORE_RECOMMENDATIONS, "Review performance configuration settings",
        "Consider enabling performance optimizations", "Monitor system resources during peak usage",
        "Consider switching to 'speed' performance mode for better performance",
        "Consider increasing cache size for better performance"]
    assert report["optimization_score"] == 90


async def test_storage_is_healthy_while_the_slowest_shard_answers_within_500_ms(bridge, calm_host, shard_latency,
                                                                                 quiet_metrics):
    """Shards answering in 450 ms leave storage healthy (the bridge's own check calls them slow);
    at 500 ms storage is degraded, a warning issue of type component."""
    monitor = FFIntegrationHealthMonitor(bridge)
    shard_latency["ms"] = 450.0
    report = await monitor.comprehensive_health_check()
    assert report["component_health"]["storage"]["status"] == "healthy", report["component_health"]["storage"]
    assert report["overall_status"] == "healthy" and report["issues_detected"] == []
    shard_latency["ms"] = 500.0
    report = await monitor.comprehensive_health_check()
    storage = report["component_health"]["storage"]
    assert storage["status"] == "degraded" and storage["severity"] == "warning"
    assert report["issues_detected"] == [{"type": "component", "component": "storage", "severity": "warning",
                                          "message": storage["message"],
                                          "recommendations": ["Storage operations are slow - check disk performance"]}]
    assert report["overall_status"] == "degraded"


async def test_a_degraded_host_resource_is_an_upstream_system_resource_issue(bridge, calm_host, shard_latency,
                                                                               quiet_metrics, monkeypatch):
    """Memory at 90% is a system_resource issue (warning) with upstream's message and recommendation."""
    import psutil
    memory = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory._replace(percent=90.0))
    report = await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()
    assert report["issues_detected"] == [{"type": "system_resource", "resource": "memory", "severity": "warning",
                                          "message": "Memory usage is degraded",
                                          "recommendations": ["Monitor memory usage and consider optimization"]}]
    assert report["overall_status"] == "degraded"
    assert "Consider increasing system memory or optimizing memory usage" in report["recommendations"]


async def test_diagnose_issues_keeps_upstream_diagnostic_and_plan_shapes(bridge, calm_host, shard_latency, slow_store):
    """One degraded store becomes one diagnostic with upstream's causes, steps and effort, and one plan item
    timed by the (medium, warning) cell of the matrix; no priority action (medium effort, not critical)."""
    diagnosis = await FFIntegrationHealthMonitor(bridge).diagnose_issues()
    issue = {"type": "performance", "operation": "store_chat_message", "severity": "warning",
             "message": "store_chat_message performance is degraded (150.0ms)",
             "recommendations": STORE_RECOMMENDATIONS}
    assert diagnosis["issues_found"] == 1
    assert diagnosis["diagnostics"] == [{"issue": issue, "probable_causes": PERFORMANCE_CAUSES,
                                         "diagnostic_steps": PERFORMANCE_STEPS,
                                         "resolution_suggestions": STORE_RECOMMENDATIONS,
                                         "estimated_effort": "medium"}]
    assert diagnosis["resolution_plan"] == [{"issue_type": "performance", "severity": "warning", "effort": "medium",
                                             "actions": STORE_RECOMMENDATIONS, "estimated_time": "15-30 minutes"}]
    assert diagnosis["priority_actions"] == []
    assert datetime.fromisoformat(diagnosis["timestamp"]).utcoffset() == timedelta(0)


def test_diagnosis_orders_by_severity_then_effort_and_times_by_the_matrix():
    """Critical and error issues come first (low effort before medium), then warnings, then the rest;
    shard issues carry the shard causes with medium effort; priority actions are upstream's."""
    from api.diagnosis import diagnose
    issues = [
        {"type": "system_resource", "resource": "disk", "severity": "warning", "message": "Disk usage is degraded",
         "recommendations": ["Monitor disk usage and consider optimization"]},
        {"type": "component", "component": "storage", "severity": "critical", "message": "No shard answered",
         "recommendations": ["Check the Ray cluster", "Check the storage volume", "Third"]},
        {"type": "component", "component": "bridge", "severity": "error", "message": "Bridge check failed",
         "recommendations": ["Check bridge initialization and dependencies"]},
        {"type": "component", "component": "cache", "severity": "info", "message": "Cache note",
         "recommendations": ["Monitor cache usage patterns"]},
        {"type": "performance", "operation": "get_chat_history", "severity": "error",
         "message": "get_chat_history performance is error (900.0ms)",
         "recommendations": ["Optimize get_chat_history performance", "Check system resources and configuration"]},
    ]
    result = diagnose({"issues_detected": issues})
    storage = result["diagnostics"][1]
    assert storage["probable_causes"] == ["Disk space insufficient", "Permission issues",
                                          "Storage configuration errors", "File system issues",
                                          "Shard actor crashed or restarting", "Ray node unavailable",
                                          "Storage volume unavailable"]
    assert storage["diagnostic_steps"] == ["Check disk space availability", "Verify file system permissions",
                                           "Test storage operations manually", "Review storage configuration"]
    assert storage["estimated_effort"] == "medium"
    bridge_diagnostic = result["diagnostics"][2]
    assert bridge_diagnostic["probable_causes"] == ["Initialization failure", "Configuration issues",
                                                    "Dependency problems"]
    assert bridge_diagnostic["diagnostic_steps"] == [] and bridge_diagnostic["estimated_effort"] == "medium"
    assert [d["estimated_effort"] for d in result["diagnostics"]] == ["unknown", "medium", "medium", "unknown",
                                                                     "medium"]
    assert [(p["issue_type"], p["severity"], p["effort"], p["estimated_time"]) for p in result["resolution_plan"]] == [
        ("component", "critical", "medium", "1-2 hours"), ("component", "error", "medium", "30-60 minutes"),
        ("performance", "error", "medium", "30-60 minutes"), ("system_resource", "warning", "unknown", "30-60 minutes"),
        ("component", "info", "unknown", "30-60 minutes")]
    assert result["priority_actions"] == ["Check the Ray cluster", "Check the storage volume"]
    assert result["issues_found"] == 5


@pytest.mark.parametrize(("effort", "severity", "expected"), [
    ("low", "critical", "15-30 minutes"), ("low", "error", "15-30 minutes"), ("low", "warning", "5-15 minutes"),
    ("medium", "critical", "1-2 hours"), ("medium", "error", "30-60 minutes"), ("medium", "warning", "15-30 minutes"),
    ("high", "critical", "2-4 hours"), ("high", "error", "1-2 hours"), ("high", "warning", "30-60 minutes"),
    ("low", "info", "30-60 minutes")])
def test_resolution_time_follows_upstream_matrix(effort, severity, expected):
    """estimated_time is upstream's (effort, severity) matrix, 30-60 minutes outside it."""
    from api.diagnosis import estimate_resolution_time
    assert estimate_resolution_time(effort, severity) == expected


async def test_optimization_history_timestamps_are_iso_utc_strings(bridge, calm_host, shard_latency, quiet_metrics):
    """get_performance_analytics() lists each check's score with an aware UTC ISO timestamp (§1)."""
    monitor = FFIntegrationHealthMonitor(bridge)
    report = await monitor.comprehensive_health_check()
    history = (await monitor.get_performance_analytics(1))["optimization_history"]
    assert [item["value"] for item in history] == [report["optimization_score"]]
    assert isinstance(history[0]["timestamp"], str)
    assert datetime.fromisoformat(history[0]["timestamp"]).utcoffset() == timedelta(0)


async def test_system_metrics_sampled_at_is_an_iso_utc_string(bridge):
    """system_metrics.sampled_at is an aware UTC ISO string (§1); a fetch takes a newer sample."""
    data = bridge.get_data_layer()
    sampled_at = data.get_performance_metrics()["system_metrics"]["sampled_at"]
    assert isinstance(sampled_at, str) and datetime.fromisoformat(sampled_at).utcoffset() == timedelta(0)
    fetched = (await data.fetch_performance_metrics())["system_metrics"]["sampled_at"]
    assert datetime.fromisoformat(fetched) >= datetime.fromisoformat(sampled_at)
