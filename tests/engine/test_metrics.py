"""`Tally`, the local aggregate of exported metrics: counts, running totals, histogram buckets, gauges."""

import os

from engine.metrics import LATENCY_BUCKETS_MS, Tally, path_tag


def test_counts_add_up_per_series_and_drain_starts_over():
    """Increments of one (name, tags) add up; other tags are another series; drain empties the tally."""
    tally = Tally()
    for _ in range(3):
        tally.count("ops", ("store", "ok"))
    tally.count("ops", ("store", "ok"), 2.5)
    tally.count("ops", ("store", "error"))
    assert tally.drain().increments == {("ops", ("store", "ok")): 5.5, ("ops", ("store", "error")): 1}
    assert tally.drain().increments == {}


def test_running_totals_publish_their_increase_and_a_restart_counts_from_zero():
    """A total is published as its increase since the last report; one that went down (its owner
    restarted) or is reported fresh counts whole; no change publishes nothing."""
    tally = Tally()
    tally.total("hits", ("p", "0"), 10)
    assert tally.drain().increments == {("hits", ("p", "0")): 10}
    tally.total("hits", ("p", "0"), 10)
    assert tally.drain().increments == {}
    tally.total("hits", ("p", "0"), 14)
    tally.total("hits", ("p", "0"), 17)
    assert tally.drain().increments == {("hits", ("p", "0")): 7}
    tally.total("hits", ("p", "0"), 3)  # a new shard object (restarted actor) counts from zero
    assert tally.drain().increments == {("hits", ("p", "0")): 3}
    tally.total("hits", ("p", "0"), 5, fresh=True)  # reopened here: 5 since it opened, not 5 - 3
    assert tally.drain().increments == {("hits", ("p", "0")): 5}


def test_samples_land_in_their_bucket_with_exact_counts_and_sums():
    """A sample equal to a bound is in that bound's bucket (Prometheus `le`), one above the last
    bound in the overflow bucket; each bucket keeps its count and the sum of its samples."""
    tally = Tally()
    for value in (0.05, 0.1, 0.3, 0.4, 20_000.0):
        tally.observe("latency", ("store",), value)
    buckets = tally.drain().histograms[("latency", ("store",))]
    assert buckets.counts[0] == 2 and buckets.sums[0] == 0.05 + 0.1
    assert buckets.counts[LATENCY_BUCKETS_MS.index(0.5)] == 2 and buckets.sums[2] == 0.3 + 0.4
    assert buckets.counts[-1] == 1 and buckets.sums[-1] == 20_000.0
    assert sum(buckets.counts) == 5


def test_gauges_keep_the_latest_value():
    """A gauge set twice between flushes publishes its latest value."""
    tally = Tally()
    tally.gauge("queue", ("p", "1"), 4)
    tally.gauge("queue", ("p", "1"), 2)
    assert tally.drain().gauges == {("queue", ("p", "1")): 2}


def test_path_tag_is_the_default_namespace_hash_of_the_absolute_path(tmp_path):
    """The bridge and the shards tag a path alike: relative or absolute, the same 16 hex digits."""
    os.chdir(tmp_path)
    assert path_tag("store") == path_tag(str(tmp_path / "store")) == path_tag(str(tmp_path / "x" / ".." / "store"))
    assert len(path_tag("store")) == 16
