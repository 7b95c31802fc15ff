"""What one durability mode's chaos run records: the state its tasks share while it runs (Run), what it
saw (ModeResult, KillRecord), and the verdict (problems)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

DURABLE_MODES = ("fsync", "flush")


@dataclass
class KillRecord:
    shard: int
    old_pid: int
    new_pid: int | None
    recovery_ms: float | None  # None: the shard did not come back within the recovery limit
    acknowledged_before: int


@dataclass
class ModeResult:
    """What one durability mode's run saw; `problems()` turns it into a verdict."""

    mode: str
    shards: int
    writers: int
    kills_requested: int
    rate_cap: float = 0.0
    request_timeout_s: float = 0.0
    kills: int = 0
    pid_changes: int = 0
    acknowledged: int = 0
    attempted: int = 0
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0
    order_violations: int = 0
    split_batches: int = 0
    partial_batch_replays: int = 0
    replays: int = 0            # retries answered "already stored" (the in-doubt call had landed)
    in_doubt: int = 0           # ids still being retried when the run ended (may or may not be stored)
    slowest_call_ms: float = 0.0
    calls_over_deadline: int = 0  # calls that took longer than request_timeout_s + 100 ms (contract §10.6)
    failures_by_code: dict[str, int] = field(default_factory=dict)
    unexpected_failures: list[str] = field(default_factory=list)
    recovery_ms: dict[str, float] = field(default_factory=dict)
    messages_per_s: float = 0.0
    write_seconds: float = 0.0
    verify_seconds: float = 0.0
    shards_back: bool = False
    shards_not_back: list[str] = field(default_factory=list)
    restarts_reported: list[int] = field(default_factory=list)
    kills_per_shard: list[int] = field(default_factory=list)
    sessions_missing: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    phantom_ids: list[str] = field(default_factory=list)
    order_samples: list[str] = field(default_factory=list)
    kill_log: list[KillRecord] = field(default_factory=list)
    path: str = ""


class Run:
    """Shared state of one mode's run: writers append, the killer reads, the verifier checks."""

    def __init__(self, result: ModeResult) -> None:
        self.result = result
        self.stop = asyncio.Event()
        self.acked: dict[str, list[str]] = {}          # session -> ids in acknowledgement order
        self.batches: dict[str, list[list[str]]] = {}  # session -> acknowledged batches (ids)
        self.attempted: set[str] = set()
        self.failures: Counter[str] = Counter()
        self.acknowledged = 0
        self.deadline_ms = 0.0


def problems(result: ModeResult) -> list[str]:
    """Why this run fails (empty: it passed). `none` may lose acknowledged writes, never duplicate them."""
    found = []
    durable = result.mode in DURABLE_MODES
    if result.kills < result.kills_requested:
        found.append(f"only {result.kills} of {result.kills_requested} kills were made")
    if result.pid_changes < result.kills:
        found.append(f"{result.kills - result.pid_changes} kills did not yield a new worker pid")
    if durable and result.lost:
        found.append(f"{result.lost} acknowledged messages lost, e.g. {result.lost_ids[:5]}")
    if result.duplicated:
        found.append(f"{result.duplicated} duplicated message ids, e.g. {result.duplicated_ids[:5]}")
    if durable and result.sessions_missing:
        found.append(f"sessions created before the run are gone: {result.sessions_missing}")
    if result.phantom:
        found.append(f"{result.phantom} recovered ids were never sent, e.g. {result.phantom_ids[:5]}")
    if result.order_violations:
        found.append(f"{result.order_violations} sessions out of acknowledgement order: {result.order_samples[:3]}")
    if result.split_batches:
        found.append(f"{result.split_batches} acknowledged batches not contiguous")
    if durable and result.partial_batch_replays:
        found.append(f"{result.partial_batch_replays} retried batches were partly stored already")
    if not result.shards_back:
        found.append(f"shards not back: {result.shards_not_back}")
    if result.unexpected_failures:
        found.append(f"{len(result.unexpected_failures)} non-retryable failures, e.g. {result.unexpected_failures[:3]}")
    return found
