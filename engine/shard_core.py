"""The core of one shard: its log, its state, the batch executor and upkeep.

Every write encodes its log record first (`codec.pack`: the exact bytes the log will hold), then
applies it to memory through `ShardState.apply` (the code replay uses) and queues it; `commit()`
writes the queued records as one group commit. A value that cannot be encoded therefore fails
alone, before anything changes. `execute()` runs a batch of typed operations (engine/operations.py),
each by the handler registered for its type with `@handles` (engine/shard_reads.py,
engine/shard_writes.py), and commits once, so one actor call carries many messages; if the commit
fails, every operation of the batch fails, memory is rebuilt from the log (so it holds only what
the log holds) and writes pause briefly.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from . import codec
from . import operations as ops
from .backoff import Backoff
from .checkpoint import Checkpoint, Checkpointer
from .config import EngineConfig
from .errors import CorruptRecord, EngineError, InvalidInput, SessionNotFound, StaleEpoch, StorageFailure
from .filesystem import FileSystem, atomic_write
from .manifest import IDENTITY_FILE, identity_mismatch, read_identity, shard_directory
from .message_log import MessageLog
from .operations import Reply, failed
from .session_store import SessionState
from .shard_state import RECOVERED_TITLE, ShardState
from .vector_index import load_embedder

COMPACT_MIN_DEAD = 10_000  # compact once deleted messages exceed this and the live count
INDEX_STEP_MESSAGES = 10_000  # search indexing per upkeep step (about 60 ms under the engine lock)
SEAL_INTERVAL_S = 2.0  # how often upkeep compresses the tails of sessions that went quiet
SEAL_STEP_S = 0.02  # time per step of sealing quiet sessions' tails (~30 µs each)
_Handler = Callable[..., Any]
_Marked = TypeVar("_Marked", bound=Callable[..., Any])


def handles(operation: type[ops.ShardOperation]) -> Callable[[_Marked], _Marked]:
    """Mark a shard method as the handler of `operation`; its parameters are the operation's
    fields (ShardCore collects the marks into its registry; a test checks that they bind)."""
    def mark(function: _Marked) -> _Marked:
        function.__handles__ = operation  # type: ignore[attr-defined]
        return function
    return mark


class ShardCore:
    """Lifecycle, batch execution and upkeep of shard `index` of a storage path (the handlers of
    the operations live in the subclasses; `Shard` in engine/shard.py puts them together)."""

    _handlers: dict[type, _Handler] = {}
    _arguments: dict[type, tuple[str, ...]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Collect the `@handles` marks of this class and its bases into the type registry."""
        super().__init_subclass__(**kwargs)
        registry: dict[type, _Handler] = {}
        for klass in reversed(cls.__mro__):
            for member in vars(klass).values():
                operation = getattr(member, "__handles__", None)
                if operation is not None:
                    registry[operation] = member
        cls._handlers = registry
        cls._arguments = {operation: tuple(field.name for field in fields(operation)) for operation in registry}

    def __init__(self, config: EngineConfig, index: int, clock: Callable[[], float] = time.time,
                 fs: FileSystem | None = None, monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.index = index
        self.directory = shard_directory(config.storage_path, index)
        self._clock = clock
        self.fs = fs or FileSystem()
        self.log = MessageLog(self.directory, config.durability, config.segment_bytes_max,
                              config.compress_sealed_segments, config.flush_interval_s, clock=monotonic,
                              fs=self.fs, rng=rng)
        self.state = ShardState(config.cache_bytes_max, load_embedder(config.embedder) if config.embedder else None)
        self._pending: list[codec.Record] = []
        self._batch_now: str | None = None
        self.compactions = 0
        self._compact_retry = Backoff(1.0, 60.0, monotonic)
        self._compact_wanted = False
        self._write_pause = Backoff(0.05, 5.0, monotonic)  # writes wait after a failed commit
        self._reload_needed = False
        self._monotonic = monotonic
        self._committed = 0  # records this core appended to the log (the log counts its own: `appended`)
        self.checkpoints = Checkpointer(self.fs, self.directory, monotonic)
        self.defer_checkpoints = False  # a shard actor writes upkeep's checkpoints outside its lock
        self.deferred: Callable[[], dict[str, Any]] | None = None
        self._next_seal = 0.0  # monotonic time of the next sealing of quiet tails
        self.reloads = 0
        self._compress_records = False
        self.opened = False
        self.applied = 0  # changes applied to memory (a failed operation that applied none needs no reload)
        self.backups: dict[str, Any] = {}  # online backups this shard copies or copied (engine/shard_backup.py)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> dict[str, Any]:
        """Load the checkpoint and replay the log after it (or the whole log) into memory; returns the
        recovery report. On failure nothing stays held (locks released). Raises ShardLocked,
        CorruptRecord, StorageFailure."""
        try:
            loaded = self.checkpoints.read(self.config.cache_bytes_max) if not self.state.vectors.enabled else None

            def started(resumed: bool) -> None:
                if resumed and loaded is not None:
                    cache = self.state.cache
                    self.state = loaded[1]
                    self.state.cache.hits, self.state.cache.misses = cache.hits, cache.misses
                self.checkpoints.loaded(loaded[0] if resumed and loaded is not None else None,
                                        unused=loaded is not None and not resumed)
            for record_type, body in self.log.open(loaded[0] if loaded is not None else None, started):
                self.state.apply(record_type, body)
            self.state.replayed()  # replay leaves search indexes to searches and upkeep
            self._check_identity()
        except OSError as exc:
            self.log.release()
            raise StorageFailure(f"Cannot open shard {self.index} at {self.directory}: {exc}") from None
        except BaseException:
            self.log.release()
            raise
        self.opened = True
        if self.checkpoints.note:
            self.log.report.notes.append(self.checkpoints.note)
        report = self.log.report.as_dict()
        if self.state.orphans:
            report["notes"].append(f"{self.state.orphans} messages of sessions the log never created were kept "
                                   f"in sessions titled '{RECOVERED_TITLE}'")
        return report

    def _check_identity(self) -> None:
        """SHARD.json says which shard of how many this directory is: written once, checked on open,
        so directories copied between stores or a lost manifest can never be misread."""
        path = os.path.join(self.directory, IDENTITY_FILE)
        wanted = {"index": self.index, "shard_count": self.config.shard_count}
        if not self.fs.exists(path):
            atomic_write(self.fs, path, json.dumps(wanted).encode())
            return
        found = read_identity(self.fs, self.directory)
        if identity_mismatch(found, wanted):
            raise CorruptRecord(f"{path} says {found}, but this store expects {wanted}; refusing to open")

    def reload(self) -> None:
        """Rebuild memory from the log (after a failed commit left memory ahead of it). The new
        state replaces the old only once the whole log was read; raises StorageFailure if it
        cannot be read (the caller must then stop serving: memory is ahead of the log)."""
        self._pending = []
        self._reload_needed = True  # until the new state is in place (no checkpoint of the old one)
        fresh = self.state.empty_copy()
        for record_type, body in self.log.reload():
            fresh.apply(record_type, body)
        fresh.replayed()
        self.state = fresh
        self._reload_needed = False
        self.reloads += 1

    def commit(self) -> None:
        """Write queued records as one batch (group commit); the ack point of every write."""
        if self._pending:
            records, self._pending = self._pending, []
            self.log.append_batch(records)
            self._committed += len(records)

    def execute(self, operations: list[ops.ShardOperation]) -> list[Reply]:
        """Run operations in order, commit once, return one Reply per operation.

        An operation that fails (bad input, unknown session) fails alone. If the commit fails,
        every operation of the batch fails with STORAGE_ERROR, memory is rebuilt from the log and
        writes pause for a short, growing interval. Raises StaleEpoch (a newer instance owns the
        log: this one must stop) and StorageFailure if memory cannot be rebuilt.
        """
        replies: list[Reply] = []
        self._batch_now = None  # one acknowledgement time per batch (they share one commit)
        paused = self._write_pause.waiting()
        after_commit: list[tuple[int, ops.ShardOperation]] = []
        for operation in operations:
            if type(operation) not in self._handlers:
                replies.append(failed(InvalidInput(f"Unknown shard operation {type(operation).__name__}")))
            elif paused and operation.writes:
                replies.append(failed(StorageFailure(f"Shard {self.index} paused writes after a failed write "
                                                     f"({self.log.failure}); retry shortly")))
            elif operation.after_commit:
                # flush and compact write the log themselves: they run once the batch is committed,
                # so no record of the batch is ever written apart from the batch's own commit.
                after_commit.append((len(replies), operation))
                replies.append(Reply(False, None))
            else:
                replies.append(self.run(operation))
        self._batch_now = None
        try:
            self.commit()
        except StorageFailure as failure:
            # The batch's records are not in the log but are in memory: nothing of it may be
            # acknowledged, and memory must hold only what the log holds.
            self._write_pause.failed()
            self.reload()
            return [failed(failure)] * len(operations)
        for position, operation in after_commit:
            replies[position] = self.run(operation)
        if not paused:
            self._write_pause.succeeded()
        if self._reload_needed:
            self.reload()
        self.maintain()
        return replies

    def run(self, operation: ops.ShardOperation) -> Reply:
        """Run one operation by the handler registered for its type (no commit: see `execute`)."""
        handler = self._handlers[type(operation)]
        arguments = {name: getattr(operation, name) for name in self._arguments[type(operation)]}
        applied = self.applied
        try:
            return Reply(True, handler(self, **arguments))
        except StaleEpoch:
            raise
        except EngineError as exc:
            return failed(exc)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            if self.applied == applied:
                # Values of the wrong type (a caller bypassing the api) failed before memory changed.
                return failed(InvalidInput(f"Bad arguments for {type(operation).__name__}: {exc}"))
            return self._internal_error(operation, exc)
        except Exception as exc:
            return self._internal_error(operation, exc)

    def _internal_error(self, operation: ops.ShardOperation, exc: Exception) -> Reply:
        # A write that failed half-way must not leave memory ahead of the log: rebuilt after the batch.
        self._reload_needed = self._reload_needed or operation.writes
        return failed(StorageFailure(f"Shard {self.index}: internal error in {type(operation).__name__} "
                                     f"({type(exc).__name__})"))

    def maintain(self) -> None:
        """Background upkeep: due none-mode flushes, retries of failed log steps, building search
        indexes replay left out (a bounded step each time), compaction."""
        self.log.maintain()
        self.state.index_some(INDEX_STEP_MESSAGES)
        if self.checkpoints.due(self.state) and not self.state.vectors.enabled and self.deferred is None:
            try:
                job = self._checkpoint_job()
                if self.defer_checkpoints:
                    self.deferred = job  # the caller writes it without the engine lock (run_deferred)
                else:
                    job()
            except StorageFailure:
                pass  # counted; the log is the truth and the next one is tried after the interval
        if self._monotonic() >= self._next_seal:
            self.state.seal_quiet(SEAL_STEP_S)
            self._next_seal = self._monotonic() + SEAL_INTERVAL_S
        due = self._compact_wanted or self.state.dead_messages > max(COMPACT_MIN_DEAD, self.state.message_count)
        if due and not self._compact_retry.waiting():
            try:
                self.compact()
            except StorageFailure:
                pass  # recorded (health shows it) and retried after the backoff

    def close(self) -> None:
        self.deferred = None  # upkeep's snapshot, if not written yet: close writes a newer one
        try:
            self.commit()
            if self.opened and not self.state.vectors.enabled:
                try:
                    self.checkpoint()  # the next open loads it instead of replaying the log
                except StorageFailure:
                    pass  # counted; closing still flushes and syncs the log below
        finally:
            self.log.close()
            self.opened = False

    def now_iso(self) -> str:
        if self._batch_now is None:
            self._batch_now = datetime.fromtimestamp(self._clock(), timezone.utc).isoformat()
        return self._batch_now

    def _write(self, record_type: int, body: dict[str, Any]) -> None:
        """Encode first (raises InvalidInput if the record cannot be stored), then apply and queue."""
        records = codec.pack(record_type, body, self._compress_records)
        self.applied += 1
        self.state.apply(record_type, body)
        self._pending.extend(records)

    def set_record_compression(self, enabled: bool) -> None:
        self._compress_records = enabled

    def _session(self, user_id: str, session_id: str) -> SessionState:
        if type(user_id) is not str or type(session_id) is not str:
            raise InvalidInput("user_id and session_id must be strings", "INVALID_ID")
        state = self.state.sessions.get((user_id, session_id))
        if state is None:
            raise SessionNotFound(f"Session '{session_id}' not found for user '{user_id}'")
        return state


    # ------------------------------------------------------------------ admin
    @handles(ops.Compact)
    def compact(self) -> dict[str, int]:
        """Rewrite the log as a snapshot of live state, so deleted data leaves the disk.

        Blocks this shard for the rewrite. A failure before the rewrite's commit point leaves the
        old log serving (raises StorageFailure; `maintain` retries with backoff).
        """
        self.commit()
        if self.log.snapshot_held:  # a backup reads the log's files: compact once it is done
            self._compact_wanted = True
            size = self.log.disk_bytes()
            return {"bytes_before": size, "bytes_after": size, "deferred": 1}
        try:
            before = self.log.disk_bytes()
            self.log.rewrite(self.state.snapshot_records(self._compress_records))
        except (StorageFailure, OSError) as exc:
            # Wanted until it succeeds: `maintain` retries with backoff.
            self._compact_wanted = True
            self._compact_retry.failed()
            raise StorageFailure(f"Compaction of shard {self.index} failed: {exc}") from None
        self.state.dead_messages = 0
        self.checkpoints.retire()
        self.compactions += 1
        self._compact_wanted = False
        self._compact_retry.succeeded()
        return {"bytes_before": before, "bytes_after": self.log.disk_bytes()}

    @handles(Checkpoint)
    def checkpoint(self) -> dict[str, Any]:
        """Write a checkpoint of memory at the log's durable end (see engine.checkpoint); not while
        memory may differ from the log (a failed write's reload is pending)."""
        return self._checkpoint_job()()

    def _checkpoint_job(self) -> Callable[[], dict[str, Any]]:
        """Snapshot memory at the log's durable end; returns the call that writes the checkpoint."""
        self.commit()
        # Memory holds exactly the log only if every record appended since open came from here.
        same = not self._reload_needed and not self._pending and self.log.appended == self._committed
        position = self.log.durable_position() if same else None
        return self.checkpoints.prepare(position, self.state, self.log.epoch)

    def run_deferred(self) -> None:
        """Write the checkpoint `maintain` prepared, if any (callers run this without the engine
        lock: the snapshot is the state's as it was then). Raises StorageFailure."""
        job, self.deferred = self.deferred, None
        if job is not None:
            job()

    @handles(ops.ClearCache)
    def clear_cache(self) -> int:
        entries = len(self.state.cache)
        self.state.cache.clear()
        return entries

    @handles(ops.Flush)
    def flush(self) -> None:
        self.commit()
        self.log.flush()

    def probe(self) -> dict[str, Any]:
        """Cheap health facts: log open, directory readable/writable (access checks, no writes), disk
        free, and whether a write or background step failed (`degraded`, with the reason)."""
        readable = os.access(self.directory, os.R_OK | os.X_OK)
        writable = os.access(self.directory, os.W_OK)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = 0
        health = self.log.health()
        paused = self._write_pause.waiting()
        deferred = self.log.snapshot_held  # waiting for a backup to finish reading is not a failure
        if self._compact_wanted and not deferred and "compaction" not in health["pending_steps"]:
            health["pending_steps"].append("compaction")
        return {"shard": self.index, "log_open": self.log.is_open, "readable": readable, "writable": writable,
                "disk_free_bytes": free, "sessions": len(self.state.sessions), "messages": self.state.message_count,
                "users": len(self.state.users), "cache_bytes": self.state.cache.bytes, "cache_entries": len(self.state.cache),
                "cache_capacity_bytes": self.state.cache.capacity_bytes, "cache_hits": self.state.cache.hits,
                "cache_misses": self.state.cache.misses, "epoch": self.log.epoch,
                "degraded": health["degraded"] or paused or bool(health["pending_steps"]),
                "degraded_reason": health["reason"],
                "pending_steps": health["pending_steps"], "io_failures": health["failures"],
                "writes_paused": paused}

    def counters(self) -> dict[str, int]:
        """The cheap running figures exported as metrics about once a second (`stats` walks every session)."""
        return {"cache_hits": self.state.cache.hits, "cache_misses": self.state.cache.misses,
                "compactions": self.compactions, "log_bytes": self.log.disk_bytes()}

    def stats(self) -> dict[str, Any]:
        ram = sum(state.ram_bytes for state in self.state.sessions.values()) + self.state.index_nbytes()
        return {**self.probe(), "ram_bytes": ram,
                "ram_bytes_per_message": ram / self.state.message_count if self.state.message_count else 0.0,
                "log_bytes": self.log.disk_bytes(), "log_commits": self.log.commits, "log_fsyncs": self.log.fsyncs,
                "dead_messages": self.state.dead_messages, "compactions": self.compactions, "reloads": self.reloads,
                "checkpoints": {"written": self.checkpoints.written, "failures": self.checkpoints.failures,
                                "last_failure": self.checkpoints.last_failure},
                "recovery": self.log.report.as_dict()}


