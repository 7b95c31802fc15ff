"""Segmented, append-only shard log with group commit, crash recovery, a lock file and epoch fencing.

Layout of one shard directory:
    LOCK                  flock'd by the single writer process for as long as the log is open
    EPOCH                 integer bumped by every open; checked before each commit (fencing)
    seg-000000000001.zst  sealed segment, zstd-compressed (or .log when compression is off)
    seg-000000000002.log  the active segment; records are framed by engine.codec

Crash-recovery rule (as SQLite's wal.c states its own): replay reads every segment in order. A
frame that fails its checks at the end of the *last* segment, with no valid frame after it, is a
torn tail from an interrupted write: it is truncated and reported. A bad frame followed by a valid
one, or any bad frame in a sealed segment, is corruption: opening refuses with the file and offset.

Compaction (`rewrite`) replaces the log with a snapshot of the live state, crash-safely: the new
segments are written to `compact.tmp/`, fsync'd, and the directory is renamed `compact.ready/`
(the commit point); its segments then move into place, `BASE` records the first live segment,
and older segments are deleted. Opening finishes a `compact.ready/` and discards a `compact.tmp/`.

Durability (acknowledgement rule of `append_batch`):
    fsync  one write + one fdatasync per batch: survives process and OS crashes
    flush  one write per batch, no fsync: survives a process crash
    none   buffered in memory, written when older than flush_interval_s, on flush() and close()
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import codec
from .errors import CorruptRecord, ShardClosed, ShardLocked, StaleEpoch, StorageFailure

_SEGMENT_PREFIX = "seg-"


@dataclass
class RecoveryReport:
    """What opening the log found."""

    records: int = 0
    segments: int = 0
    torn_tail: bool = False
    truncated_bytes: int = 0
    truncated_at_offset: int | None = None
    truncated_file: str | None = None
    epoch: int = 0
    open_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _segment_name(number: int, compressed: bool) -> str:
    return f"{_SEGMENT_PREFIX}{number:012d}.{'zst' if compressed else 'log'}"


class MessageLog:
    """The durable record log of one shard. One writer process at a time (flock + epoch).

    Example:
        >>> log = MessageLog("/tmp/shard-0000", durability="flush")
        >>> for record_type, body in log.open(): ...
        >>> log.append_batch([codec.encode(codec.USER_PUT, {"u": "alice", "p": {}})])
        >>> log.close()
    """

    def __init__(self, directory: str, durability: str = "flush", segment_bytes_max: int = 64 * 1024 * 1024,
                 compress_sealed: bool = True, flush_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert durability in ("fsync", "flush", "none")
        self.directory = directory
        self.durability = durability
        self.segment_bytes_max = segment_bytes_max
        self.compress_sealed = compress_sealed
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._active_number = 0
        self._active_bytes = 0
        self._buffer: list[bytes] = []
        self._buffer_since: float | None = None
        self._buffer_lock = threading.Lock()
        self.epoch = 0
        self.report = RecoveryReport()
        self.bytes_written = 0
        self.commits = 0
        self.fsyncs = 0

    # ----------------------------------------------------------------- open / replay
    def open(self) -> Iterator[tuple[int, Any]]:
        """Lock the directory, bump the epoch and yield every record (type, body) in log order.

        The log is ready for appends once the iterator is exhausted.
        Raises ShardLocked, CorruptRecord, StorageFailure.
        """
        started = time.perf_counter()
        os.makedirs(self.directory, exist_ok=True)
        self._take_lock()
        self.epoch = self._bump_epoch()
        self.report.epoch = self.epoch
        self._finish_compaction()
        numbers = self._segment_numbers()
        self.report.segments = len(numbers)
        for position, (number, compressed) in enumerate(numbers):
            is_last = position == len(numbers) - 1
            yield from self._replay_segment(number, compressed, is_last)
        if not numbers or numbers[-1][1]:
            self._active_number = (numbers[-1][0] + 1) if numbers else 1
            self._active_bytes = 0
        else:
            self._active_number = numbers[-1][0]
        self._open_active()
        self.report.open_ms = (time.perf_counter() - started) * 1000

    def _replay_segment(self, number: int, compressed: bool, is_last: bool) -> Iterator[tuple[int, Any]]:
        path = os.path.join(self.directory, _segment_name(number, compressed))
        with open(path, "rb") as handle:
            data = handle.read()
        if compressed:
            try:
                data = codec.decompress_segment(data)
            except Exception as exc:  # zstd raises its own error type
                raise CorruptRecord(f"Corrupt compressed segment {path}: {exc}") from exc
        offset = 0
        for record_type, body, offset, next_offset in codec.iter_frames(data):
            self.report.records += 1
            yield record_type, body
            offset = next_offset
        if offset >= len(data):
            if is_last:
                self._active_bytes = len(data)
            return
        if compressed or not is_last or codec.find_valid_frame_after(data, offset) is not None:
            raise CorruptRecord(f"Corrupt record in {path} at offset {offset}: valid records follow it; "
                                f"refusing to open (restore the file or truncate it by hand)")
        self._truncate_tail(path, offset, len(data))

    def _truncate_tail(self, path: str, offset: int, size: int) -> None:
        with open(path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
        self._active_bytes = offset
        self.report.torn_tail = True
        self.report.truncated_bytes = size - offset
        self.report.truncated_at_offset = offset
        self.report.truncated_file = path
        self.report.notes.append(f"truncated torn tail of {path}: {size - offset} bytes at offset {offset}")

    def _base(self) -> int:
        try:
            with open(os.path.join(self.directory, "BASE"), "rb") as handle:
                return int(handle.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def _segment_numbers(self) -> list[tuple[int, bool]]:
        found: dict[int, bool] = {}
        base = self._base()
        for name in os.listdir(self.directory):
            if not name.startswith(_SEGMENT_PREFIX):
                continue
            stem, _, extension = name[len(_SEGMENT_PREFIX):].partition(".")
            if extension not in ("log", "zst") or not stem.isdigit():
                continue
            number = int(stem)
            if number < base:
                continue  # replaced by a compaction whose clean-up was interrupted
            if extension == "zst" or number not in found:
                # A .zst beside a .log of the same number means sealing was interrupted after the
                # compressed copy was renamed in: the .zst is complete, the .log is redundant.
                if extension == "zst" and number in found:
                    os.remove(os.path.join(self.directory, _segment_name(number, False)))
                found[number] = extension == "zst"
        return sorted(found.items())

    # ----------------------------------------------------------------- locking and fencing
    def _take_lock(self) -> None:
        fd = os.open(os.path.join(self.directory, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ShardLocked(f"Shard directory {self.directory} is locked by another process") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _epoch_path(self) -> str:
        return os.path.join(self.directory, "EPOCH")

    def _read_epoch(self) -> int:
        try:
            with open(self._epoch_path(), "rb") as handle:
                return int(handle.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def _bump_epoch(self) -> int:
        epoch = self._read_epoch() + 1
        temporary = self._epoch_path() + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(str(epoch).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._epoch_path())
        _fsync_directory(self.directory)
        return epoch

    def check_epoch(self) -> None:
        """Raise StaleEpoch if a newer incarnation opened this log since we did."""
        current = self._read_epoch()
        if current != self.epoch:
            raise StaleEpoch(f"Shard log {self.directory} was reopened (epoch {current}, ours {self.epoch})")

    # ----------------------------------------------------------------- appends
    def _open_active(self) -> None:
        path = os.path.join(self.directory, _segment_name(self._active_number, False))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_directory(self.directory)

    def append_batch(self, frames: list[bytes]) -> None:
        """Append framed records as one write (and at most one fsync) per the durability mode.

        Returns once the batch is acknowledged-durable per mode. Raises StaleEpoch (fenced),
        ShardClosed, StorageFailure. Idempotency lives a level up (message_id checks).
        """
        if not frames:
            return
        if self._fd is None:
            raise ShardClosed(f"Shard log {self.directory} is closed")
        if self.durability == "none":
            with self._buffer_lock:
                if self._buffer_since is None:
                    self._buffer_since = self._clock()
                self._buffer.extend(frames)
            if self._clock() - (self._buffer_since or 0) >= self.flush_interval_s:
                self.flush()
            return
        self._write(b"".join(frames), sync=self.durability == "fsync")

    def _write(self, data: bytes, sync: bool) -> None:
        self.check_epoch()
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)  # type: ignore[arg-type]
                view = view[written:]
            if sync:
                os.fdatasync(self._fd)  # type: ignore[arg-type]
                self.fsyncs += 1
        except OSError as exc:
            raise StorageFailure(f"Write to shard log {self.directory} failed: {exc}") from exc
        self.bytes_written += len(data)
        self.commits += 1
        self._active_bytes += len(data)
        if self._active_bytes >= self.segment_bytes_max:
            self._roll()

    def flush_if_due(self) -> None:
        """For `none` mode: write buffered records older than flush_interval_s."""
        since = self._buffer_since
        if since is not None and self._clock() - since >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write every buffered record to the OS (and fsync in fsync mode)."""
        with self._buffer_lock:
            if not self._buffer or self._fd is None:
                return
            data = b"".join(self._buffer)
            self._buffer = []
            self._buffer_since = None
            self._write(data, sync=False)

    @property
    def pending_bytes(self) -> int:
        return sum(len(frame) for frame in self._buffer)

    # ----------------------------------------------------------------- segments
    def _roll(self) -> None:
        """Seal the active segment (compress it if configured) and start the next one."""
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        sealed = self._active_number
        self._active_number += 1
        self._active_bytes = 0
        self._open_active()
        if self.compress_sealed:
            self._compress_segment(sealed)

    def _compress_segment(self, number: int) -> None:
        source = os.path.join(self.directory, _segment_name(number, False))
        target = os.path.join(self.directory, _segment_name(number, True))
        with open(source, "rb") as handle:
            compressed = codec.compress_segment(handle.read())
        temporary = target + ".tmp"
        with open(temporary, "wb") as handle:
            handle.write(compressed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _fsync_directory(self.directory)
        os.remove(source)

    def segment_files(self) -> list[str]:
        return [_segment_name(number, compressed) for number, compressed in self._segment_numbers()]

    def disk_bytes(self) -> int:
        total = 0
        for name in self.segment_files():
            try:
                total += os.path.getsize(os.path.join(self.directory, name))
            except FileNotFoundError:
                pass
        return total

    # ----------------------------------------------------------------- compaction
    def rewrite(self, frames: Iterator[bytes]) -> None:
        """Replace the whole log with `frames` (a snapshot of live state); crash-safe, see module doc."""
        if self._fd is None:
            raise ShardClosed(f"Shard log {self.directory} is closed")
        self.flush()
        self.check_epoch()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        staging = os.path.join(self.directory, "compact.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        first = number = self._active_number + 1
        chunk: list[bytes] = []
        size = 0
        for frame in frames:
            chunk.append(frame)
            size += len(frame)
            if size >= self.segment_bytes_max:
                self._write_staged(staging, number, chunk, seal=True)
                number, chunk, size = number + 1, [], 0
        self._write_staged(staging, number, chunk, seal=False)
        _fsync_directory(staging)
        os.replace(staging, os.path.join(self.directory, "compact.ready"))
        _fsync_directory(self.directory)
        self._finish_compaction()
        self._active_number = number
        self._active_bytes = sum(len(frame) for frame in chunk)
        self._open_active()
        assert self._base() == first

    def _write_staged(self, staging: str, number: int, frames: list[bytes], seal: bool) -> None:
        data = b"".join(frames)
        compressed = seal and self.compress_sealed
        path = os.path.join(staging, _segment_name(number, compressed))
        with open(path, "wb") as handle:
            handle.write(codec.compress_segment(data) if compressed else data)
            handle.flush()
            os.fsync(handle.fileno())

    def _finish_compaction(self) -> None:
        """Discard an unfinished compaction; complete a committed one (idempotent)."""
        shutil.rmtree(os.path.join(self.directory, "compact.tmp"), ignore_errors=True)
        ready = os.path.join(self.directory, "compact.ready")
        if not os.path.isdir(ready):
            return
        names = sorted(os.listdir(ready))
        numbers = [int(name[len(_SEGMENT_PREFIX):].partition(".")[0]) for name in names]
        first = min(numbers) if numbers else self._base()
        for name in names:
            os.replace(os.path.join(ready, name), os.path.join(self.directory, name))
        _fsync_directory(self.directory)
        temporary = os.path.join(self.directory, "BASE.tmp")
        with open(temporary, "wb") as handle:
            handle.write(str(first).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(self.directory, "BASE"))
        _fsync_directory(self.directory)
        for name in os.listdir(self.directory):
            stem = name[len(_SEGMENT_PREFIX):].partition(".")[0] if name.startswith(_SEGMENT_PREFIX) else ""
            if stem.isdigit() and int(stem) < first:
                os.remove(os.path.join(self.directory, name))
        os.rmdir(ready)
        _fsync_directory(self.directory)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        """Flush buffered records, fsync, release the lock. Idempotent."""
        if self._fd is not None:
            try:
                self.flush()
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
