"""The metrics exporter: nothing recorded outside Ray, the flush hands over exactly what was recorded,
and a histogram bucket replayed to Ray keeps its counts and sum."""

import math
import subprocess
import sys

import pytest

from actors.exporter import METRICS, Exporter, bucket_mean
from engine.metrics import LATENCY_BUCKETS_MS


def _recording(exporter):
    exporter.record_operation("p", "store_chat_message", "direct", 0.3, None)
    exporter.record_operation("p", "store_chat_message", "direct", 7.0, "SESSION_NOT_FOUND")
    exporter.record_shard("p", 0, {"cache_hits": 4, "cache_misses": 1, "compactions": 0, "log_bytes": 99}, 0)


def test_recording_before_start_is_a_no_op():
    """An exporter that was not started (no Ray runtime) keeps nothing and publishes nothing."""
    published = []
    exporter = Exporter(publish=published.append)
    _recording(exporter)
    exporter.flush()
    assert published == [] and not exporter.started


def test_start_refuses_without_a_ray_runtime():
    """In a process without a Ray runtime `start()` is False and the process's exporter stays off."""
    code = ("from actors.exporter import EXPORTER; import sys; started = EXPORTER.start();"
            "EXPORTER.count('ffchat_operations_total', ('p', 'x', 'direct', 'ok'));"
            "sys.exit(0 if started is False and not EXPORTER.started else 1)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_flush_publishes_what_was_recorded_once():
    """A started exporter aggregates between flushes and hands each interval over once."""
    published = []
    exporter = Exporter(publish=published.append)
    exporter.started = True  # as start() leaves it, without the flush thread: flushed by hand here
    _recording(exporter)
    _recording(exporter)
    exporter.flush()
    exporter.flush()  # nothing new: nothing published
    assert len(published) == 1
    drained = published[0]
    assert drained.increments[("ffchat_operations_total", ("p", "store_chat_message", "direct", "ok"))] == 2
    assert drained.increments[("ffchat_operations_total", ("p", "store_chat_message", "direct", "error"))] == 2
    assert drained.increments[("ffchat_operation_errors_total", ("p", "store_chat_message", "SESSION_NOT_FOUND"))] == 2
    assert drained.increments[("ffchat_shard_cache_hits_total", ("p", "0"))] == 4  # a running total, once
    assert drained.gauges[("ffchat_shard_log_bytes", ("p", "0"))] == 99
    assert sum(drained.histograms[("ffchat_operation_latency_ms", ("p", "store_chat_message", "direct"))].counts) == 4


def test_a_failing_publish_never_raises():
    """Metrics never fail the process they describe: a publish that raises is logged and dropped."""
    def broken(drained):
        raise RuntimeError("metrics backend down")
    exporter = Exporter(publish=broken)
    exporter.started = True
    _recording(exporter)
    exporter.flush()


@pytest.mark.parametrize("slot, mean", [(0, 0.1000000000001), (1, 0.1), (3, 0.7), (len(LATENCY_BUCKETS_MS), 9e9)])
def test_a_bucket_mean_stays_inside_its_bucket(slot, mean):
    """The value replayed for a bucket lies in (previous bound, bound], whatever the float sum did."""
    value = bucket_mean(slot, mean)
    assert slot == len(LATENCY_BUCKETS_MS) or value <= LATENCY_BUCKETS_MS[slot]
    assert slot == 0 or value > LATENCY_BUCKETS_MS[slot - 1]
    assert math.isfinite(value)


def test_every_metric_is_named_and_tagged_for_prometheus():
    """Names carry the ffchat_ prefix and no user id is ever a tag (cardinality)."""
    assert all(name.startswith("ffchat_") for name in METRICS)
    assert all(kind in ("counter", "gauge", "histogram") for kind, _, _ in METRICS.values())
    assert not any("user" in key for _, _, keys in METRICS.values() for key in keys)


def test_a_shard_actor_built_in_process_does_not_export(ray_runtime):
    """Outside a Ray actor a ShardActor does not export, even in a process that runs Ray."""
    from actors.shard_actor import ShardActor
    assert ShardActor(0, tune_gc=False, exit_on_fatal=False)._exporting is False
