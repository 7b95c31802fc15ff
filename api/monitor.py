"""`PerformanceMonitor` (contract §8): the requirements document's monitor, fed by real metrics."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLDS = {"avg_response_time_ms": 100, "p95_response_time_ms": 200, "memory_usage_mb": 500,
                      "cache_hit_rate": 0.7, "error_rate": 0.05}


@dataclass
class MetricSample:
    name: str
    value: float
    timestamp: float
    unit: str
    tags: dict[str, str] | None = None


class PerformanceMonitor:
    """Collects samples from the bridge and raises threshold alerts.

    Example:
        >>> monitor = PerformanceMonitor(bridge)
        >>> await monitor.collect_metrics(); monitor.get_performance_summary()["active_alerts"]
    """

    def __init__(self, bridge: Any, thresholds: dict[str, float] | None = None) -> None:
        self.bridge = bridge
        self.metrics_history: deque[MetricSample] = deque(maxlen=1000)
        self.alerts: list[str] = []
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        self._latest_alert_count = 0

    def _add(self, name: str, value: float, unit: str, now: float, tags: dict[str, str] | None = None) -> MetricSample:
        sample = MetricSample(name, float(value), now, unit, tags)
        self.metrics_history.append(sample)
        return sample

    async def collect_metrics(self) -> list[MetricSample]:
        data_layer = self.bridge.get_data_layer()
        metrics = data_layer.get_performance_metrics()
        health = await self.bridge.health_check()
        now = time.time()
        samples: list[MetricSample] = []
        recent: list[float] = []
        for operation, stats in metrics["operation_metrics"].items():
            tags = {"operation": operation}
            samples.append(self._add(f"{operation}_avg_ms", stats["average_ms"], "milliseconds", now, tags))
            samples.append(self._add(f"{operation}_p95_ms", stats["p95_ms"], "milliseconds", now, tags))
            recorder = data_layer.metrics.operations.get(operation)
            if recorder is not None:
                recent.extend(recorder.recent())
        if recent:
            recent.sort()
            from engine.metrics import nearest_rank
            samples.append(self._add("avg_response_time_ms", sum(recent) / len(recent), "milliseconds", now))
            samples.append(self._add("p95_response_time_ms", nearest_rank(recent, 95), "milliseconds", now))
        system = metrics["system_metrics"]
        samples.append(self._add("memory_usage_mb", system["memory_usage_mb"], "megabytes", now))
        samples.append(self._add("cluster_memory_mb", system["cluster_memory_mb"], "megabytes", now))
        samples.append(self._add("health_check_ms", health["check_duration_ms"], "milliseconds", now))
        cache = metrics["cache_stats"]
        if cache["cache_hits"] + cache["cache_misses"] > 0:
            samples.append(self._add("cache_hit_rate", cache["cache_hit_rate"], "ratio", now))
        if metrics["total_operations"] > 0:
            samples.append(self._add("error_rate", metrics["error_rate"], "ratio", now))
        await self.check_thresholds()
        return samples

    async def check_thresholds(self) -> list[str]:
        now = time.time()
        latest: dict[str, MetricSample] = {}
        for sample in self.metrics_history:
            if now - sample.timestamp < 60:
                latest[sample.name] = sample
        new: list[str] = []
        for name, threshold in self.thresholds.items():
            sample = latest.get(name)
            if sample is None:
                continue
            value = sample.value
            if name == "cache_hit_rate":
                if value < threshold:
                    new.append(f"Low cache hit rate: {value:.2%} < {threshold:.2%}")
            elif name == "error_rate":
                if value > threshold:
                    new.append(f"High error rate: {value:.2%} > {threshold:.2%}")
            elif name.endswith("_ms"):
                if value > threshold:
                    new.append(f"High {name}: {value:.2f}ms > {threshold}ms")
            elif name.endswith("_mb") and value > threshold:
                new.append(f"High {name}: {value:.1f}MB > {threshold}MB")
        self.alerts.extend(new)
        del self.alerts[:-100]
        self._latest_alert_count = len(new)
        return new

    def get_performance_summary(self) -> dict[str, Any]:
        now = time.time()
        recent = [s for s in self.metrics_history if now - s.timestamp < 300]
        groups: dict[str, list[float]] = {}
        for sample in recent:
            groups.setdefault(sample.name, []).append(sample.value)
        return {"timestamp": now, "metrics_collected": len(recent), "active_alerts": self._latest_alert_count,
                "current_metrics": {name: {"avg": sum(v) / len(v), "min": min(v), "max": max(v), "latest": v[-1]}
                                    for name, v in groups.items()},
                "alerts": self.alerts[-10:]}
