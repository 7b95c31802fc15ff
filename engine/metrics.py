"""Per-operation latency recorder in bounded memory: lifetime count/mean/min/max, recent percentiles."""

from __future__ import annotations

import math
from collections import deque


class LatencyRecorder:
    """Records latencies (ms) of one operation.

    Percentiles are nearest-rank over the last `window` samples so memory stays bounded.

    Example:
        >>> r = LatencyRecorder(); r.record(1.0); r.record(3.0); r.snapshot()["p50_ms"]
        1.0
    """

    __slots__ = ("count", "errors", "total_ms", "min_ms", "max_ms", "_recent", "_window")

    def __init__(self, window: int = 1000) -> None:
        self._window = window
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def record(self, elapsed_ms: float, error: bool = False) -> None:
        self.count += 1
        self.total_ms += elapsed_ms
        if elapsed_ms < self.min_ms:
            self.min_ms = elapsed_ms
        if elapsed_ms > self.max_ms:
            self.max_ms = elapsed_ms
        if error:
            self.errors += 1
        self._recent.append(elapsed_ms)

    def reset(self) -> None:
        self._recent.clear()
        self.count = 0
        self.errors = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def recent(self) -> list[float]:
        return list(self._recent)

    def snapshot(self) -> dict[str, float | int]:
        samples = sorted(self._recent)
        last10 = list(self._recent)[-10:]
        return {
            "average_ms": self.total_ms / self.count if self.count else 0.0,
            "min_ms": self.min_ms if self.count else 0.0,
            "max_ms": self.max_ms,
            "total_operations": self.count,
            "recent_avg_ms": sum(last10) / len(last10) if last10 else 0.0,
            "p50_ms": nearest_rank(samples, 50),
            "p95_ms": nearest_rank(samples, 95),
            "p99_ms": nearest_rank(samples, 99),
            "error_count": self.errors,
        }


def nearest_rank(sorted_samples: list[float], percentile: float) -> float:
    """Nearest-rank percentile of already sorted samples (0.0 when empty)."""
    if not sorted_samples:
        return 0.0
    rank = max(1, math.ceil(percentile / 100.0 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]
