"""Measurement helpers: percentiles, figures with targets and baseline ratios, memory of the runtime."""

from __future__ import annotations

import gc
import os
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from engine.config import MB
from engine.metrics import nearest_rank



def stats(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"n": 0, "avg_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {"n": len(ordered), "avg_ms": sum(ordered) / len(ordered), "p50_ms": nearest_rank(ordered, 50),
            "p95_ms": nearest_rank(ordered, 95), "p99_ms": nearest_rank(ordered, 99), "max_ms": ordered[-1]}


@dataclass
class Figure:
    """One reported number: ours, the baseline's, the document's target and the verdict."""

    section: str
    name: str
    unit: str
    ours: float
    baseline: float | None = None
    target: float | None = None
    higher_is_better: bool = False
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.ours >= self.target if self.higher_is_better else self.ours <= self.target

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (>1 means we win)."""
        if self.baseline is None or self.baseline == 0 or self.ours == 0:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "ratio": self.ratio}


def driver_rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / MB


def runtime_memory_mb() -> dict[str, Any]:
    """Memory of every process of this machine's Ray runtime plus this driver: RSS, USS and PSS sums,
    and `by_process`: (what it is, USS MB) for each, largest first."""
    totals: dict[str, Any] = {"rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    rows: list[tuple[str, float]] = []
    me = os.getpid()
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            label = _ray_process_label(process, me)
            if label is None:
                continue
            info = process.memory_full_info()
            totals["rss_mb"] += info.rss / MB
            totals["uss_mb"] += info.uss / MB
            totals["pss_mb"] += getattr(info, "pss", 0) / MB
            totals["processes"] += 1
            rows.append((label, info.uss / MB))
        except (psutil.Error, OSError):
            continue
    totals["by_process"] = sorted(rows, key=lambda row: -row[1])
    return totals


_PROCESS_MARKERS = (("gcs_server", "gcs_server"), ("raylet", "raylet"), ("dashboard/agent", "dashboard agent"),
                    ("runtime_env/agent", "runtime env agent"), ("log_monitor", "log monitor"),
                    ("dashboard.py", "dashboard"), ("monitor.py", "autoscaler monitor"),
                    ("default_worker.py", "idle worker"))


def _ray_process_label(process: psutil.Process, me: int) -> str | None:
    """What a process of the runtime is ("driver", "ray::ShardActor", "raylet", ...), None if not one."""
    if process.info["pid"] == me:
        return "driver"
    name = process.info.get("name") or ""
    if name.startswith("ray::"):
        return name
    joined = " ".join(process.info.get("cmdline") or [])
    for marker, label in _PROCESS_MARKERS:
        if marker in joined:
            return label
    return "ray (other)" if "ray/_private" in joined or "ray/dashboard" in joined else None
