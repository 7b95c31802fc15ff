"""This process's `ffchat_` metrics, published through Ray's metrics API (`ray.util.metrics`).

Recording adds to a local `Tally` (~0.7 µs for a data call) and one daemon thread flushes it to Ray
once a second: Ray's own recorder costs 2-5 µs a call here, too much for every data call. Nothing is recorded
until `start()`, which only a bridge on a Ray runtime and a shard actor running under Ray call, and
which refuses on the minimal ray: in-process bridges, unit-test actors, processes without Ray and
installs without `ray[default]` record nothing. Ray's metrics agent serves the series on its
Prometheus endpoint with a `ray_` prefix.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable

from engine.metrics import LATENCY_BUCKETS_MS, Drained, Tally, Tags

logger = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 1.0

# name: (kind, description, tag keys). README's "Metrics" table lists the same names.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ffchat_operations_total": ("counter", "Data calls a bridge answered",
                                ("path", "operation", "transport", "outcome")),
    "ffchat_operation_latency_ms": ("histogram", "Latency of a bridge's data calls, ms",
                                    ("path", "operation", "transport")),
    "ffchat_operation_errors_total": ("counter", "Data calls that failed, by error code",
                                      ("path", "operation", "code")),
    "ffchat_shard_batches_total": ("counter", "Batches a bridge sent to a shard, by the transport that carried them",
                                   ("path", "shard", "transport")),
    "ffchat_shard_queue_depth": ("gauge", "Calls waiting in a bridge for a free slot to a shard", ("path", "shard")),
    "ffchat_shard_cache_hits_total": ("counter", "Result-cache hits of a shard", ("path", "shard")),
    "ffchat_shard_cache_misses_total": ("counter", "Result-cache misses of a shard", ("path", "shard")),
    "ffchat_shard_compactions_total": ("counter", "Log compactions a shard ran", ("path", "shard")),
    "ffchat_shard_log_bytes": ("gauge", "Bytes of a shard's log segments on disk", ("path", "shard")),
    "ffchat_shard_restarts": ("gauge", "Times a shard's actor restarted while serving it", ("path", "shard")),
    "ffchat_backups_total": ("counter", "Online backups a bridge took, by outcome", ("path", "outcome")),
    "ffchat_backup_bytes_copied_total": ("counter", "Bytes backups wrote (new since earlier backups)", ("path",)),
}
Sampler = Callable[[Tally], bool]  # sets gauges at flush time; False once its subject is gone


class Exporter:
    """One process's metrics: a locked tally, gauge samplers, and the flush to Ray.

    Example:
        >>> EXPORTER.start()  # on a Ray runtime; recording before (or without) it does nothing
        >>> EXPORTER.count("ffchat_operations_total", (path, "get_chat_history", "direct", "ok"))
    """

    def __init__(self, publish: Callable[[Drained], None] | None = None) -> None:
        self._publish = publish or _publish_to_ray
        self._lock = threading.Lock()
        self._tally = Tally()
        self._samplers: list[Sampler] = []
        self._thread: threading.Thread | None = None
        self.started = False

    def start(self, interval_s: float = FLUSH_INTERVAL_S) -> bool:
        """Record from now on and flush every `interval_s` (and at exit); False (nothing recorded)
        when this process has no Ray runtime, or runs the minimal ray, whose nodes start no metrics
        agent (nothing would ever read the series). Idempotent."""
        if self.started:
            return True
        if os.environ.get("FFCHAT_METRICS", "").lower() in ("0", "off", "false", "no"):
            return False
        if importlib.util.find_spec("prometheus_client") is None:  # installed by ray[default] only
            return False
        try:
            import ray
            if not ray.is_initialized():
                return False
        except ImportError:
            return False
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(interval_s,), name="ffchat-metrics",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            self.started = True
        return True

    def count(self, name: str, tags: Tags, amount: float = 1) -> None:
        if self.started:
            with self._lock:
                self._tally.count(name, tags, amount)

    def observe(self, name: str, tags: Tags, value_ms: float) -> None:
        if self.started:
            with self._lock:
                self._tally.observe(name, tags, value_ms)

    def record_operation(self, path: str, operation: str, transport: str, elapsed_ms: float, code: str | None) -> None:
        """One data call a bridge answered (`code` None: it succeeded), under one lock acquisition."""
        if not self.started:
            return
        with self._lock:
            tally = self._tally
            tally.count("ffchat_operations_total", (path, operation, transport, "ok" if code is None else "error"))
            tally.observe("ffchat_operation_latency_ms", (path, operation, transport), elapsed_ms)
            if code is not None:
                tally.count("ffchat_operation_errors_total", (path, operation, code))

    def record_shard(self, path: str, shard: int, facts: dict[str, Any], restarts: int, fresh: bool = False) -> None:
        """A shard's engine figures (`Shard.counters()`): running totals and gauges. `fresh`: the first
        report of a newly opened shard (its totals start from zero, even if this process served it before)."""
        if not self.started:
            return
        tags = (path, str(shard))
        with self._lock:
            for name, fact in (("ffchat_shard_cache_hits_total", "cache_hits"),
                               ("ffchat_shard_cache_misses_total", "cache_misses"),
                               ("ffchat_shard_compactions_total", "compactions")):
                self._tally.total(name, tags, facts[fact], fresh)
            self._tally.gauge("ffchat_shard_log_bytes", tags, facts["log_bytes"])
            self._tally.gauge("ffchat_shard_restarts", tags, restarts)

    def add_sampler(self, sampler: Sampler) -> None:
        with self._lock:
            self._samplers.append(sampler)

    def flush(self) -> None:
        """Sample the gauges and publish everything recorded since the last flush. Never raises."""
        try:
            with self._lock:
                self._samplers = [sampler for sampler in self._samplers if sampler(self._tally)]
                drained = self._tally.drain()
            if drained.increments or drained.histograms or drained.gauges:
                self._publish(drained)
        except Exception as exc:  # metrics must never fail the process they describe
            logger.debug("metrics flush failed: %s", exc)

    def _run(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            self.flush()


def queue_sampler(backend: Any, path: str) -> Sampler:
    """A sampler of a bridge backend's per-shard queues, held weakly; it stops once the backend is
    detached (its transport's `metrics_path` is None) or collected."""
    reference = weakref.ref(backend)

    def sample(tally: Tally) -> bool:
        current = reference()
        if current is None or current.transport.metrics_path is None:  # collected, or detached
            return False
        for client in current.clients:
            tally.gauge("ffchat_shard_queue_depth", (path, str(client.index)), client.queued())
        return True
    return sample


_RAY_METRICS: dict[str, Any] = {}


def _ray_metric(name: str) -> Any:
    metric = _RAY_METRICS.get(name)
    if metric is None:
        from ray.util import metrics
        kind, description, keys = METRICS[name]
        if kind == "counter":
            metric = metrics.Counter(name, description, tag_keys=keys)
        elif kind == "gauge":
            metric = metrics.Gauge(name, description, tag_keys=keys)
        else:
            metric = metrics.Histogram(name, description, boundaries=list(LATENCY_BUCKETS_MS), tag_keys=keys)
        _RAY_METRICS[name] = metric
    return metric


def _publish_to_ray(drained: Drained) -> None:
    """Hand a flush to ray.util.metrics. A histogram bucket is replayed as its samples' mean, once per
    sample: each count lands in the right bucket and the sum is exact, as Prometheus exposes them."""
    for (name, tags), amount in drained.increments.items():
        if amount > 0:  # Ray refuses an increment of 0
            _ray_metric(name).inc(amount, dict(zip(METRICS[name][2], tags)))
    for (name, tags), value in drained.gauges.items():
        _ray_metric(name).set(value, dict(zip(METRICS[name][2], tags)))
    for (name, tags), buckets in drained.histograms.items():
        metric, labels = _ray_metric(name), dict(zip(METRICS[name][2], tags))
        for slot, (count, total) in enumerate(zip(buckets.counts, buckets.sums)):
            for _ in range(count):
                metric.observe(bucket_mean(slot, total / count), labels)


def bucket_mean(slot: int, mean: float) -> float:
    """`mean` kept inside bucket `slot` (a float sum divided back may stray past a bound)."""
    if slot < len(LATENCY_BUCKETS_MS):
        mean = min(mean, LATENCY_BUCKETS_MS[slot])
    if slot > 0:
        mean = max(mean, math.nextafter(LATENCY_BUCKETS_MS[slot - 1], math.inf))
    return mean


EXPORTER = Exporter()  # the process's one exporter: Ray's metrics are per process too
