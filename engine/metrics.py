"""Per-operation latency recorder in bounded memory: lifetime count/mean/min/max, recent percentiles;
and `Tally`, the local aggregate of exported metrics (counts, histogram buckets, gauges) between flushes."""

from __future__ import annotations

import bisect
import hashlib
import math
import os
from collections import deque
from dataclasses import dataclass, field


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


# Upper bounds (ms) of the exported latency histograms' buckets: 0.1 ms (a direct-plane call) to 10 s
# (a request_timeout_s), about 2.5x apart, so p50 and p99 of any call this store makes fall apart.
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                      5000.0, 10000.0)
Tags = tuple[str, ...]  # tag values in the metric's tag-key order
Series = tuple[str, Tags]  # (metric name, tag values)


def path_tag(storage_path: str) -> str:
    """A storage path as a metric tag: 16 hex digits of SHA-256 of its absolute normalised form (the
    default Ray namespace without its `ffchat_` prefix), the same in the bridge and in the shards."""
    return hashlib.sha256(os.path.normpath(os.path.abspath(storage_path)).encode()).hexdigest()[:16]


@dataclass
class Buckets:
    """One histogram series between flushes: the count and the sum of the samples in each bucket
    (the last bucket is everything above the highest bound)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    sums: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS_MS) + 1))


@dataclass
class Drained:
    """What a flush publishes: counter increments, histogram buckets, latest gauge values."""

    increments: dict[Series, float]
    histograms: dict[Series, Buckets]
    gauges: dict[Series, float]


class Tally:
    """Exported metrics aggregated in this process between flushes (the caller holds any lock).

    `count` adds to a counter, `total` reports a counter's running total kept elsewhere (published
    as the increase since it was last reported; a total that went down, or one reported `fresh`,
    means its owner started again from zero, and its whole value is the increase), `observe` puts
    a sample in its histogram bucket, `gauge` sets a value. `drain()` hands everything over and starts the next interval.

    Example:
        >>> tally = Tally(); tally.count("ops", ("store",)); tally.count("ops", ("store",), 2)
        >>> tally.drain().increments[("ops", ("store",))]
        3
    """

    def __init__(self) -> None:
        self._increments: dict[Series, float] = {}
        self._histograms: dict[Series, Buckets] = {}
        self._gauges: dict[Series, float] = {}
        self._totals: dict[Series, float] = {}  # running totals as last published

    def count(self, name: str, tags: Tags, amount: float = 1) -> None:
        key = (name, tags)
        self._increments[key] = self._increments.get(key, 0) + amount

    def total(self, name: str, tags: Tags, value: float, fresh: bool = False) -> None:
        """`fresh`: the total's owner is new (counts from zero), whatever was reported before."""
        key = (name, tags)
        previous = 0 if fresh else self._totals.get(key, 0)
        increase = value - previous if value >= previous else value
        self._totals[key] = value
        if increase:
            self.count(name, tags, increase)

    def observe(self, name: str, tags: Tags, value_ms: float) -> None:
        key = (name, tags)
        buckets = self._histograms.get(key)
        if buckets is None:
            buckets = self._histograms[key] = Buckets()
        slot = bisect.bisect_left(LATENCY_BUCKETS_MS, value_ms)
        buckets.counts[slot] += 1
        buckets.sums[slot] += value_ms

    def gauge(self, name: str, tags: Tags, value: float) -> None:
        self._gauges[(name, tags)] = value

    def drain(self) -> Drained:
        drained = Drained(self._increments, self._histograms, self._gauges)
        self._increments, self._histograms, self._gauges = {}, {}, {}
        return drained
