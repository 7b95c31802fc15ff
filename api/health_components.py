"""The health monitor's components (contract 7): result types and the check of each component
(storage, data layer, configuration, cache), plus the overall optimisation score."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .config_factory import score_config

SLOW_STORAGE_MS = 500.0  # storage is degraded once the slowest shard takes this long to answer


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


def resource_status(percent: float) -> str:
    return "healthy" if percent < 80 else "degraded" if percent < 95 else "error"


def trend(recent_ms: float, overall_ms: float) -> str:
    """The recent average against the lifetime one, with a ±20 % band."""
    if overall_ms == 0 or abs(recent_ms - overall_ms) <= 0.2 * overall_ms:
        return "stable"
    return "degrading" if recent_ms > overall_ms else "improving"


def storage_result(health: dict[str, Any]) -> HealthCheckResult:
    shards = health["shards"]
    answering = [s for s in shards if s["status"] != "unavailable"]
    slowest = max((s["response_time_ms"] for s in answering), default=0.0)
    details = {"response_time_ms": slowest, "shards_total": len(shards),
               "shards_healthy": sum(1 for s in shards if s["status"] == "healthy"), "shards": shards}
    working = f"Storage operations working (response time: {slowest:.1f}ms)"
    failing = [s for s in answering if s["error"]]
    if not answering:
        return HealthCheckResult("storage", "error", "No shard answered the health probe", details,
                                 ["Check storage system configuration and connectivity"], "critical")
    if len(answering) < len(shards):
        missing = [s["shard"] for s in shards if s["status"] == "unavailable"]
        return HealthCheckResult("storage", "degraded", f"Shards {missing} unavailable", details,
                                 ["Check storage system configuration and connectivity"], "warning")
    if failing:
        return HealthCheckResult("storage", "degraded", f"Shard {failing[0]['shard']} degraded: "
                                 f"{failing[0]['error']}", details, ["Check storage permissions and disk space"],
                                 "warning")
    if slowest >= SLOW_STORAGE_MS:
        return HealthCheckResult("storage", "degraded", working, details,
                                 ["Storage operations are slow - check disk performance"], "warning")
    return HealthCheckResult("storage", "healthy", working, details)


def data_layer_result(metrics: dict[str, Any]) -> HealthCheckResult:
    operations = metrics["operation_metrics"]
    worst = max((op["recent_avg_ms"] for op in operations.values()), default=0.0)
    details = {"max_response_time_ms": worst, "operations_tracked": len(operations),
               "cache_size": metrics["cache_stats"]["cache_size"]}
    average = f"(avg response: {worst:.1f}ms)"
    if worst == 0:
        return HealthCheckResult("data_layer", "healthy", "Data layer ready (no recent operations)", details)
    if worst < 200:
        return HealthCheckResult("data_layer", "healthy", f"Data layer operating well {average}", details)
    if worst < 500:
        return HealthCheckResult("data_layer", "degraded", f"Data layer performance degraded {average}", details,
                                 ["Monitor data layer performance", "Consider cache optimization"], "warning")
    return HealthCheckResult("data_layer", "error", f"Data layer performance poor {average}", details,
                             ["Investigate data layer performance issues", "Check system resources",
                              "Review configuration optimization"], "error")


def configuration_result(config: Any) -> HealthCheckResult:
    result = score_config(config)
    score = result["optimization_score"]
    details = {"optimization_score": score, "performance_mode": config.performance_mode,
               "cache_size_mb": config.cache_size_mb, "estimated_performance": result["estimated_performance"]}
    advice = result["recommendations"]
    if not result["valid"]:
        return HealthCheckResult("configuration", "error", "Configuration validation failed",
                                 {**details, "errors": result["errors"]}, advice, "error")
    if score >= 80:
        return HealthCheckResult("configuration", "healthy", f"Configuration well optimized (score: {score})",
                                 details, advice)
    wording = "could be optimized" if score >= 60 else "needs optimization"
    return HealthCheckResult("configuration", "degraded", f"Configuration {wording} (score: {score})", details,
                             advice, "warning")


def cache_result(utilization: float) -> HealthCheckResult:
    details = {"cache_utilization": utilization}
    if utilization < 0.5:
        return HealthCheckResult("cache", "healthy", f"Cache utilization good ({utilization:.1%})", details)
    if utilization < 0.8:
        return HealthCheckResult("cache", "healthy", f"Cache utilization moderate ({utilization:.1%})", details,
                                 ["Monitor cache usage patterns"])
    return HealthCheckResult("cache", "degraded", f"Cache utilization high ({utilization:.1%})", details,
                             ["Consider increasing cache size", "Review cache eviction patterns"], "warning")


def optimization_score(components: dict[str, dict[str, Any]], system: dict[str, Any], performance: dict[str, Any]) -> int:
    penalties = {"error": 20, "degraded": 10}
    score = 100 - sum(penalties.get(c["status"], 0) for c in components.values())
    score -= sum({"error": 15, "degraded": 5}.get(info.get("status", ""), 0) for info in system.values())
    score -= penalties.get(performance["overall_status"], 0)
    return max(0, score)


