"""`get_performance_metrics()` shape: operation figures, real cache stats, system and cluster memory."""

from __future__ import annotations

import time
from typing import Any

import psutil

from engine.config import MB


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except (psutil.Error, OSError):
        return 0.0


def ray_system_memory_mb() -> float:
    """RSS of this machine's Ray system processes (raylet, GCS, object store...), in MB."""
    names = ("raylet", "gcs_server", "plasma", "dashboard", "log_monitor", "monitor.py", "runtime_env")
    total = 0.0
    for process in psutil.process_iter(["name", "cmdline", "memory_info"]):
        try:
            text = " ".join(process.info.get("cmdline") or []) or (process.info.get("name") or "")
            if any(name in text for name in names) and process.info.get("memory_info"):
                total += process.info["memory_info"].rss / MB
        except (psutil.Error, OSError):
            continue
    return total


def cluster_memory(shards: list[dict[str, Any] | None], extra_pids: list[int], owns_runtime: bool) -> dict[str, float]:
    pids = {s["pid"] for s in shards if s and s.get("pid")} | set(extra_pids)
    actors = sum(_rss_mb(pid) for pid in pids)
    system = ray_system_memory_mb() if owns_runtime else 0.0
    return {"actors": actors, "ray_system": system}


def performance_metrics(bridge: Any, metrics: Any) -> dict[str, Any]:
    summary = metrics.summary()
    shards = list(bridge._shard_snapshot)
    settings = bridge.settings
    backend = bridge.backend
    shard_count = backend.shard_count if backend else len(shards)
    entries = sum((s or {}).get("cache_entries", 0) for s in shards)
    cache_bytes = sum((s or {}).get("cache_bytes", 0) for s in shards)
    capacity = settings.cache_size_mb * MB
    driver_mb = psutil.Process().memory_info().rss / MB
    breakdown = bridge._memory_breakdown
    return {
        "operation_metrics": summary["operation_metrics"],
        "cache_stats": {"cache_size": entries, "cache_bytes": cache_bytes, "cache_capacity_bytes": capacity,
                        "cache_hits": summary["cache_hits"], "cache_misses": summary["cache_misses"],
                        "cache_hit_rate": summary["cache_hit_rate"], "cache_hit_ratio": summary["cache_hit_rate"]},
        "optimization_info": {"performance_mode": settings.performance_mode, "caching_enabled": True,
                              "batch_processing": True, "durability": settings.resolved_durability(),
                              "shard_count": shard_count},
        "total_operations": summary["total_operations"], "error_count": summary["error_count"],
        "error_rate": summary["error_rate"],
        "system_metrics": {"driver_memory_mb": driver_mb, "memory_usage_mb": driver_mb,
                           "cluster_memory_mb": breakdown["actors"] + breakdown["ray_system"],
                           "cluster_memory_breakdown_mb": dict(breakdown), "shard_count": shard_count,
                           "shard_cache_bytes": [(s or {}).get("cache_bytes", 0) for s in shards],
                           "sampled_at": bridge._snapshot_at or time.time()},
    }
