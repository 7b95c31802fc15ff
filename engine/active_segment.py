"""The active segment: the one file of a shard log that appends go to, its write numbers, and
taking a failed write back off it.
"""

from __future__ import annotations

import os
import random

from . import codec, segment
from .errors import StorageFailure
from .filesystem import FileSystem, close_quietly, write_all
from .recovery import Tail


class ActiveSegment:
    """The last segment of a shard log, open for appends (callers hold the log's fence).

    Each write call gets the next `write` number; its frames carry that number and `synced`, the
    highest write known to be on disk, which is what the recovery rule reads (engine.segment).
    `size` is the last good size: bytes past it belong to a failed write. While `broken` names a
    reason, appends must wait for `repair`.

    Example:
        >>> active = ActiveSegment(FileSystem(), "/tmp/shard-0000", random.Random(1))
        >>> active.start(1); active.append(codec.pack(codec.USER_PUT, {"u": "alice", "p": {}}), sync=True)
    """

    def __init__(self, fs: FileSystem, directory: str, rng: random.Random) -> None:
        self.fs = fs
        self.directory = directory
        self._rng = rng
        self.handle: int | None = None
        self.number = 0
        self.salt = 0
        self.size = 0
        self.write = 0  # number of the last write in this segment (codec: frame header)
        self.synced = 0  # highest write of this segment known to be on disk
        self.broken: str | None = None  # why appends must wait for a repair (the file may hold bytes past size)

    @property
    def name(self) -> str:
        return segment.file_name(self.number, False)

    def start(self, number: int) -> None:
        """Create segment `number` with a fresh salt and make it the active one (raises OSError)."""
        salt = self._rng.getrandbits(64)
        handle = self.fs.open(os.path.join(self.directory, segment.file_name(number, False)), "create")
        try:
            write_all(self.fs, handle, codec.segment_header(salt))
            self.fs.fdatasync(handle)
            self.fs.fsync_dir(self.directory)
        except BaseException:
            self.fs.close(handle)
            raise
        self.handle, self.salt, self.number = handle, salt, number
        self.size = codec.SEGMENT_HEADER_SIZE
        self.write = self.synced = 0

    def resume(self, tail: Tail) -> None:
        """Append to the last segment a replay read (raises OSError)."""
        self.number, self.salt, self.write, self.size = tail.number, tail.salt, tail.write, tail.size
        self.open()
        assert self.handle is not None
        # Everything replayed counts as on disk from here on (frames written next say so).
        self.fs.fsync(self.handle)
        self.synced = self.write

    def adopt(self, number: int, salt: int, size: int) -> None:
        """Stop appending here: the last segment of a committed compaction is the active one now
        (its handle is opened by `open`)."""
        self.close()
        self.number, self.salt, self.size = number, salt, size
        # Compaction wrote the segment's records as one fsync'd write number 1, or none at all.
        self.write = self.synced = 1 if size > codec.SEGMENT_HEADER_SIZE else 0

    def open(self) -> None:
        """Open segment `number` for appends (raises OSError)."""
        self.handle = self.fs.open(os.path.join(self.directory, self.name), "append")

    def append(self, records: list[codec.Record], sync: bool) -> int:
        """Write `records` as one write, fdatasync'd when `sync`; returns its size in bytes. On OSError
        the write is cut back off (or `broken` says it could not be) and the error propagates."""
        assert self.handle is not None
        self.write += 1  # a write number is never used twice, even when the write fails
        data = codec.frames(records, self.salt, self.write, self.synced)
        try:
            write_all(self.fs, self.handle, data)
            if sync:
                self.fs.fdatasync(self.handle)
                self.synced = self.write
        except OSError:
            self._cut_back()
            raise
        self.size += len(data)
        return len(data)

    def roll(self) -> int:
        """Seal this segment and start the next; returns the sealed segment's number. On OSError this
        one stays active (the next one's file may be left over) and the error propagates."""
        sealed, old = self.number, self.handle
        assert old is not None
        self.fs.fsync(old)
        self.start(sealed + 1)
        close_quietly(self.fs, old)
        return sealed

    def sync(self) -> None:
        """fsync the segment: every write so far is on disk (raises OSError)."""
        assert self.handle is not None
        written = self.write
        self.fs.fsync(self.handle)
        self.synced = written

    def cut(self) -> None:
        """Truncate the segment to its last good size, durably (raises OSError)."""
        assert self.handle is not None
        self.fs.truncate(self.handle, self.size)
        self.fs.fsync(self.handle)

    def _cut_back(self) -> None:
        """Remove a failed write's bytes; if that fails too, repair before the next write."""
        try:
            self.cut()
        except OSError as exc:
            self.broken = f"could not cut a failed write back off {self.name}: {exc}"

    def replay_limit(self) -> tuple[int, int] | None:
        """Before the log is read again: bytes of a failed write must not be replayed, so cut them
        off; if that fails again, returns (number, last good size) to replay this segment only up to
        (appends then stay refused until the cut succeeds)."""
        if self.broken is None or self.handle is None:
            return None
        try:
            self.cut()
        except OSError:
            return self.number, self.size
        self.broken = None
        return None

    def repair(self) -> None:
        """Make appends possible again: open a fresh segment if none is open (a compaction committed
        but its last segment could not be opened), else cut off what a failed write left.
        Raises StorageFailure."""
        if self.handle is None:
            try:
                self.start(self.number + 1)
            except OSError as exc:
                raise StorageFailure(f"Shard log {self.directory} has no segment to append to: {exc}") from None
            self.broken = None
            return
        if self.broken is None:
            return
        try:
            self.cut()
        except OSError as exc:
            raise StorageFailure(f"Shard log {self.directory} needs repair ({self.broken}): {exc}") from None
        self.broken = None

    def close(self) -> None:
        handle, self.handle = self.handle, None
        close_quietly(self.fs, handle)
