"""The workloads the crash-point runs replay: units of shard operations, each unit one
`Shard.execute` call, as the actor runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import operations as ops
from engine.checkpoint import Checkpoint
from engine.config import MB, EngineConfig

ROOT = "/store"

Op = ops.ShardOperation


@dataclass
class Workload:
    """Units of operations run against shard 0 of a one-shard store."""

    name: str
    durability: str
    units: list[list[Op]]
    segment_bytes_max: int = 64 * MB
    compress_sealed: bool = True
    record_bytes_max: int | None = None  # shrink codec.MAX_RECORD_BYTES to exercise record groups
    with_manifest: bool = False

    def config(self) -> EngineConfig:
        return EngineConfig(storage_path=ROOT, shard_count=1, durability=self.durability,  # type: ignore[arg-type]
                            segment_bytes_max=self.segment_bytes_max, compress_sealed_segments=self.compress_sealed,
                            flush_interval_s=1.0)


def message(message_id: str, content: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content or f"content of {message_id}", "message_id": message_id, **extra}


def _appends(prefix: str, count: int, session: str = "s1", size: int = 0) -> list[list[Op]]:
    return [[ops.Append("alice", session, [message(f"{prefix}{i}", (f"{prefix}{i} " * (size // 4 + 1))[:size]
                                                     if size else None)])] for i in range(count)]


def workloads() -> list[Workload]:
    """The workloads the issue lists: single appends, batches, roll-over, compaction, deletes and
    purges, none-mode flushes, manifest creation, batches split into record groups, and checkpoints
    (written between writes, retired by a compaction, and at every close)."""
    setup: list[Op] = [ops.CreateUser("alice", {"username": "Alice"}), ops.CreateSession("alice", "s1")]
    single = [setup] + _appends("a", 4) + [[ops.Append("alice", "s1", [message("a1")])]]  # a replay
    batches = [setup, [ops.CreateSession("alice", "s2")],
               [ops.Append("alice", "s1", [message(f"b{i}") for i in range(5)]),
                ops.Append("alice", "s2", [message(f"c{i}") for i in range(3)])],
               [ops.Append("alice", "s2", [message(f"d{i}") for i in range(4)])]]
    rollover = [setup] + _appends("r", 9, size=1500)
    compaction = ([setup, [ops.CreateSession("alice", "gone")]] + _appends("k", 3, size=1200)
                  + _appends("g", 3, "gone", size=1200)
                  + [[ops.DeleteSession("alice", "gone")], [ops.Compact()]] + _appends("p", 2, size=1200)
                  + [[ops.Compact()]])
    old = "2020-01-01T00:00:00+00:00"
    deletes = [setup, [ops.CreateSession("bob", "b1"), ops.CreateUser("bob", {})],
               [ops.Append("bob", "b1", [message("x1", timestamp=old), message("x2")]),
                ops.Append("alice", "s1", [message("y1", timestamp=old)])],
               [ops.UpdateSession("alice", "s1", {"title": "renamed", "metadata": {"k": 1}}),
                ops.UpdateUser("alice", {"preferences": {"theme": "dark"}})],
               [ops.Purge(1_600_000_000.0, None)],
               [ops.DeleteUserData("bob")],
               [ops.DeleteSession("alice", "s1")]]
    none_mode = [setup] + _appends("n", 5) + [[ops.Flush()]] + _appends("m", 3)
    checkpoints = ([setup] + _appends("c", 2) + [[Checkpoint()]] + _appends("d", 2, size=900)
                   + [[ops.CreateSession("alice", "gone")], [ops.Append("alice", "gone", [message("x1")])],
                      [Checkpoint()], [ops.DeleteSession("alice", "gone")], [ops.Compact()]]
                   + _appends("e", 2) + [[Checkpoint()]] + _appends("f", 1))
    big = [setup, [ops.Append("alice", "s1", [message(f"g{i}", "x" * 700) for i in range(6)])],
           [ops.Append("alice", "s1", [message("h0")])]]
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
        Workload("checkpoints", "fsync", checkpoints, segment_bytes_max=4096),
        Workload("checkpoints", "none", checkpoints, segment_bytes_max=4096),
    ]
