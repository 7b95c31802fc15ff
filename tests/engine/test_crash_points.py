"""Durability as a property proved by enumeration: every I/O step of every workload is a crash point
and a fault point (scale_tests/crash_points/ holds the harness; these runs are its CI share)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.message_log as message_log
import engine.recovery as recovery
from engine import operations as ops
from engine.errors import CorruptRecord
from scale_tests import crash_points
from scale_tests.crash_points import Tally, Workload, enumerate_crashes, inject_faults, message, workloads

WORKLOADS = workloads()


def _id(workload: Workload) -> str:
    return f"{workload.name} ({workload.durability})"


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_a_crash_at_any_step_loses_nothing_acknowledged_and_the_shard_opens(workload):
    """Crash at every I/O step (process kill, torn last write, power loss): the reopened shard holds
    a prefix of the logged records that covers every acknowledged one, and takes writes."""
    tally = Tally()
    enumerate_crashes(workload, tally)
    assert tally.failures == []
    assert (tally.lost, tally.duplicated, tally.unopenable) == (0, 0, 0)
    assert tally.crash_points >= 40 and tally.recoveries >= 4 * tally.crash_points


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_enospc_or_eio_at_any_step_keeps_the_shard_serving_and_loses_nothing(workload):
    """Fail every I/O step once with ENOSPC (also after a short write) or EIO: the live shard holds
    exactly the acknowledged operations, heals, takes writes, and a crash or reopen changes nothing."""
    tally = Tally()
    inject_faults(workload, tally)
    assert tally.failures == []
    assert tally.fault_points >= 3 * 40


def test_the_enumeration_catches_a_log_that_acknowledges_before_fdatasync(monkeypatch):
    """The harness is not vacuous: a log that skips fdatasync in fsync mode is caught losing data."""
    original = message_log.MessageLog._commit
    monkeypatch.setattr(message_log.MessageLog, "_commit",
                        lambda self, records, sync: original(self, records, False))
    tally = Tally()
    enumerate_crashes(next(w for w in WORKLOADS if w.durability == "fsync"), tally)
    assert tally.lost > 0 and tally.failures


def test_the_enumeration_catches_a_recovery_that_refuses_torn_tails(monkeypatch):
    """The harness is not vacuous: refusing to open on a torn tail is reported as unopenable."""
    def refuse(self, *args):
        raise CorruptRecord("refusing a torn tail")
    monkeypatch.setattr(recovery.Recovery, "_truncate_tail", refuse)
    tally = Tally()
    enumerate_crashes(WORKLOADS[0], tally)
    assert tally.unopenable > 0


# ---------------------------------------------------------------------- property-based runs
_KEYS = st.sampled_from([("alice", "s1"), ("bob", "s1"), ("alice", "s2")])
_SIZES = st.sampled_from([5, 300, 1500])


@st.composite
def _operation(draw: st.DrawFn, number: int) -> ops.ShardOperation:
    user, session = draw(_KEYS)
    kind = draw(st.sampled_from(["append", "append", "append", "create", "delete", "compact", "rename", "flush",
                                 "purge"]))
    if kind == "append":
        count = draw(st.integers(1, 3))
        return ops.Append(user, session, [message(f"m{number}-{i}", "y" * draw(_SIZES)) for i in range(count)])
    if kind == "create":
        return ops.CreateSession(user, session)
    if kind == "delete":
        return ops.DeleteSession(user, session)
    if kind == "rename":
        return ops.UpdateSession(user, session, {"title": f"t{number}"})
    if kind == "purge":
        return ops.Purge(crash_points.WALL_CLOCK + 1, user)
    return ops.Compact() if kind == "compact" else ops.Flush()


@st.composite
def _workload(draw: st.DrawFn) -> Workload:
    durability = draw(st.sampled_from(["fsync", "flush", "none"]))
    units = [[ops.CreateSession("alice", "s1"), ops.CreateSession("bob", "s1")]]
    for number in range(draw(st.integers(1, 5))):
        units.append([draw(_operation(number * 10 + i)) for i in range(draw(st.integers(1, 3)))])
    return Workload(f"hypothesis ({durability})", durability, units, segment_bytes_max=4096,
                    compress_sealed=draw(st.booleans()), record_bytes_max=draw(st.sampled_from([None, 4096])))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(workload=_workload(), crash_at=st.floats(0.0, 1.0), fault_at=st.floats(0.0, 1.0),
       code=st.sampled_from([errno.ENOSPC, errno.EIO]))
def test_random_operation_sequences_survive_random_crashes_and_faults(workload, crash_at, fault_at, code):
    """Random operations in a random mode, a crash at a random step and a fault at another (fixed
    seed in CI; `python -m scale_tests.crash_points --runs N` runs longer): nothing acknowledged is
    lost, the shard opens, a fault leaves it serving."""
    reference = crash_points.reference_run(workload)
    crash_step = 1 + int(crash_at * (reference.steps - 1))
    fault_step = 1 + int(fault_at * (reference.steps - 1))
    tally = Tally()
    enumerate_crashes(workload, tally, step_filter=lambda step: step == crash_step)
    tally.fault_points += 1
    crash_points.faulty_run(workload, fault_step, code, 0, tally)
    assert tally.failures == []


def test_the_enumeration_catches_a_compaction_finish_that_trusts_the_remaining_files(monkeypatch):
    """The harness is not vacuous for compaction: the old finish (first segment taken from the files
    still waiting in compact.ready) duplicated or deleted data after some crash points."""
    import os

    from engine import compaction, segment
    from engine.filesystem import atomic_write, remove_tree

    def old_finish(fs, directory):
        ready = os.path.join(directory, compaction.READY)
        if fs.exists(ready):
            names = [name for name in fs.listdir(ready) if name != "PLAN"]
            numbers = [segment.number_of(name) for name in names]
            first = min(numbers) if numbers else 0
            for name in names:
                fs.replace(os.path.join(ready, name), os.path.join(directory, name))
            fs.fsync_dir(directory)
            if numbers:
                atomic_write(fs, os.path.join(directory, "BASE"), str(first).encode())
                for name in fs.listdir(directory):
                    number = segment.number_of(name)
                    if number is not None and number < first:
                        fs.unlink(os.path.join(directory, name))
            remove_tree(fs, ready)
            fs.fsync_dir(directory)
        return False
    monkeypatch.setattr(compaction, "finish", old_finish)
    tally = Tally()
    enumerate_crashes(next(w for w in WORKLOADS if w.name == "compaction"), tally)
    assert tally.duplicated > 0 or tally.lost > 0


def test_the_enumeration_catches_a_recovery_that_refuses_out_of_order_tails(monkeypatch):
    """The harness is not vacuous for page order: treating any valid frame after damage as corruption
    (the rule before write numbers) refuses to open after a power loss that kept later pages only."""
    from engine import codec, segment
    monkeypatch.setattr(segment, "_durable_before",
                        lambda data, offset, salt, write: any(True for _ in codec.valid_frames_after(data, offset, salt)))
    tally = Tally()
    enumerate_crashes(next(w for w in WORKLOADS if w.record_bytes_max is not None), tally)
    assert tally.unopenable > 0
