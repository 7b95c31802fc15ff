"""The log's failure bookkeeping: a failed step is recorded once, cleared by the next success, and a
write that settles an unknown compaction outcome goes on (each test failed before its fix)."""

from __future__ import annotations

import errno

import pytest

from engine import codec
from engine import operations as ops
from engine.errors import StorageFailure
from engine.shard import Shard
from engine.simulated_filesystem import SimulatedFileSystem
from tests.factories import engine_config, message


def _ids(shard, user="u", session="s"):
    return [m["message_id"] for m in shard.read_range(user, session, 0, 10**6)["messages"]]


def test_a_failed_periodic_fsync_is_cleared_by_the_next_one_that_succeeds():
    """A failed periodic fsync used to stay the log's reported failure (and its backoff) forever."""
    failing = {"on": False}
    fs = SimulatedFileSystem(fail=lambda step: errno.EIO if failing["on"] and step.operation == "fsync" else None)
    clock = [0.0]
    shard = Shard(engine_config("/store"), 0, fs=fs, monotonic=lambda: clock[0])
    shard.open()
    shard.execute([ops.CreateSession("u", "s")])
    failing["on"] = True
    clock[0] += 2
    shard.maintain()
    assert shard.log.failure is not None and shard.log.failure.startswith("sync")
    failing["on"] = False
    shard.execute([ops.Append("u", "s", [message("more")])])
    clock[0] += 10
    shard.maintain()
    assert shard.log.failure is None and not shard.probe()["degraded"]


def test_one_failed_none_mode_flush_is_recorded_once():
    """A failed background flush used to be recorded twice (as the write and again as the flush)."""
    failing = {"on": False}
    fs = SimulatedFileSystem(fail=lambda step: errno.ENOSPC if failing["on"] and step.operation == "write" else None)
    clock = [0.0]
    shard = Shard(engine_config("/store", durability="none"), 0, fs=fs, monotonic=lambda: clock[0])
    shard.open()
    shard.execute([ops.CreateSession("u", "s")])
    failing["on"] = True
    clock[0] += 2
    shard.maintain()
    assert shard.log.failures == 1


def test_a_write_that_settles_an_uncommitted_compaction_goes_on():
    """When a compaction's commit failed and whether it happened could not be told, the next write
    settles it; a compaction that did not commit is discarded and that write succeeds (it used to
    fail with the compaction's error)."""
    state = {"rule": None}
    fs = SimulatedFileSystem(fail=lambda step: state["rule"](step) if state["rule"] else None)
    clock = [0.0]
    shard = Shard(engine_config("/store", durability="fsync"), 0, fs=fs, monotonic=lambda: clock[0])
    shard.open()
    shard.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("kept", message_id="k")])])
    # The commit rename fails, and so does the check of whether it happened (once each).
    armed = {"replace": 1, "exists": 0}

    def commit_fails(step):
        if step.operation == "replace" and step.path.endswith("compact.ready") and armed["replace"]:
            armed["replace"], armed["exists"] = 0, 1
            return errno.EIO
        if step.operation == "exists" and step.path.endswith("compact.ready") and armed["exists"]:
            armed["exists"] = 0
            return errno.EIO
        return None
    state["rule"] = commit_fails
    with pytest.raises(StorageFailure):
        shard.log.rewrite(shard.state.snapshot_records(False))
    assert armed == {"replace": 0, "exists": 0}
    state["rule"] = None
    now = "2026-01-01T00:00:00+00:00"
    row = ["n", "user", "next", now, None, None, now]
    shard.log.append_batch(codec.pack(codec.MESSAGES, {"u": "u", "s": "s", "m": [row], "t": now}))  # settles it
    shard.close()
    reopened = Shard(engine_config("/store", durability="fsync"), 0, fs=fs.after_process_crash())
    reopened.open()
    assert _ids(reopened) == ["k", "n"]
