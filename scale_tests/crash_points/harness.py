"""Running a workload on the simulated file system: the fault-free reference run, a run crashed at
one step, the canonical shard state the checks compare, and the tally they fill in."""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Iterator

from engine import codec
from engine.manifest import PathManifest
from engine.shard import Shard
from engine.shard_state import ShardState
from engine.simulated_filesystem import SimulatedCrash, SimulatedFileSystem

from .workloads import ROOT, Workload

WALL_CLOCK = 1_780_000_000.0  # a fixed acknowledgement time: reference and crash runs log equal bytes
UNIT_SECONDS = 0.3  # monotonic time per unit: none-mode flushes, retry backoffs and pauses elapse


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


class Clock:
    """A monotonic clock the run advances by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_shard(workload: Workload, fs: SimulatedFileSystem, clock: Clock | None = None) -> Shard:
    return Shard(workload.config(), 0, clock=lambda: WALL_CLOCK, fs=fs, monotonic=clock or Clock(),
                 rng=random.Random(7))


def create_manifest(fs: SimulatedFileSystem) -> None:
    """Create the one-shard store's manifest, as a workload `with_manifest` does before its shard opens."""
    PathManifest(ROOT, fs).open(1, explicit=False)


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
    clock = Clock()
    captured: list[tuple[int, Any]] = []
    with record_bound(workload):
        if workload.with_manifest:
            create_manifest(fs)
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
    clock = Clock()
    acknowledged = -1
    with record_bound(workload):
        try:
            if workload.with_manifest:
                create_manifest(fs)
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
