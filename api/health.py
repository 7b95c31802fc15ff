"""Health (contract §3, §7): the bridge's cheap shard check, and the monitor: host resources, trends and
background runs. Its components are checked in `health_components.py`; issue items and diagnosis are
in `diagnosis.py`."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psutil

from engine.config import MB
from engine.models import iso, utc_now

from .diagnosis import analytics_advice, detect_issues, diagnose, overall_status, recommend
from .health_components import (HealthCheckResult, PerformanceMetric, cache_result, configuration_result,
                                data_layer_result, optimization_score, resource_status, storage_result, trend)

MIN_FREE_DISK_BYTES = 100 * MB
PROBE_TIMEOUT_S = 0.5
SLOW_SHARD_MS = 100.0      # health_check(): a shard slower than this is degraded
_LIMITS = {"store_chat_message": (100, 300), "get_chat_history": (150, 400), "search_conversations": (200, 600)}
_DEFAULT_LIMITS = (200, 500)


# ---------------------------------------------------------------------- the bridge's health_check()
def shard_health(probe: dict[str, Any]) -> dict[str, Any]:
    """One entry of health_check()["shards"]: unavailable, degraded (slow, or a failed write or
    background step not yet recovered, with the reason in `error`) or healthy."""
    restarting = _restarting(probe)
    unavailable = not restarting and (probe.get("unavailable") or not probe.get("log_open"))
    slow = probe.get("response_time_ms", 0.0) > SLOW_SHARD_MS
    failing = bool(probe.get("degraded"))
    status = "unavailable" if unavailable else "degraded" if slow or failing or restarting else "healthy"
    error = RESTARTING if restarting else probe.get("error")
    if failing and not unavailable:
        pending = probe.get("pending_steps") or []
        error = "; ".join(part for part in (probe.get("degraded_reason"),
                                            f"pending: {', '.join(pending)}" if pending else None,
                                            "writes paused after a failed write" if probe.get("writes_paused")
                                            else None) if part)
    return {"shard": probe.get("shard"), "status": status,
            "response_time_ms": probe.get("response_time_ms", 0.0), "sessions": probe.get("sessions", 0),
            "messages": probe.get("messages", 0), "cache_bytes": probe.get("cache_bytes", 0),
            "restarts": probe.get("restarts", 0), "node_id": probe.get("node_id"), "error": error}


RESTARTING = "its actor restarted; the shard re-opens its log on its next call"


def _restarting(probe: dict[str, Any]) -> bool:
    """The shard's actor answered but holds no shard yet (restarted): nothing is lost, and the first
    call re-opens it. A health check never does that itself: re-opening may cut a torn tail (a write)."""
    return probe.get("assigned") is False and not probe.get("unavailable")


async def bridge_health_check(bridge: Any) -> dict[str, Any]:
    """`bridge.health_check()`: probe every shard in parallel; never raises, writes nothing."""
    started = time.perf_counter()
    uptime_s = time.time() - bridge.start_time
    result: dict[str, Any] = {
        "status": "healthy", "timestamp": iso(utc_now()), "bridge_initialized": bridge.is_ready,
        "uptime_seconds": uptime_s, "storage_accessible": False, "write_permissions": False,
        "disk_space_sufficient": False, "configuration_valid": False, "errors": [], "warnings": [],
        "performance_metrics": {"uptime_seconds": uptime_s, "memory_usage": 0.0, "cache_utilization": 0.0,
                                "response_time_ms": 0.0},
        "check_duration_ms": 0.0, "shards": []}
    try:
        result["configuration_valid"] = bridge.config.validate() == []
        result["performance_metrics"]["memory_usage"] = psutil.Process().memory_info().rss / MB
        if bridge.is_closed:
            result["errors"].append("Bridge is closed")
        elif not bridge.is_ready:
            result["errors"].append("Bridge not initialized")
        else:
            await _probe_shards(bridge, result)
    except Exception as exc:  # health_check never raises
        result["errors"].append(f"Health check failed: {exc}")
    result["status"] = "error" if result["errors"] else "degraded" if result["warnings"] else "healthy"
    result["check_duration_ms"] = result["performance_metrics"]["response_time_ms"] = \
        (time.perf_counter() - started) * 1000
    return result


async def _probe_shards(bridge: Any, result: dict[str, Any]) -> None:
    backend = bridge.backend
    probes = await backend.probe_all(min(PROBE_TIMEOUT_S, backend.request_timeout_s))
    bridge.shard_snapshot.merge_probes(probes)
    result["shards"] = shards = [shard_health(p) for p in probes]
    _report_transports(bridge, shards, result)
    if bridge.settings.backup_enabled and bridge.last_backup.get("error"):
        result["warnings"].append(f"The last scheduled backup failed: {bridge.last_backup['error']}")
    answering = [p for p in probes if not p.get("unavailable") and p.get("log_open")]
    result["storage_accessible"] = bool(answering) and all(p.get("readable") for p in answering)
    result["write_permissions"] = bool(answering) and all(p.get("writable") for p in answering)
    result["disk_space_sufficient"] = bool(answering) and all(
        p.get("disk_free_bytes", 0) >= MIN_FREE_DISK_BYTES for p in answering)
    capacity = sum(p.get("cache_capacity_bytes", 0) for p in answering)
    result["performance_metrics"]["cache_utilization"] = (
        sum(p.get("cache_bytes", 0) for p in answering) / capacity if capacity else 0.0)
    if not answering and not any(_restarting(p) for p in probes):
        result["errors"].append("No shard answered the health probe")
    elif answering and (not result["storage_accessible"] or not result["write_permissions"]):
        result["errors"].append("Storage path is not readable and writable")
    for shard in shards:
        if shard["status"] == "unavailable":
            result["warnings"].append(f"Shard {shard['shard']} unavailable: {shard['error']}")
        elif shard["error"] == RESTARTING:
            result["warnings"].append(f"Shard {shard['shard']} restarted: it re-opens its log on its next call")
        elif shard["status"] == "degraded" and shard["error"]:
            result["warnings"].append(f"Shard {shard['shard']} degraded: {shard['error']}")
        elif shard["status"] == "degraded":
            result["warnings"].append(f"Shard {shard['shard']} slow: {shard['response_time_ms']:.1f}ms")
    if answering and not result["disk_space_sufficient"]:
        result["warnings"].append("Less than 100 MiB free on a shard volume")
    if not result["configuration_valid"]:
        result["warnings"].append("Configuration is not valid")


def _report_transports(bridge: Any, shards: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """Each shard says how calls reach it; a shard the direct data plane should reach but does not
    (its calls go over Ray actor calls, slower) is a warning with the reason."""
    result["data_plane"] = bridge.data_plane
    if bridge.data_plane == "in_process":  # no processes to reach: every call is a local call
        result["router_transport"] = "in_process"
        for shard in shards:
            shard["transport"] = "in_process"
        return
    result["router_transport"], reason = bridge.backend.router_transport()
    if bridge.data_plane == "direct" and result["router_transport"] == "ray" and reason:
        result["warnings"].append(f"The router is reached over Ray actor calls: {reason}")
    for shard, (transport, reason) in zip(shards, bridge.backend.transports()):
        shard["transport"] = transport
        if bridge.data_plane == "direct" and transport == "ray" and reason:
            result["warnings"].append(f"Shard {shard['shard']} is reached over Ray actor calls: {reason}")


# ---------------------------------------------------------------------- the monitor (§7)
class FFIntegrationHealthMonitor:
    """Checks a bridge's components and resources; methods never raise.

    Example:
        >>> report = await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()
    """

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self._background_monitoring = False
        self._monitoring_thread: threading.Thread | None = None
        self._stop_event: threading.Event | None = None
        self.last_health_check: dict[str, Any] | None = None
        self.metrics_history: dict[str, PerformanceMetric] = {}
        self.optimization_history: list[tuple[datetime, int]] = []

    # ------------------------------------------------------------------ components
    async def _bridge_component(self) -> HealthCheckResult:
        bridge = self.bridge
        if not bridge.is_ready:
            return HealthCheckResult("bridge", "error", "Bridge not initialized", {
                "uptime_seconds": 0.0, "capabilities_count": 0, "initialized": False},
                ["Initialize bridge before use"], "critical")
        details = {"uptime_seconds": time.time() - bridge.start_time, "initialized": True, "capabilities_count": 0}
        try:
            capabilities = await bridge.get_capabilities()
        except Exception as exc:
            return HealthCheckResult("bridge", "degraded", "Bridge capabilities check failed",
                                     {**details, "error": str(exc)}, ["Check bridge configuration and dependencies"],
                                     "warning")
        details["capabilities_count"] = sum(1 for value in capabilities.values() if value)
        return HealthCheckResult("bridge", "healthy", "Bridge operating normally", details)

    async def _components(self) -> list[HealthCheckResult]:
        bridge = self.bridge
        if not bridge.is_ready:
            empty_storage = {"response_time_ms": 0.0, "shards_total": 0, "shards_healthy": 0, "shards": []}
            empty_layer = {"max_response_time_ms": 0.0, "operations_tracked": 0, "cache_size": 0}
            return [await self._bridge_component(),
                    HealthCheckResult("storage", "error", "Storage manager not available", empty_storage, [],
                                      "critical"),
                    HealthCheckResult("data_layer", "error", "Data layer not available", empty_layer, [], "error"),
                    configuration_result(bridge.config), cache_result(0.0)]
        health = await bridge.health_check()
        metrics = bridge.get_data_layer().get_performance_metrics()
        return [await self._bridge_component(), storage_result(health), data_layer_result(metrics),
                configuration_result(bridge.config),
                cache_result(health["performance_metrics"]["cache_utilization"])]

    # ------------------------------------------------------------------ system and performance
    def _system_health(self) -> dict[str, Any]:
        cpu = psutil.cpu_percent(interval=None)  # since the previous call: never blocks
        memory = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(self.bridge.settings.storage_path)
        except OSError:
            disk = psutil.disk_usage("/")
        process_mb = psutil.Process().memory_info().rss / MB
        snapshot = self.bridge.shard_snapshot
        backend = self.bridge.backend
        return {
            "cpu": {"usage_percent": cpu, "status": resource_status(cpu)},
            "memory": {"usage_percent": memory.percent, "available_gb": memory.available / 1024**3,
                       "status": resource_status(memory.percent)},
            "disk": {"usage_percent": disk.percent, "free_gb": disk.free / 1024**3,
                     "status": resource_status(disk.percent)},
            "process": {"memory_mb": process_mb,
                        "status": "healthy" if process_mb < 500 else "degraded" if process_mb < 1000 else "error"},
            "ray": {"cluster_memory_mb": snapshot.cluster_memory_mb,
                    "shard_count": backend.shard_count if backend else len(snapshot.shards),
                    "restarts_total": snapshot.restarts_total},
        }

    def _operation_metrics(self) -> dict[str, Any]:
        if not self.bridge.is_ready:
            return {}
        return self.bridge.get_data_layer().get_performance_metrics()["operation_metrics"]

    def _performance_health(self) -> dict[str, Any]:
        operations: dict[str, Any] = {}
        worst = "healthy"
        for name, op in self._operation_metrics().items():
            good, bad = _LIMITS.get(name, _DEFAULT_LIMITS)
            recent = op["recent_avg_ms"]
            status = "healthy" if recent < good else "degraded" if recent < bad else "error"
            operations[name] = {"recent_avg_ms": recent, "overall_avg_ms": op["average_ms"], "p95_ms": op["p95_ms"],
                                "status": status, "total_operations": op["total_operations"]}
            if status == "error" or (status == "degraded" and worst == "healthy"):
                worst = status
        trends = {name: trend(op["recent_avg_ms"], op["overall_avg_ms"]) for name, op in operations.items()}
        return {"operation_performance": operations, "trends": trends, "overall_status": worst}

    # ------------------------------------------------------------------ public checks
    async def comprehensive_health_check(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            components = {c.component: c.to_dict() for c in await self._components()}
            # Host readings (disk usage of the storage path may hang on a network mount) off the loop.
            system = await asyncio.get_running_loop().run_in_executor(None, self._system_health)
            performance = self._performance_health()
            issues = detect_issues(components, system, performance)
            result = {"overall_status": overall_status(issues), "timestamp": iso(utc_now()),
                      "check_duration_ms": (time.perf_counter() - started) * 1000,
                      "component_health": components, "system_health": system, "performance_health": performance,
                      "issues_detected": issues,
                      "recommendations": recommend(components, system, performance, issues, self.bridge.config),
                      "optimization_score": optimization_score(components, system, performance)}
            self._remember(result)
        except Exception as exc:  # the monitor never raises
            result = {"overall_status": "error", "timestamp": iso(utc_now()),
                      "check_duration_ms": (time.perf_counter() - started) * 1000, "error": str(exc),
                      "recommendations": ["Fix health monitoring system issues"]}
        self.last_health_check = result
        return result

    def _remember(self, result: dict[str, Any]) -> None:
        now = utc_now()
        self.optimization_history.append((now, result["optimization_score"]))
        del self.optimization_history[:-1000]
        for name, op in result["performance_health"]["operation_performance"].items():
            metric = self.metrics_history.get(name)
            if metric is None:
                metric = self.metrics_history[name] = PerformanceMetric(name, op["recent_avg_ms"], "ms", now)
            metric.current_value, metric.timestamp = op["recent_avg_ms"], now
            metric.history.append(op["recent_avg_ms"])
            del metric.history[:-100]

    async def get_performance_analytics(self, time_range_hours: float = 24) -> dict[str, Any]:
        result: dict[str, Any] = {"time_range_hours": time_range_hours, "timestamp": iso(utc_now()),
                                  "performance_trends": {}, "optimization_history": [], "recommendations": [],
                                  "summary": {"optimization_trend": "stable"}}
        try:
            cutoff = utc_now() - timedelta(hours=time_range_hours)
            history = [(at, score) for at, score in self.optimization_history if at >= cutoff]
            result["optimization_history"] = [{"timestamp": at.isoformat(), "value": score} for at, score in history]
            result["performance_trends"] = {
                name: {"current_avg_ms": op["recent_avg_ms"], "total_operations": op["total_operations"],
                       "trend": trend(op["recent_avg_ms"], op["average_ms"])}
                for name, op in self._operation_metrics().items()}
            if len(history) >= 2 and history[-1][1] != history[0][1]:
                result["summary"]["optimization_trend"] = "improving" if history[-1][1] > history[0][1] else "declining"
            result["recommendations"] = analytics_advice(result["performance_trends"],
                                                         [score for _, score in history])
        except Exception as exc:  # the monitor never raises
            result["recommendations"] = [f"Performance analytics failed: {exc}"]
        return result

    async def diagnose_issues(self) -> dict[str, Any]:
        try:
            return diagnose(await self.comprehensive_health_check())
        except Exception as exc:  # the monitor never raises
            return {"timestamp": iso(utc_now()), "issues_found": 0, "diagnostics": [], "resolution_plan": [],
                    "priority_actions": [f"Fix health monitoring system issues: {exc}"]}

    diagnose = diagnose_issues

    # ------------------------------------------------------------------ background
    def start_background_monitoring(self, interval_minutes: float = 5) -> None:
        if self._background_monitoring:
            return
        loop = self.bridge.event_loop
        stop = threading.Event()
        interval_s = max(0.01, float(interval_minutes) * 60)

        def run() -> None:
            while not stop.is_set():
                if loop is not None and loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(self.comprehensive_health_check(), loop)
                    try:
                        future.result(timeout=max(5.0, interval_s))
                    except Exception:
                        future.cancel()
                if stop.wait(interval_s):
                    break

        self._stop_event = stop
        self._monitoring_thread = threading.Thread(target=run, name="ffchat-health-monitor", daemon=True)
        self._background_monitoring = True
        self._monitoring_thread.start()

    def stop_background_monitoring(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        thread = self._monitoring_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=0.9)
        self._monitoring_thread = None
        self._background_monitoring = False
        self._stop_event = None


async def create_health_monitor(bridge: Any) -> FFIntegrationHealthMonitor:
    return FFIntegrationHealthMonitor(bridge)


async def quick_health_check(bridge: Any) -> dict[str, Any]:
    return await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()


async def diagnose_bridge_issues(bridge: Any) -> dict[str, Any]:
    return await FFIntegrationHealthMonitor(bridge).diagnose_issues()
