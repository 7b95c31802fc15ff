"""The workloads the crash-point runs replay: units of shard operations, each unit one
`Shard.execute` call, as the actor runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config import EngineConfig

ROOT = "/store"

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
