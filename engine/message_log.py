"""Segmented, append-only shard log: group commit, crash recovery, locking, epoch fencing, compaction.

Layout of one shard directory (every file-system call goes through `engine.filesystem`):
    LOCK                  flock'd by the single writer process for as long as the log is open
    FENCE                 the epoch: bumped in place by every open under FENCE's exclusive lock;
                          each commit reads it under the shared lock (fencing)
    BASE                  first live segment number after a compaction
    seg-000000000001.zst  sealed segment, zstd-compressed (or .log when compression is off)
    seg-000000000002.log  the active segment; format in engine.codec (salted header, framed records)
    checkpoint.ffc        the shard's memory up to a log position (engine.checkpoint; not the log's)

Crash-recovery rule (as SQLite's wal.c states its own, decided in engine.segment): replay reads
every segment from BASE on. Damage in a sealed segment is corruption: opening refuses, naming the
file and offset. In the *last* segment, damage is a torn tail, truncated and reported, unless a
later valid frame says the damaged write was already on disk (its `synced` number covers it): then
it is corruption. A group of part frames whose last part is missing is cut too. Validity includes
the segment's random salt, so message text can never pass for a frame. A last segment shorter than
its header, or holding only zeros, was never born: it is removed.

Compaction (`rewrite`) replaces the log with a snapshot, crash-safely (engine.compaction).

Parts (MessageLog ties them together and owns the public calls, the write lock and the none-mode
buffer):
    engine.fence           LOCK, FENCE and the epoch: one writer, and a superseded one is refused
    engine.recovery        open and reload: replay every segment, settle what a crash left behind
    engine.active_segment  the segment appends go to: write numbers, fdatasync, cut-back, repair
    engine.upkeep          background steps: segment roll, compression, periodic fsync, failures
    engine.compactor       compaction while live: stage, commit, finish, settle an unknown commit
Durability (acknowledgement rule of `append_batch`):
    fsync  one write + one fdatasync per batch: survives process and OS crashes
    flush  one write per batch: survives a process crash; fsync'd about once a second (`maintain`)
    none   buffered in memory, written when older than flush_interval_s, on flush() and close()

Failures: a failed write is cut back off the file (truncate to the last good size) and raised as
StorageFailure; if even that fails, the log repairs itself before its next write and a reload
never replays those bytes. A failed background step (none-mode flush, segment roll, compression,
finishing a compaction) leaves the live log serving, is recorded in `health()`, and is retried
with exponential backoff. Every live change to the directory happens under the fence (engine.fence).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from typing import Any, Callable, Generator, Iterable, Iterator

from . import codec, segment
from .active_segment import ActiveSegment
from .compactor import Compactor
from .config import MB
from .errors import ShardClosed, StorageFailure
from .fence import Fence
from .filesystem import FileSystem, make_durable_dir
from .recovery import Position, Recovery, RecoveryReport, list_segments
from .upkeep import Upkeep


class MessageLog:
    """The durable record log of one shard. One writer process at a time (flock + fenced epoch).

    Example:
        >>> log = MessageLog("/tmp/shard-0000", durability="flush")
        >>> for record_type, body in log.open(): ...
        >>> log.append_batch(codec.pack(codec.USER_PUT, {"u": "alice", "p": {}}))
        >>> log.close()
    """

    def __init__(self, directory: str, durability: str = "flush", segment_bytes_max: int = 64 * MB,
                 compress_sealed: bool = True, flush_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, fs: FileSystem | None = None,
                 rng: random.Random | None = None, buffer_bytes_max: int = 64 * MB) -> None:
        assert durability in ("fsync", "flush", "none")
        self.directory = directory
        self.durability = durability
        self.flush_interval_s = flush_interval_s
        self.buffer_bytes_max = buffer_bytes_max
        self.fs = fs or FileSystem()
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._fence = Fence(self.fs, directory)
        self._active = ActiveSegment(self.fs, directory, self._rng)
        self._upkeep = Upkeep(self.fs, directory, clock, self._active, segment_bytes_max, compress_sealed)
        self._buffer: list[codec.Record] = []
        self._buffer_bytes = 0
        self._buffer_since: float | None = None
        self._write_lock = threading.RLock()  # maintain() may run on an upkeep thread beside the serving one
        self._flush_failing = False
        self._recovery = Recovery(self.fs, directory)
        self._compactor = Compactor(self.fs, directory, self._active, self._upkeep, self._recovery, self._rng)
        self.commits = 0
        self.fsyncs = 0
        self.appended = 0  # records taken by append_batch since this object was made

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # ----------------------------------------------------------------- open / replay
    def open(self, start: Position | None = None,
             started: Callable[[bool], None] | None = None) -> Iterator[tuple[int, Any]]:
        """Lock the directory, bump the epoch and yield every record (type, body) in log order (only
        those after `start` if the log still holds it: `started(resumed)` says which, first).

        The log is ready for appends once the iterator is exhausted. On any failure the locks
        are released before the error propagates. Raises ShardLocked, CorruptRecord, StorageFailure.
        """
        began = time.perf_counter()
        try:
            make_durable_dir(self.fs, self.directory)
            self.report.epoch = self._fence.acquire()
            yield from self._replay(None, start, started)
        except OSError as exc:
            self.release()
            raise StorageFailure(f"Cannot open shard log {self.directory}: {exc}") from None
        except BaseException:
            self.release()
            raise
        self.report.open_ms = (time.perf_counter() - began) * 1000

    def reload(self) -> Iterator[tuple[int, Any]]:
        """Yield every record again, the log's then the none-mode buffer's (after a failed write, so
        memory can match what was acknowledged again)."""
        with self._write_lock, self._fence.held():
            limit = self._active.replay_limit()
            self._active.close()
            self._recovery.report = RecoveryReport(epoch=self.epoch)
            try:
                yield from self._replay(limit)
            except OSError as exc:
                raise StorageFailure(f"Cannot re-read shard log {self.directory}: {exc}") from None
            self._compactor.outcome_known()
            yield from codec.decode_records(self._buffer, f"buffered for {self.directory}")

    def _replay(self, limit: tuple[int, int] | None = None, start: Position | None = None,
                started: Callable[[bool], None] | None = None) -> Generator[tuple[int, Any], None, None]:
        """Replay the log (engine.recovery), then append where it ends: to its last segment when that
        is uncompressed, else to a fresh one after it."""
        numbers, tail = yield from self._recovery.replay(limit, start, started)
        if tail is not None and not tail.compressed:
            self._active.resume(tail)
        else:
            self._active.start(tail.number + 1 if tail is not None else self._recovery.first_number())
        if limit is None:
            self._active.broken = None
        self._upkeep.queue_compression(numbers)

    @property
    def report(self) -> RecoveryReport:
        """What the last open (or reload) found."""
        return self._recovery.report

    # ----------------------------------------------------------------- fencing
    @property
    def epoch(self) -> int:
        return self._fence.epoch

    # ----------------------------------------------------------------- appends
    def append_batch(self, records: list[codec.Record]) -> None:
        """Append records as one write (and at most one fdatasync) per the durability mode.

        Returns once the batch is acknowledged-durable per mode. On StorageFailure nothing of the
        batch is in the log. Raises StaleEpoch (fenced), ShardClosed, StorageFailure.
        Idempotency lives a level up (message_id checks).
        """
        if not records:
            return
        if self.durability != "none":
            with self._write_lock:
                self._commit(records, sync=self.durability == "fsync")
                self.appended += len(records)
            return
        with self._write_lock:
            if self._buffer_bytes > self.buffer_bytes_max and self._flush_failing:
                raise StorageFailure(f"Shard log {self.directory} cannot take more: {self._buffer_bytes} bytes wait "
                                     f"for a flush that keeps failing ({self.failure})")
            with self._fence.held():  # a superseded instance must not acknowledge, even from memory
                pass
            if self._buffer_since is None:
                self._buffer_since = self._clock()
            self._buffer.extend(records)
            self._buffer_bytes += sum(len(payload) for _, payload in records)
            self.appended += len(records)
        self.flush_if_due()

    def _commit(self, records: list[codec.Record], sync: bool) -> None:
        """Write `records` as one write under the fence (fdatasync'd when `sync`), then roll a full segment."""
        with self._fence.held():
            self._repair_if_broken()
            try:
                self._active.append(records, sync)
            except OSError as exc:
                self._upkeep.failed("write", exc)
                raise StorageFailure(f"Write to shard log {self.directory} failed: {exc}") from None
            self._upkeep.succeeded("write")
            if sync:
                self.fsyncs += 1
            self.commits += 1
            self._upkeep.roll_if_full()

    def _repair_if_broken(self) -> None:
        """Before a write: settle an unknown compaction outcome, make sure a segment is open, and cut
        off bytes a failed write may have left. Raises StorageFailure if it cannot."""
        if not self._fence.is_open:
            raise ShardClosed(f"Shard log {self.directory} is closed")
        try:
            if self._compactor.unknown_commit is not None:
                self._compactor.resolve()
            self._active.repair()
        except StorageFailure as exc:
            self._upkeep.failed("repair", exc)
            raise
        self._upkeep.succeeded("repair")

    def flush_if_due(self) -> None:
        """For `none` mode: write buffered records older than flush_interval_s (failures back off)."""
        since = self._buffer_since
        now = self._clock()
        if since is not None and now - since >= self.flush_interval_s and not self._upkeep.retry.waiting():
            try:
                self.flush()
            except StorageFailure:
                self._flush_failing = True  # recorded where it failed (write or repair); retried after the backoff

    def flush(self) -> None:
        """Write the none-mode buffer to the OS as one write, without an fsync (the periodic one in
        `maintain`, or `close`, makes it durable). In flush and fsync modes nothing is buffered, so
        this does nothing. The buffer is kept if the write fails. Raises StorageFailure, StaleEpoch."""
        with self._write_lock:
            if not self._buffer:
                return
            self._commit(self._buffer, sync=False)
            self._buffer, self._buffer_bytes, self._buffer_since = [], 0, None
            self._flush_failing = False

    def durable_position(self) -> Position | None:
        """Write the none-mode buffer, fsync: the log's end, all on disk (what a checkpoint may cover);
        None while a repair or a compaction's finish is pending. Raises StorageFailure, StaleEpoch."""
        with self._write_lock, self._fence.held():
            self.flush()
            if self._needs_repair() or self._compactor.finish_due or self._active.handle is None:
                return None
            try:
                self._active.sync()
            except OSError as exc:
                raise StorageFailure(f"fsync of shard log {self.directory} failed: {exc}") from None
            active = self._active
            return Position(active.number, active.size, active.write, active.salt)

    @property
    def pending_bytes(self) -> int:
        return self._buffer_bytes

    # ----------------------------------------------------------------- files
    def segment_files(self) -> list[str]:
        numbers, _ = list_segments(self.fs, self.directory)
        return [segment.file_name(number, compressed) for number, compressed in numbers]

    def disk_bytes(self) -> int:
        total = 0
        for name in self.segment_files():
            with contextlib.suppress(FileNotFoundError):  # compression may remove a .log meanwhile
                total += self.fs.size(self._path(name))
        return total

    # ----------------------------------------------------------------- background steps
    def maintain(self) -> None:
        """Retry failed background steps whose backoff has passed (none-mode flush included), and
        in flush and none modes fsync the active segment about once a second, so a damaged record
        older than that is known to have been on disk (recovery then refuses rather than cuts)."""
        if self.durability == "none":
            self.flush_if_due()
        if self._upkeep.sync_due():
            with self._write_lock:
                self._upkeep.sync()
        if self._upkeep.retry.waiting():
            return
        with self._write_lock:
            if not self._fence.is_open:
                return  # closed
            if not (self._compactor.finish_due or self._upkeep.roll_due or self._upkeep.uncompressed
                    or self._needs_repair()):
                return
            with self._fence.held():
                if self._compactor.finish_due and not self._upkeep.holds:
                    self._compactor.finish()
                if self._needs_repair():
                    try:
                        self._repair_if_broken()
                    except StorageFailure:
                        return  # recorded; retried after the backoff
                if self._upkeep.roll_due:
                    self._upkeep.roll()
                if self._upkeep.uncompressed:
                    self._upkeep.compress_pending()

    def _needs_repair(self) -> bool:
        return (self._active.handle is None or self._active.broken is not None
                or self._compactor.unknown_commit is not None)

    @property
    def failure(self) -> str | None:
        """The last failure of a step that has not succeeded since (None when all is well)."""
        return self._upkeep.failure

    @property
    def failures(self) -> int:
        return self._upkeep.failures

    def health(self) -> dict[str, Any]:
        """Degraded while a failed step is still pending (compaction to finish, roll, compression,
        none-mode flush), the log needs repair, or a write failed in the last upkeep.WRITE_FAILURE_WINDOW_S
        seconds with none succeeding since; `reason` is the last failure then."""
        pending = [name for name, due in (("compaction", self._compactor.finish_due),
                                          ("segment roll", self._upkeep.roll_due),
                                          ("segment compression",
                                           bool(self._upkeep.uncompressed) and not self._upkeep.holds),
                                          ("flush", self._flush_failing)) if due]
        degraded = bool(pending) or self._upkeep.write_failed_recently() or self._active.broken is not None
        return {"degraded": degraded, "reason": (self._active.broken or self.failure) if degraded else None,
                "pending_steps": pending, "failures": self._upkeep.failures, "buffered_bytes": self._buffer_bytes}

    # ----------------------------------------------------------------- compaction
    def rewrite(self, records: Iterable[codec.Record]) -> None:
        """Replace the whole log with `records` (a snapshot of live state); crash-safe, see module doc.

        Before the commit point a failure leaves the old log serving; after it the compaction
        counts as done and finishing is retried. Raises StorageFailure, StaleEpoch, ShardClosed.
        """
        with self._write_lock, self._fence.held():
            self._compactor.finish_previous()
            self.flush()
            self._repair_if_broken()
            self._compactor.run(records)

    # ----------------------------------------------------------------- online backup
    def snapshot_begin(self) -> list[tuple[str, int]]:
        """Pin the log for an online backup: write the none-mode buffer, then name every live segment
        with how many of its bytes the snapshot holds (the active one: up to its last commit). Until
        `snapshot_end`, no file of it is removed or changed (sealed segments wait to be compressed, a
        compaction waits: `snapshot_held`). Writers wait only for this call (no copying, no fsync).
        Raises StorageFailure (a compaction is unfinished), ShardClosed, StaleEpoch."""
        with self._write_lock:
            self.flush()
            with self._fence.held():
                self._repair_if_broken()
                if self._compactor.finish_due:
                    self._compactor.finish()
                    if self._compactor.finish_due:
                        raise StorageFailure(f"Cannot back up {self.directory}: a compaction is not finished "
                                             f"({self._upkeep.failure})")
                active = self._active.name
                files = [(name, self._active.size if name == active else self.fs.size(self._path(name)))
                         for name in self.segment_files()]
                self._upkeep.holds += 1
                return files

    def snapshot_end(self) -> None:
        """The backup that pinned the log is done with its files."""
        with self._write_lock:
            self._upkeep.holds = max(0, self._upkeep.holds - 1)

    @property
    def snapshot_held(self) -> bool:
        return self._upkeep.holds > 0

    # ----------------------------------------------------------------- closing
    @property
    def is_open(self) -> bool:
        return self._active.handle is not None

    def release(self) -> None:
        """Close every handle this log holds and drop its locks, without flushing or fsyncing (after
        a failed open, or for a process that is gone); never raises an OSError. `close` is the
        orderly way."""
        self._active.close()
        self._fence.release()

    def close(self) -> None:
        """Flush buffered records (three attempts: a transient EIO must not cost them), fsync, release
        the locks. Idempotent. Raises StorageFailure if buffered records could not be written (they
        are lost) or the final fsync failed."""
        with self._write_lock:
            try:
                if self._fence.is_open:
                    for attempt in range(3):
                        try:
                            self.flush()
                            break
                        except StorageFailure:
                            if attempt == 2:
                                raise
                if self._active.handle is not None and self._active.broken is None:
                    self._active.sync()
            except OSError as exc:
                raise StorageFailure(f"Closing shard log {self.directory} failed: {exc}") from None
            finally:
                self._buffer, self._buffer_bytes, self._buffer_since = [], 0, None
                self.release()
