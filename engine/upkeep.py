"""Background steps of a shard log (rolling to a new segment, compressing sealed segments, the
periodic fsync) and the record of what failed last, which decides when a failed step is retried.
"""

from __future__ import annotations

import os
from typing import Callable

from . import codec, segment
from .active_segment import ActiveSegment
from .backoff import Backoff
from .errors import StorageFailure
from .filesystem import FileSystem, atomic_write

WRITE_FAILURE_WINDOW_S = 30.0
SYNC_INTERVAL_S = 1.0


class Upkeep:
    """What a log does besides appending, and what failed last (callers hold the log's write lock
    and, for steps that change files, its fence).

    A failed step leaves the log serving: it is recorded (`failure`, `failures`), stays pending
    (`roll_due`, `uncompressed`) and is retried once `retry`'s exponential backoff has passed.

    Example:
        >>> upkeep = Upkeep(fs, directory, time.monotonic, active, 64 * MB, compress_sealed=True)
        >>> upkeep.roll_if_full(); upkeep.failure
    """

    def __init__(self, fs: FileSystem, directory: str, clock: Callable[[], float], active: ActiveSegment,
                 segment_bytes_max: int, compress_sealed: bool) -> None:
        self.fs = fs
        self.directory = directory
        self._clock = clock
        self._active = active
        self.segment_bytes_max = segment_bytes_max
        self.compress_sealed = compress_sealed
        self.failure: str | None = None
        self.failures = 0
        self._failed_at = 0.0
        self.retry = Backoff(0.05, 5.0, clock)  # failed background steps wait this long to retry
        self.roll_due = False
        self.uncompressed: list[int] = []  # sealed segments still to compress (retried after a failure)
        self.holds = 0  # online backups reading this log's files: nothing is compressed meanwhile
        self._synced_at = 0.0

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # ----------------------------------------------------------------- failures
    def failed(self, step: str, exc: BaseException) -> None:
        self.failure = f"{step} failed: {exc}"
        self.failures += 1
        self._failed_at = self._clock()
        self.retry.failed()

    def succeeded(self, step: str) -> None:
        if self.failure is not None and self.failure.startswith(step):
            self.failure = None
            self.retry.succeeded()

    def write_failed_recently(self) -> bool:
        """A write failed in the last WRITE_FAILURE_WINDOW_S seconds and none succeeded since."""
        return (self.failure is not None and self.failure.startswith("write")
                and self._clock() - self._failed_at <= WRITE_FAILURE_WINDOW_S)

    # ----------------------------------------------------------------- periodic fsync
    def sync_due(self) -> bool:
        """Writes not known to be on disk, and the last periodic fsync is SYNC_INTERVAL_S old."""
        return self._active.write > self._active.synced and self._clock() - self._synced_at >= SYNC_INTERVAL_S

    def sync(self) -> None:
        """fsync the active segment, so a damaged record older than this is known to have been on disk
        (recovery then refuses rather than cuts); a failure is recorded."""
        if self._active.handle is None or self._active.broken is not None:
            return
        try:
            self._active.sync()
        except OSError as exc:
            self.failed("sync", exc)
            return
        self._synced_at = self._clock()
        self.succeeded("sync")

    # ----------------------------------------------------------------- segments
    def roll_if_full(self) -> None:
        if self._active.size >= self.segment_bytes_max:
            self.roll_due = True
            self.roll()

    def roll(self) -> None:
        """Seal the active segment and start the next; on failure keep appending to the current one."""
        try:
            sealed = self._active.roll()
        except OSError as exc:
            self._discard(segment.file_name(self._active.number + 1, False))
            self.failed("segment roll", exc)
            return
        self.roll_due = False
        if self.compress_sealed:
            self.uncompressed.append(sealed)
            self.compress_pending()
        self.succeeded("segment roll")

    def queue_compression(self, segments: list[tuple[int, bool]]) -> None:
        """After a replay: every sealed segment (all but the last) still uncompressed is to compress."""
        self.uncompressed = [number for number, compressed in segments[:-1] if not compressed and
                             self.compress_sealed]

    def forget_segments(self) -> None:
        """A compaction replaced every segment: nothing of the old log is left to roll or compress."""
        self.uncompressed, self.roll_due = [], False

    def compress_pending(self) -> None:
        if self.holds:
            return  # an online backup is reading the sealed .log files: compressed once it is done
        while self.uncompressed:
            number = self.uncompressed[0]
            try:
                self._compress_segment(number)
            except (OSError, StorageFailure) as exc:
                self._discard(segment.file_name(number, True) + ".tmp")
                self.failed("segment compression", exc)
                return
            self.uncompressed.pop(0)
        self.succeeded("segment compression")

    def _compress_segment(self, number: int) -> None:
        """Replace sealed segment `number` by its compressed copy (idempotent: a .zst appears only
        complete, so once it exists only the .log is left to remove)."""
        source = self._path(segment.file_name(number, False))
        target = self._path(segment.file_name(number, True))
        if not self.fs.exists(target):
            atomic_write(self.fs, target, codec.compress_segment(self.fs.read(source)))
        if self.fs.exists(source):
            self.fs.unlink(source)
        self.fs.fsync_dir(self.directory)

    def _discard(self, name: str) -> None:
        try:
            if self.fs.exists(self._path(name)):
                self.fs.unlink(self._path(name))
                self.fs.fsync_dir(self.directory)
        except OSError:
            pass  # a leftover is removed by the next open
