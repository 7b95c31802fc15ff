"""Health (contract §3, §7): the bridge's cheap shard check, and the monitor's component checks, system
resources, trends, diagnosis and background runs."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil

from .config_factory import score_config

MB = 1024 * 1024
MIN_FREE_DISK_BYTES = 100 * MB
PROBE_TIMEOUT_S = 0.5
SLOW_SHARD_MS = 100.0      # health_check(): a shard slower than this is degraded
_LIMITS = {"store_chat_message": (100, 300), "get_chat_history": (150, 400), "search_conversations": (200, 600)}
_DEFAULT_LIMITS = (200, 500)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


# ---------------------------------------------------------------------- the bridge's health_check()
def shard_health(probe: dict[str, Any]) -> dict[str, Any]:
    """One entry of health_check()["shards"]: unavailable, degraded (slow, or a failed write or
    background step not yet recovered, with the reason in `error`) or healthy."""
    unavailable = probe.get("unavailable") or not probe.get("log_open")
    slow = probe.get("response_time_ms", 0.0) > SLOW_SHARD_MS
    failing = bool(probe.get("degraded"))
    status = "unavailable" if unavailable else "degraded" if slow or failing else "healthy"
    error = probe.get("error")
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


async def bridge_health_check(bridge: Any) -> dict[str, Any]:
    """`bridge.health_check()`: probe every shard in parallel; never raises, writes nothing."""
    started = time.perf_counter()
    uptime_s = time.time() - bridge.start_time
    result: dict[str, Any] = {
        "status": "healthy", "timestamp": _now_iso(), "bridge_initialized": bridge.is_ready,
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
    answering = [p for p in probes if not p.get("unavailable") and p.get("log_open")]
    result["storage_accessible"] = bool(answering) and all(p.get("readable") for p in answering)
    result["write_permissions"] = bool(answering) and all(p.get("writable") for p in answering)
    result["disk_space_sufficient"] = bool(answering) and all(
        p.get("disk_free_bytes", 0) >= MIN_FREE_DISK_BYTES for p in answering)
    capacity = sum(p.get("cache_capacity_bytes", 0) for p in answering)
    result["performance_metrics"]["cache_utilization"] = (
        sum(p.get("cache_bytes", 0) for p in answering) / capacity if capacity else 0.0)
    if not answering:
        result["errors"].append("No shard answered the health probe")
    elif not result["storage_accessible"] or not result["write_permissions"]:
        result["errors"].append("Storage path is not readable and writable")
    for shard in shards:
        if shard["status"] == "unavailable":
            result["warnings"].append(f"Shard {shard['shard']} unavailable: {shard['error']}")
        elif shard["status"] == "degraded" and shard["error"]:
            result["warnings"].append(f"Shard {shard['shard']} degraded: {shard['error']}")
        elif shard["status"] == "degraded":
            result["warnings"].append(f"Shard {shard['shard']} slow: {shard['response_time_ms']:.1f}ms")
    if answering and not result["disk_space_sufficient"]:
        result["warnings"].append("Less than 100 MiB free on a shard volume")
    if not result["configuration_valid"]:
        result["warnings"].append("Configuration is not valid")


# ---------------------------------------------------------------------- the monitor (§7)
@dataclass
class HealthCheckResult:
    component: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    recommendations: list[str] = field(default_factory=list)
    severity: str = "info"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PerformanceMetric:
    name: str
    current_value: float
    unit: str
    timestamp: datetime
    history: list[float] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)


def _resource_status(percent: float) -> str:
    return "healthy" if percent < 80 else "degraded" if percent < 95 else "error"


class FFIntegrationHealthMonitor:
    """Checks a bridge's components and resources; methods never raise.

    Example:
        >>> report = await FFIntegrationHealthMonitor(bridge).comprehensive_health_check()
    """

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self._monitoring_enabled = True
        self._background_monitoring = False
        self._monitoring_thread: threading.Thread | None = None
        self._stop_event: threading.Event | None = None
        self.last_health_check: dict[str, Any] | None = None
        self.metrics_history: dict[str, PerformanceMetric] = {}
        self.optimization_history: list[tuple[float, int]] = []
        self._cpu_primed = False

    # ------------------------------------------------------------------ components
    async def _bridge_component(self) -> HealthCheckResult:
        bridge = self.bridge
        if not bridge.is_ready:
            return HealthCheckResult("bridge", "error", "Bridge not initialized", {"uptime_seconds": 0.0,
                                     "capabilities_count": 0, "initialized": False},
                                     ["Initialize the bridge before use"], "critical")
        details = {"uptime_seconds": time.time() - bridge.start_time, "initialized": True, "capabilities_count": 0}
        try:
            capabilities = await bridge.get_capabilities()
            details["capabilities_count"] = sum(1 for value in capabilities.values() if value)
        except Exception as exc:
            return HealthCheckResult("bridge", "degraded", f"Capabilities unavailable: {exc}", details, [], "warning")
        return HealthCheckResult("bridge", "healthy", "Bridge operating normally", details)

    async def _storage_component(self) -> tuple[HealthCheckResult, dict[str, Any] | None]:
        if not self.bridge.is_ready:
            return HealthCheckResult("storage", "error", "Storage not available: bridge not initialized",
                                     {"response_time_ms": 0.0, "shards_total": 0, "shards_healthy": 0, "shards": []},
                                     ["Initialize the bridge"], "critical"), None
        health = await self.bridge.health_check()
        shards = health.get("shards", [])
        healthy = [s for s in shards if s["status"] == "healthy"]
        answering = [s for s in shards if s["status"] != "unavailable"]
        slowest = max((s["response_time_ms"] for s in answering), default=0.0)
        details = {"response_time_ms": slowest, "shards_total": len(shards), "shards_healthy": len(healthy),
                   "shards": shards}
        if not answering:
            return HealthCheckResult("storage", "error", "No shard answered", details,
                                     ["Check the Ray cluster and the storage volume"], "critical"), health
        if len(answering) < len(shards) or slowest >= 500 or len(healthy) < len(shards):
            return HealthCheckResult("storage", "degraded", "Some shards are slow or unavailable", details,
                                     ["Check shard actors and node health"], "warning"), health
        return HealthCheckResult("storage", "healthy", "All shards answering", details), health

    def _data_layer_component(self) -> HealthCheckResult:
        bridge = self.bridge
        if not bridge.is_ready:
            return HealthCheckResult("data_layer", "error", "Data layer not available", {
                "max_response_time_ms": 0.0, "operations_tracked": 0, "cache_size": 0}, [], "error")
        metrics = bridge.get_data_layer().get_performance_metrics()
        operations = metrics["operation_metrics"]
        worst = max((op["recent_avg_ms"] for op in operations.values()), default=0.0)
        details = {"max_response_time_ms": worst, "operations_tracked": len(operations),
                   "cache_size": metrics["cache_stats"]["cache_size"]}
        if worst == 0:
            return HealthCheckResult("data_layer", "healthy", "Data layer ready (no recent operations)", details)
        if worst < 200:
            return HealthCheckResult("data_layer", "healthy", "Data layer performing well", details)
        if worst < 500:
            return HealthCheckResult("data_layer", "degraded", "Data layer responses are slow", details,
                                     ["Review slow operations"], "warning")
        return HealthCheckResult("data_layer", "error", "Data layer responses are very slow", details,
                                 ["Investigate slow operations"], "error")

    def _configuration_component(self) -> HealthCheckResult:
        result = score_config(self.bridge.config)
        details = {"optimization_score": result["optimization_score"],
                   "performance_mode": self.bridge.config.performance_mode,
                   "cache_size_mb": self.bridge.config.cache_size_mb,
                   "estimated_performance": result["estimated_performance"]}
        self.optimization_history.append((time.time(), result["optimization_score"]))
        del self.optimization_history[:-1000]
        if not result["valid"]:
            return HealthCheckResult("configuration", "error", "Configuration is invalid", details,
                                     result["errors"], "error")
        if result["optimization_score"] >= 80:
            return HealthCheckResult("configuration", "healthy", "Configuration is well optimized", details,
                                     result["recommendations"])
        if result["optimization_score"] >= 60:
            return HealthCheckResult("configuration", "degraded", "Configuration could be optimized", details,
                                     result["recommendations"], "warning")
        return HealthCheckResult("configuration", "degraded", "Configuration needs optimization", details,
                                 result["recommendations"], "warning")

    def _cache_component(self, health: dict[str, Any] | None) -> HealthCheckResult:
        used = (health or {}).get("performance_metrics", {}).get("cache_utilization", 0.0)
        details = {"utilization": used}
        if used < 0.5:
            return HealthCheckResult("cache", "healthy", "Cache utilization is low", details)
        if used < 0.8:
            return HealthCheckResult("cache", "healthy", "Cache utilization is moderate", details)
        return HealthCheckResult("cache", "degraded", "Cache is nearly full", details,
                                 ["Increase cache_size_mb"], "warning")

    # ------------------------------------------------------------------ system
    def _system_health(self) -> dict[str, Any]:
        cpu = psutil.cpu_percent(interval=None)  # since the previous call: never blocks
        memory = psutil.virtual_memory()
        try:
            disk = psutil.disk_usage(self.bridge.settings.storage_path)
        except OSError:
            disk = psutil.disk_usage("/")
        process_mb = psutil.Process().memory_info().rss / MB
        snapshot = self.bridge.shard_snapshot
        return {
            "cpu": {"usage_percent": cpu, "status": _resource_status(cpu)},
            "memory": {"usage_percent": memory.percent, "available_gb": memory.available / 1024**3,
                       "status": _resource_status(memory.percent)},
            "disk": {"usage_percent": disk.percent, "free_gb": disk.free / 1024**3, "status": _resource_status(disk.percent)},
            "process": {"memory_mb": process_mb,
                        "status": "healthy" if process_mb < 500 else "degraded" if process_mb < 1000 else "error"},
            "ray": {"cluster_memory_mb": snapshot.cluster_memory_mb, "shard_count": len(snapshot.shards),
                    "restarts_total": snapshot.restarts_total},
        }

    def _performance_health(self) -> dict[str, Any]:
        operations: dict[str, Any] = {}
        trends: dict[str, str] = {}
        worst = "healthy"
        if self.bridge.is_ready:
            metrics = self.bridge.get_data_layer().get_performance_metrics()["operation_metrics"]
        else:
            metrics = {}
        for name, op in metrics.items():
            good, bad = _LIMITS.get(name, _DEFAULT_LIMITS)
            recent = op["recent_avg_ms"]
            status = "healthy" if recent < good else "degraded" if recent < bad else "error"
            operations[name] = {"recent_avg_ms": recent, "overall_avg_ms": op["average_ms"], "p95_ms": op["p95_ms"],
                                "status": status, "total_operations": op["total_operations"]}
            overall = op["average_ms"]
            trends[name] = ("stable" if overall == 0 or abs(recent - overall) <= 0.2 * overall
                            else "degrading" if recent > overall else "improving")
            if status == "error" or (status == "degraded" and worst == "healthy"):
                worst = status
        return {"operation_performance": operations, "trends": trends, "overall_status": worst}

    # ------------------------------------------------------------------ public checks
    async def comprehensive_health_check(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            components = [await self._bridge_component()]
            storage, health = await self._storage_component()
            components += [storage, self._data_layer_component(), self._configuration_component(),
                           self._cache_component(health)]
            system = self._system_health()
            performance = self._performance_health()
            issues, recommendations = self._issues(components, system, performance)
            score = self._score(components, system, performance)
            severities = {c.severity for c in components}
            if severities & {"critical", "error"} or any(v.get("status") == "error" for v in system.values()
                                                         if isinstance(v, dict) and "status" in v):
                overall = "error"
            elif "warning" in severities or any(v.get("status") == "degraded" for v in system.values()
                                                if isinstance(v, dict) and "status" in v):
                overall = "degraded"
            else:
                overall = "healthy"
            result = {"overall_status": overall, "timestamp": datetime.now(timezone.utc).isoformat(),
                      "check_duration_ms": (time.perf_counter() - started) * 1000,
                      "component_health": {c.component: c.to_dict() for c in components},
                      "system_health": system, "performance_health": performance, "issues_detected": issues,
                      "recommendations": recommendations, "optimization_score": score}
        except Exception as exc:  # the monitor never raises
            result = {"overall_status": "error", "timestamp": datetime.now(timezone.utc).isoformat(),
                      "check_duration_ms": (time.perf_counter() - started) * 1000, "error": str(exc),
                      "recommendations": ["Fix health monitoring system issues"]}
        self.last_health_check = result
        self._remember(result)
        return result

    @staticmethod
    def _issues(components: list[HealthCheckResult], system: dict[str, Any], performance: dict[str, Any]
                ) -> tuple[list[dict[str, Any]], list[str]]:
        issues: list[dict[str, Any]] = []
        recommendations: list[str] = []
        for component in components:
            if component.status != "healthy":
                issues.append({"component": component.component, "severity": component.severity,
                               "message": component.message, "recommendations": component.recommendations})
            for item in component.recommendations:
                if item not in recommendations:
                    recommendations.append(item)
        for name, value in system.items():
            if isinstance(value, dict) and value.get("status") in ("degraded", "error"):
                issues.append({"component": f"system_{name}", "severity": "warning" if value["status"] == "degraded"
                               else "error", "message": f"{name} usage is {value['status']}", "recommendations": []})
        for name, op in performance["operation_performance"].items():
            if op["status"] != "healthy":
                issues.append({"component": f"performance_{name}", "severity": "warning",
                               "message": f"{name} recent average {op['recent_avg_ms']:.1f}ms", "recommendations": []})
        return issues, recommendations

    @staticmethod
    def _score(components: list[HealthCheckResult], system: dict[str, Any], performance: dict[str, Any]) -> int:
        score = 100
        for component in components:
            score -= 20 if component.status == "error" else 10 if component.status == "degraded" else 0
        for value in system.values():
            if isinstance(value, dict) and "status" in value:
                score -= 15 if value["status"] == "error" else 5 if value["status"] == "degraded" else 0
        score -= 20 if performance["overall_status"] == "error" else 10 if performance["overall_status"] == "degraded" else 0
        return max(0, int(score))

    def _remember(self, result: dict[str, Any]) -> None:
        for name, op in result.get("performance_health", {}).get("operation_performance", {}).items():
            metric = self.metrics_history.get(name)
            now = datetime.now(timezone.utc)
            if metric is None:
                metric = self.metrics_history[name] = PerformanceMetric(name, op["recent_avg_ms"], "ms", now)
            metric.current_value, metric.timestamp = op["recent_avg_ms"], now
            metric.history.append(op["recent_avg_ms"])
            del metric.history[:-100]

    async def get_performance_analytics(self, time_range_hours: float = 24) -> dict[str, Any]:
        try:
            cutoff = time.time() - time_range_hours * 3600
            history = [(t, s) for t, s in self.optimization_history if t >= cutoff]
            trends: dict[str, Any] = {}
            if self.bridge.is_ready:
                operations = self.bridge.get_data_layer().get_performance_metrics()["operation_metrics"]
                for name, op in operations.items():
                    recent, overall = op["recent_avg_ms"], op["average_ms"]
                    trend = ("stable" if overall == 0 or abs(recent - overall) <= 0.2 * overall
                             else "degrading" if recent > overall else "improving")
                    trends[name] = {"current_avg_ms": recent, "total_operations": op["total_operations"],
                                    "trend": trend}
            direction = "stable"
            if len(history) >= 2 and history[-1][1] != history[0][1]:
                direction = "improving" if history[-1][1] > history[0][1] else "declining"
            recommendations = [f"Investigate {name}: it is degrading" for name, t in trends.items()
                               if t["trend"] == "degrading"]
            return {"time_range_hours": time_range_hours, "timestamp": datetime.now(timezone.utc).isoformat(),
                    "performance_trends": trends,
                    "optimization_history": [{"timestamp": t, "optimization_score": s} for t, s in history],
                    "recommendations": recommendations, "summary": {"optimization_trend": direction}}
        except Exception as exc:
            return {"time_range_hours": time_range_hours, "timestamp": datetime.now(timezone.utc).isoformat(),
                    "performance_trends": {}, "optimization_history": [], "recommendations": [str(exc)],
                    "summary": {"optimization_trend": "stable"}}

    async def diagnose_issues(self) -> dict[str, Any]:
        from .diagnosis import diagnose
        try:
            report = await self.comprehensive_health_check()
            return diagnose(report)
        except Exception as exc:
            return {"timestamp": datetime.now(timezone.utc).isoformat(), "issues_found": 0, "diagnostics": [],
                    "resolution_plan": [], "priority_actions": [f"Fix health monitoring system issues: {exc}"]}

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
