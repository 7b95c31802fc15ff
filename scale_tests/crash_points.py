"""Crash-point enumeration and fault injection for one shard, on the simulated file system.

For a workload (units of shard operations, each unit one `Shard.execute` call, as the actor runs
them) this module:

- counts its I/O steps, then for every step k crashes the process there and builds what a restart
  would find: the OS's view (process kill), the interrupted write torn at chosen byte offsets, and
  power-loss views (only fsync'd data and directory entries, or part of the unsynced tail);
- reopens each, and checks that the recovered state equals the state after some prefix of the
  records the workload logged, a prefix at least as long as the acknowledged ones (for the modes
  and crash kinds that promise it) and no longer than the acknowledged plus the interrupted unit:
  nothing acknowledged lost, nothing duplicated, nothing unwritten, deleted stays deleted;
- then writes to the reopened shard and reopens it again (it opens and accepts writes);
- for fault injection, fails step k with ENOSPC or EIO (optionally after a short write) and checks
  that the live shard equals a reference that saw only the operations acknowledged as successful,
  keeps serving, retries failed background steps until health is clean, and reopens equal.

`python -m scale_tests.crash_points [--seed N] [--runs M]` runs the enumeration and a longer
randomised run (the default test suite runs the enumeration and a short seeded randomised run).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from engine import codec
from engine.config import EngineConfig
from engine.errors import StorageFailure
from engine.manifest import PathManifest
from engine.shard import Shard
from engine.shard_state import ShardState
from engine.simulated_filesystem import SimulatedCrash, SimulatedFileSystem

ROOT = "/store"
WALL_CLOCK = 1_780_000_000.0  # a fixed acknowledgement time: reference and crash runs log equal bytes
UNIT_SECONDS = 0.3  # monotonic time per unit: none-mode flushes, retry backoffs and pauses elapse

Op = tuple[str, tuple[Any, ...], dict[str, Any]]


@dataclass
class Workload:
    """Units of operations run against shard 0 of a one-shard store."""

    name: str
    durability: str
    units: list[list[Op]]
    segment_bytes_max: int = 64 * 1024 * 1024
    compress_sealed: bool = True
    record_bytes_max: int | None = None  # shrink codec.MAX_RECORD_BYTES to exercise record groups
    with_manifest: bool = False

    def config(self) -> EngineConfig:
        return EngineConfig(storage_path=ROOT, shard_count=1, durability=self.durability,  # type: ignore[arg-type]
                            segment_bytes_max=self.segment_bytes_max, compress_sealed_segments=self.compress_sealed,
                            flush_interval_s=1.0)


@dataclass
class Tally:
    """What a run tried and found."""

    crash_points: int = 0
    recoveries: int = 0
    fault_points: int = 0
    lost: int = 0
    duplicated: int = 0
    unopenable: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: "Tally") -> None:
        for name in ("crash_points", "recoveries", "fault_points", "lost", "duplicated", "unopenable"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)


# ---------------------------------------------------------------------- running a workload
@contextlib.contextmanager
def record_bound(workload: Workload) -> Iterator[None]:
    """Temporarily shrink the record bound (writer and reader share it) for group workloads."""
    if workload.record_bytes_max is None:
        yield
        return
    saved = codec.MAX_RECORD_BYTES, codec.PART_TARGET_BYTES, codec.ROW_SLACK_BYTES
    codec.MAX_RECORD_BYTES = workload.record_bytes_max
    codec.PART_TARGET_BYTES = workload.record_bytes_max // 4
    codec.ROW_SLACK_BYTES = max(256, workload.record_bytes_max // 8)
    try:
        yield
    finally:
        codec.MAX_RECORD_BYTES, codec.PART_TARGET_BYTES, codec.ROW_SLACK_BYTES = saved


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_shard(workload: Workload, fs: SimulatedFileSystem, clock: _Clock | None = None) -> Shard:
    return Shard(workload.config(), 0, clock=lambda: WALL_CLOCK, fs=fs, monotonic=clock or _Clock(),
                 rng=random.Random(7))


def canon(state: ShardState) -> tuple[Any, ...]:
    """The logical content of a shard, comparable and hashable."""
    users = tuple(sorted((user, json.dumps(profile, sort_keys=True)) for user, profile in state.users.items()))
    sessions = tuple(sorted(
        (key, json.dumps(session.record, sort_keys=True),
         tuple((m.message_id, m.role, m.content, m.timestamp, json.dumps(m.attachments),
                json.dumps(m.metadata, sort_keys=True), m.stored_at) for m in session.messages))
        for key, session in state.sessions.items()))
    return users, sessions


@dataclass
class Reference:
    """The fault-free run: every logged record in order and the acknowledgement points."""

    steps: int
    states: dict[tuple[Any, ...], list[int]]  # canonical state -> record counts that produce it
    records_after_unit: list[int]  # records logged once unit i returned (index 0: after open)
    written_after_unit: list[int]  # records surely on the OS by then (less than logged in none mode)
    counts: list[tuple[Any, ...]]


def reference_run(workload: Workload) -> Reference:
    fs = SimulatedFileSystem()
    clock = _Clock()
    captured: list[tuple[int, Any]] = []
    with record_bound(workload):
        if workload.with_manifest:
            PathManifest(ROOT, fs).open(1, explicit=False)
        shard = new_shard(workload, fs, clock)
        original = shard.log.append_batch

        def capture(records: list[codec.Record]) -> None:
            captured.extend(codec.decode_records(records, "captured"))
            original(records)
        shard.log.append_batch = capture  # type: ignore[method-assign]
        shard.open()
        after, written = [0], [0]
        for unit in workload.units:
            clock.now += UNIT_SECONDS
            shard.execute(unit)
            after.append(len(captured))
            written.append(len(captured) if shard.log.pending_bytes == 0 else written[-1])
        shard.close()
        after.append(len(captured))
        written.append(len(captured))
    state = ShardState(0, None)
    counts = [canon(state)]
    for record_type, body in captured:
        state.apply(record_type, body)
        counts.append(canon(state))
    states: dict[tuple[Any, ...], list[int]] = {}
    for index, snapshot in enumerate(counts):
        states.setdefault(snapshot, []).append(index)
    return Reference(fs.steps, states, after, written, counts)


def crashed_run(workload: Workload, crash_at: int) -> tuple[SimulatedFileSystem, int]:
    """Run until the crash at step `crash_at`; returns the file system and the units acknowledged
    (-1: the crash came during open; len(units): during close)."""
    fs = SimulatedFileSystem(crash_at=crash_at)
    clock = _Clock()
    acknowledged = -1
    with record_bound(workload):
        try:
            if workload.with_manifest:
                PathManifest(ROOT, fs).open(1, explicit=False)
            shard = new_shard(workload, fs, clock)
            shard.open()
            acknowledged = 0
            for unit in workload.units:
                clock.now += UNIT_SECONDS
                shard.execute(unit)
                acknowledged += 1
            shard.close()
        except SimulatedCrash:
            return fs, acknowledged
    raise AssertionError(f"{workload.name}: no crash at step {crash_at} (the run has fewer steps)")


# ---------------------------------------------------------------------- what a crash leaves
def torn_offsets(data: bytes) -> list[int]:
    """Byte offsets at which to tear an interrupted write: every byte of a short write; for a long
    one the first header bytes, both sides of every frame boundary, the middle and the end."""
    if len(data) <= 48:
        return list(range(len(data)))
    offsets = {1, 2, 7, codec.FRAME_HEADER_SIZE - 1, codec.FRAME_HEADER_SIZE, codec.FRAME_HEADER_SIZE + 1,
               len(data) // 2, len(data) - 1}
    position = data.find(codec.FRAME_MAGIC, 1)
    while position != -1 and len(offsets) < 40:
        offsets.update((position - 1, position, position + 1))
        position = data.find(codec.FRAME_MAGIC, position + 1)
    return sorted(offset for offset in offsets if 0 < offset < len(data))


def survivors(fs: SimulatedFileSystem, workload: Workload) -> Iterator[tuple[str, SimulatedFileSystem, bool]]:
    """(label, file system, is power loss) for every state a restart may find."""
    yield "process crash", fs.after_process_crash(), False
    step = fs.crashed
    if step is not None and step.operation in ("write", "pwrite"):
        for offset in torn_offsets(step.data):
            yield f"write torn at byte {offset}/{len(step.data)}", fs.torn(offset), False
    yield "power loss", fs.after_power_loss(), True
    yield "power loss, half the unsynced bytes kept", fs.after_power_loss(unsynced_kept=0.5), True
    yield "power loss, unsynced renames kept", fs.after_power_loss(entries_volatile=True), True
    yield "power loss, odd pages of unsynced appends kept", fs.after_power_loss(pages="odd"), True
    yield "power loss, only the last unsynced page kept", fs.after_power_loss(pages="last"), True


def bounds(reference: Reference, workload: Workload, acknowledged: int, power_loss: bool) -> tuple[int, int]:
    """Record counts the recovered state may correspond to: [lowest, highest]."""
    if acknowledged < 0:
        return 0, 0
    highest = reference.records_after_unit[min(acknowledged + 1, len(reference.records_after_unit) - 1)]
    if power_loss and workload.durability != "fsync":
        return 0, highest
    if workload.durability == "none":
        return reference.written_after_unit[acknowledged], highest
    return reference.records_after_unit[acknowledged], highest


def check_recovery(workload: Workload, reference: Reference, fs: SimulatedFileSystem, low: int, high: int,
                   label: str, tally: Tally) -> None:
    """Reopen, compare with the allowed prefixes, then write and reopen again."""
    tally.recoveries += 1
    with record_bound(workload):
        try:
            if workload.with_manifest:
                count = PathManifest(ROOT, fs).open(3, explicit=False)
                if count != 1 and high > 0:
                    raise AssertionError(f"manifest re-initialised with {count} shards over existing data")
            shard = new_shard(workload, fs)
            shard.open()
        except AssertionError:
            raise
        except Exception as exc:  # the property under test: a shard always opens
            tally.unopenable += 1
            tally.failures.append(f"{workload.name}: {label}: did not open: {type(exc).__name__}: {exc}")
            return
        got = canon(shard.state)
        matches = reference.states.get(got, [])
        if not any(low <= index <= high for index in matches):
            _classify(reference, got, low, tally)
            tally.failures.append(f"{workload.name}: {label}: recovered state is not a prefix in [{low}, {high}] "
                                  f"(matches prefixes {matches[:5]})")
            shard.close()
            return
        results = shard.execute([("create_session", ("after", "crash"), {}),
                                 ("append", ("after", "crash", [{"role": "user", "content": "still writable",
                                                                 "message_id": "after-1"}]), {})])
        shard.close()
        again = new_shard(workload, fs)
        again.open()
        written = again.read_range("after", "crash", 0, 10)["messages"] if results[1][0] else []
        again.close()
        if [m["message_id"] for m in written] != ["after-1"]:
            tally.failures.append(f"{workload.name}: {label}: a write after recovery did not survive a reopen")


def _classify(reference: Reference, got: tuple[Any, ...], low: int, tally: Tally) -> None:
    """Count lost and duplicated messages against the lowest allowed prefix, for the report."""
    def ids(snapshot: tuple[Any, ...]) -> list[str]:
        return [m[0] for _, _, messages in snapshot[1] for m in messages]
    wanted, found = ids(reference.counts[low]), ids(got)
    tally.lost += len(set(wanted) - set(found))
    tally.duplicated += len(found) - len(set(found))


def enumerate_crashes(workload: Workload, tally: Tally, step_filter: Callable[[int], bool] = lambda k: True) -> None:
    """Crash at every step of the workload; check every state a restart may find."""
    reference = reference_run(workload)
    for step in range(1, reference.steps + 1):
        if not step_filter(step):
            continue
        fs, acknowledged = crashed_run(workload, step)
        tally.crash_points += 1
        for label, survivor, power_loss in survivors(fs, workload):
            low, high = bounds(reference, workload, acknowledged, power_loss)
            check_recovery(workload, reference, survivor, low, high,
                           f"crash at step {step} ({fs.crashed.operation if fs.crashed else '?'}), {label}", tally)


# ---------------------------------------------------------------------- fault injection
def inject_faults(workload: Workload, tally: Tally, codes: tuple[int, ...] = (errno.ENOSPC, errno.EIO)) -> None:
    """Fail each step once (ENOSPC, EIO; writes also after a short write) and check the shard keeps
    serving, matches a reference of the acknowledged operations, heals and reopens equal."""
    steps = reference_run(workload).steps
    for step in range(1, steps + 1):
        for code in codes:
            for partial in ((0, 7) if code == errno.ENOSPC else (0,)):
                tally.fault_points += 1
                label = f"{errno.errorcode[code]} at step {step}" + (f" after {partial} bytes" if partial else "")
                try:
                    _faulty_run(workload, step, code, partial, label, tally)
                except Exception as exc:  # AssertionError or anything that escaped the engine
                    tally.failures.append(f"{workload.name}: {label}: {type(exc).__name__}: {exc}")


def _faulty_run(workload: Workload, fail_step: int, code: int, partial: int, label: str, tally: Tally) -> None:
    fs = SimulatedFileSystem(fail=lambda step: code if step.number == fail_step else None,
                             partial_write_on_fail=partial)
    clean = SimulatedFileSystem()
    clock, reference_clock = _Clock(), _Clock()
    with record_bound(workload):
        if workload.with_manifest:
            PathManifest(ROOT, clean).open(1, explicit=False)
            try:
                PathManifest(ROOT, fs).open(1, explicit=False)
            except StorageFailure:
                PathManifest(ROOT, fs).open(1, explicit=False)  # the lock was released: a retry opens
        shard = new_shard(workload, fs, clock)
        try:
            shard.open()
        except StorageFailure:
            shard = new_shard(workload, fs, clock)
            shard.open()  # the failed open released everything: the retry must succeed
        reference = new_shard(workload, clean, reference_clock)
        reference.open()
        for position, unit in enumerate(workload.units):
            clock.now += UNIT_SECONDS * 4
            reference_clock.now = clock.now
            results = shard.execute(unit)
            accepted = [op for op, (ok, _) in zip(unit, results) if ok]
            reference.execute(accepted)
            if canon(shard.state) != canon(reference.state):
                raise AssertionError(f"after unit {position} the live state differs from the acknowledged operations")
        if workload.durability != "none":  # a crash now, with any failed step still pending, loses nothing
            crashed = new_shard(workload, fs.after_process_crash())
            crashed.open()
            if canon(crashed.state) != canon(reference.state):
                tally.lost += 1
                raise AssertionError("a crash after the fault lost or resurrected data")
            crashed.log.release()
        for _ in range(80):  # let backoffs pass so failed background steps are retried
            clock.now += 1.0
            shard.maintain()
        health = shard.probe()
        if health["degraded"]:
            raise AssertionError(f"still degraded after retries: {health['degraded_reason']}, "
                                 f"pending {health['pending_steps']}")
        probe = shard.execute([("create_session", ("after", "fault"), {})])
        if not probe[0][0]:  # the one fault may hit this write: then the next one must succeed
            clock.now += 10.0
            probe = shard.execute([("create_session", ("after", "fault"), {})])
        if not probe[0][0]:
            raise AssertionError(f"the shard does not take writes after the fault: {probe[0][1]}")
        reference.execute([("create_session", ("after", "fault"), {})])
        try:
            shard.close()
        except StorageFailure as exc:
            raise AssertionError(f"close failed: {exc}") from None
        reference.close()
        reopened = new_shard(workload, fs.after_process_crash())
        reopened.open()
        if canon(reopened.state) != canon(reference.state):
            tally.lost += 1
            raise AssertionError("reopened state differs from the acknowledged operations")
        reopened.close()


# ---------------------------------------------------------------------- the workloads
def message(message_id: str, content: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content or f"content of {message_id}", "message_id": message_id, **extra}


def _appends(prefix: str, count: int, session: str = "s1", size: int = 0) -> list[list[Op]]:
    return [[("append", ("alice", session, [message(f"{prefix}{i}", (f"{prefix}{i} " * (size // 4 + 1))[:size]
                                                     if size else None)]), {})] for i in range(count)]


def workloads() -> list[Workload]:
    """The workloads the issue lists: single appends, batches, roll-over, compaction, deletes and
    purges, none-mode flushes, manifest creation, and batches split into record groups."""
    setup: list[Op] = [("create_user", ("alice", {"username": "Alice"}), {}), ("create_session", ("alice", "s1"), {})]
    single = [setup] + _appends("a", 4) + [[("append", ("alice", "s1", [message("a1")]), {})]]  # a replay
    batches = [setup, [("create_session", ("alice", "s2"), {})],
               [("append", ("alice", "s1", [message(f"b{i}") for i in range(5)]), {}),
                ("append", ("alice", "s2", [message(f"c{i}") for i in range(3)]), {})],
               [("append", ("alice", "s2", [message(f"d{i}") for i in range(4)]), {})]]
    rollover = [setup] + _appends("r", 9, size=1500)
    compaction = ([setup, [("create_session", ("alice", "gone"), {})]] + _appends("k", 3, size=1200)
                  + _appends("g", 3, "gone", size=1200)
                  + [[("delete_session", ("alice", "gone"), {})], [("compact", (), {})]] + _appends("p", 2, size=1200)
                  + [[("compact", (), {})]])
    old = "2020-01-01T00:00:00+00:00"
    deletes = [setup, [("create_session", ("bob", "b1"), {}), ("create_user", ("bob", {}), {})],
               [("append", ("bob", "b1", [message("x1", timestamp=old), message("x2")]), {}),
                ("append", ("alice", "s1", [message("y1", timestamp=old)]), {})],
               [("update_session", ("alice", "s1", {"title": "renamed", "metadata": {"k": 1}}), {}),
                ("update_user", ("alice", {"preferences": {"theme": "dark"}}), {})],
               [("purge", (1_600_000_000.0, None), {})],
               [("delete_user_data", ("bob",), {})],
               [("delete_session", ("alice", "s1"), {})]]
    none_mode = [setup] + _appends("n", 5) + [[("flush", (), {})]] + _appends("m", 3)
    big = [setup, [("append", ("alice", "s1", [message(f"g{i}", "x" * 700) for i in range(6)]), {})],
           [("append", ("alice", "s1", [message("h0")]), {})]]
    return [
        Workload("single appends", "fsync", single),
        Workload("single appends", "flush", single),
        Workload("batches", "fsync", batches),
        Workload("segment roll-over (compressed)", "fsync", rollover, segment_bytes_max=4096),
        Workload("segment roll-over (plain)", "fsync", rollover, segment_bytes_max=4096, compress_sealed=False),
        Workload("segment roll-over (plain)", "flush", rollover, segment_bytes_max=4096, compress_sealed=False),
        Workload("compaction", "fsync", compaction, segment_bytes_max=4096),
        Workload("deletes and purges", "fsync", deletes),
        Workload("none-mode flushes", "none", none_mode),
        Workload("manifest creation", "fsync", [setup] + _appends("f", 1), with_manifest=True),
        Workload("batch split into a record group", "fsync", big, record_bytes_max=2048),
    ]


# ---------------------------------------------------------------------- randomised runs
def random_workload(rng: random.Random, length: int) -> Workload:
    """Random operations over two users and three sessions, in a random mode."""
    durability = rng.choice(["fsync", "flush", "none"])
    units: list[list[Op]] = [[("create_session", ("alice", "s1"), {}), ("create_session", ("bob", "s1"), {})]]
    next_id = 0
    for _ in range(length):
        unit: list[Op] = []
        for _ in range(rng.randint(1, 3)):
            user, session = rng.choice([("alice", "s1"), ("bob", "s1"), ("alice", "s2")])
            kind = rng.random()
            if kind < 0.55:
                batch = [message(f"r{next_id + i}", "y" * rng.choice([5, 300, 1500])) for i in range(rng.randint(1, 4))]
                next_id += len(batch)
                unit.append(("append", (user, session, batch), {}))
            elif kind < 0.65:
                unit.append(("create_session", (user, session), {}))
            elif kind < 0.72:
                unit.append(("delete_session", (user, session), {}))
            elif kind < 0.78:
                unit.append(("compact", (), {}))
            elif kind < 0.84:
                unit.append(("update_session", (user, session, {"title": f"t{next_id}"}), {}))
            elif kind < 0.9:
                unit.append(("flush", (), {}))
            else:
                unit.append(("purge", (WALL_CLOCK + 1, user), {}))
        units.append(unit)
    return Workload(f"random ({durability})", durability, units, segment_bytes_max=4096,
                    compress_sealed=rng.random() < 0.5, record_bytes_max=rng.choice([None, 4096]))


def randomised(seed: int, runs: int, tally: Tally) -> None:
    """`runs` random workloads; each crashes at a few random steps and fails a few random steps."""
    rng = random.Random(seed)
    for run in range(runs):
        workload = random_workload(rng, rng.randint(3, 8))
        steps = reference_run(workload).steps
        chosen = set(rng.sample(range(1, steps + 1), min(6, steps)))
        enumerate_crashes(workload, tally, step_filter=lambda k: k in chosen)
        faults = set(rng.sample(range(1, steps + 1), min(3, steps)))
        for step in faults:
            code = rng.choice([errno.ENOSPC, errno.EIO])
            tally.fault_points += 1
            label = f"run {run} seed {seed}: {errno.errorcode[code]} at step {step}"
            try:
                _faulty_run(workload, step, code, rng.choice([0, 5]), label, tally)
            except Exception as exc:  # AssertionError or anything that escaped the engine
                tally.failures.append(f"{workload.name}: {label}: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale_tests.crash_points", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--runs", type=int, default=200, help="randomised workloads after the enumeration")
    parser.add_argument("--skip-enumeration", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tally = Tally()
    if not args.skip_enumeration:
        for workload in workloads():
            part = Tally()
            enumerate_crashes(workload, part)
            inject_faults(workload, part)
            print(f"{workload.name:36s} {workload.durability:5s} crash points {part.crash_points:5d} "
                  f"recoveries {part.recoveries:6d} fault points {part.fault_points:5d} failures {len(part.failures)}",
                  flush=True)
            tally.add(part)
    randomised(args.seed, args.runs, tally)
    print(f"\ncrash points {tally.crash_points}, recoveries checked {tally.recoveries}, fault points "
          f"{tally.fault_points}; lost {tally.lost}, duplicated {tally.duplicated}, unopenable {tally.unopenable}, "
          f"failures {len(tally.failures)} (seed {args.seed}, {args.runs} random runs, "
          f"{time.perf_counter() - started:.0f} s)")
    for failure in tally.failures[:30]:
        print("  " + failure)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
