"""`get_performance_metrics()` shape, and the shard snapshot it and the health monitor read: operation
figures, real cache stats, system and cluster memory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil

from engine.config import MB

from . import runtime

STATS_TIMEOUT_S = 2.0


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
    """MB of the path's shard processes (each reports its own RSS, wherever it runs), of the local
    `extra_pids` (the router) and, when the library started Ray, of Ray's system processes here."""
    processes = {(s.get("node_id"), s.get("pid")): s.get("rss_bytes", 0) for s in shards if s}  # one per process
    actors = sum(processes.values()) / MB
    shard_pids = {pid for _, pid in processes}
    actors += sum(_rss_mb(pid) for pid in set(extra_pids) - shard_pids)
    system = ray_system_memory_mb() if owns_runtime else 0.0
    return {"actors": actors, "ray_system": system}


@dataclass
class ShardSnapshot:
    """The latest per-shard figures a bridge holds, so sync metrics never wait on actors.

    `shards[i]` is shard i's latest stats (None until it first answers); `sampled_at` is when they were
    taken (None before the first sample); `memory_breakdown_mb` is the RSS of the path's actor
    workers and, when the library started Ray, of Ray's system processes.
    """

    shards: list[dict[str, Any] | None] = field(default_factory=list)
    sampled_at: datetime | None = None
    memory_breakdown_mb: dict[str, float] = field(default_factory=lambda: {"actors": 0.0, "ray_system": 0.0})

    @property
    def cluster_memory_mb(self) -> float:
        return self.memory_breakdown_mb["actors"] + self.memory_breakdown_mb["ray_system"]

    @property
    def restarts_total(self) -> int:
        return sum((shard or {}).get("restarts", 0) for shard in self.shards)

    def record_stats(self, shards: list[dict[str, Any] | None], memory_breakdown_mb: dict[str, float]) -> None:
        self.shards, self.memory_breakdown_mb = list(shards), dict(memory_breakdown_mb)
        self.sampled_at = datetime.now(timezone.utc)

    def merge_probes(self, probes: list[dict[str, Any]]) -> None:
        """Fold health probes in; a shard that did not answer keeps its previous figures."""
        merged = []
        for index, probe in enumerate(probes):
            previous = self.shards[index] if index < len(self.shards) else None
            merged.append(previous if probe.get("unavailable") else {**(previous or {}), **probe})
        self.shards, self.sampled_at = merged, datetime.now(timezone.utc)


async def refresh_snapshot(snapshot: ShardSnapshot, backend: Any, extra_pids: list[int]) -> None:
    """Take fresh stats from every shard and measure the workers' memory (off the event loop)."""
    shards = await backend.stats_all(min(STATS_TIMEOUT_S, backend.request_timeout_s))
    breakdown = await asyncio.get_running_loop().run_in_executor(
        None, cluster_memory, shards, extra_pids, runtime.owns_runtime())
    snapshot.record_stats(shards, breakdown)


def performance_metrics(bridge: Any, metrics: Any) -> dict[str, Any]:
    summary = metrics.summary()
    snapshot: ShardSnapshot = bridge.shard_snapshot
    shards = list(snapshot.shards)
    settings = bridge.settings
    backend = bridge.backend
    shard_count = backend.shard_count if backend else len(shards)
    entries = sum((s or {}).get("cache_entries", 0) for s in shards)
    cache_bytes = sum((s or {}).get("cache_bytes", 0) for s in shards)
    driver_mb = psutil.Process().memory_info().rss / MB
    # Before the first sample the figures are the empty snapshot's, as of now.
    sampled_at = snapshot.sampled_at or datetime.now(timezone.utc)
    return {
        "operation_metrics": summary["operation_metrics"],
        "cache_stats": {"cache_size": entries, "cache_bytes": cache_bytes,
                        "cache_capacity_bytes": settings.cache_size_mb * MB,
                        "cache_hits": summary["cache_hits"], "cache_misses": summary["cache_misses"],
                        "cache_hit_rate": summary["cache_hit_rate"], "cache_hit_ratio": summary["cache_hit_rate"]},
        "optimization_info": {"performance_mode": settings.performance_mode, "caching_enabled": True,
                              "batch_processing": True, "durability": settings.resolved_durability(),
                              "shard_count": shard_count},
        "total_operations": summary["total_operations"], "error_count": summary["error_count"],
        "error_rate": summary["error_rate"],
        "system_metrics": {"driver_memory_mb": driver_mb, "memory_usage_mb": driver_mb,
                           "cluster_memory_mb": snapshot.cluster_memory_mb,
                           "cluster_memory_breakdown_mb": dict(snapshot.memory_breakdown_mb),
                           "shard_count": shard_count,
                           "shard_cache_bytes": [(s or {}).get("cache_bytes", 0) for s in shards],
                           "sampled_at": sampled_at.isoformat()},
    }
