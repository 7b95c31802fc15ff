"""Reading a shard log back at open (and at reload): every segment from BASE on, in order, after
settling what a crash left behind; what it found and repaired goes into a `RecoveryReport`.

The rule that tells a torn tail from corruption is `engine.segment.scan`'s (summed up at the top of
`engine.message_log`); the compaction files it finishes or discards are `engine.compaction`'s.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generator, NamedTuple

from . import codec, compaction, segment
from .filesystem import FileSystem


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
    compaction_finished: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A copy (lists included): a caller adding notes must not change the log's own report."""
        return asdict(self)


@dataclass
class Tail:
    """The last live segment as a replay left it (appends continue in it when it is uncompressed):
    its salt, the number of its last complete write, and its size once a torn tail was cut."""

    number: int
    compressed: bool
    salt: int
    write: int
    size: int


class Position(NamedTuple):
    """A point of a shard log at the end of a write: segment `number` (with its `salt`), the offset
    in its uncompressed bytes, and the number of that write. A checkpoint covers the log up to one."""

    number: int
    offset: int
    write: int
    salt: int


def list_segments(fs: FileSystem, directory: str) -> tuple[list[tuple[int, bool]], list[str]]:
    """The live segments of a shard directory in order as (number, compressed), and its leftovers."""
    return segment.live_segments(fs.listdir(directory), compaction.read_base(fs, directory))


class Recovery:
    """Replays one shard directory and keeps the report of what it found.

    Example:
        >>> recovery = Recovery(FileSystem(), "/tmp/shard-0000")
        >>> replay = recovery.replay()
        >>> for record_type, body in replay: ...  # the generator's return value is (segments, tail)
    """

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self.report = RecoveryReport()

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def replay(self, limit: tuple[int, int] | None = None, start: Position | None = None,
               started: Callable[[bool], None] | None = None
               ) -> Generator[tuple[int, Any], None, tuple[list[tuple[int, bool]], Tail | None]]:
        """Yield every record (type, body) in log order; returns the live segments and the last one's
        Tail (None when there is no segment). Finishes a committed compaction first and removes
        leftovers and unborn last segments; truncates a torn tail. `limit` (segment number, size)
        reads that segment only up to `size` (a failed write that could not be cut off yet).
        `start` (a checkpoint's position) yields only the records after it if the log still holds
        it, and `started(resumed)` says which before the first record. Raises CorruptRecord, OSError."""
        self.finish_compaction()
        numbers = self._live_segments_cleaned()
        last_data = self._drop_unborn(numbers)
        self.report.segments = len(numbers)
        resume = self._resume_point(numbers, start, limit, last_data) if start is not None else None
        if started is not None:
            started(resume is not None)
        tail = None
        for position, (number, compressed) in enumerate(numbers):
            if resume is not None and position < resume[0]:
                continue
            is_last = position == len(numbers) - 1
            end = limit[1] if limit is not None and limit[0] == number else None
            if resume is not None and position == resume[0]:
                assert start is not None
                tail = yield from self._replay_segment(number, compressed, is_last, end, resume[1],
                                                       start.offset, start.write)
                continue
            tail = yield from self._replay_segment(number, compressed, is_last, end, last_data if is_last else None)
        return numbers, tail

    def _resume_point(self, numbers: list[tuple[int, bool]], start: Position, limit: tuple[int, int] | None,
                      last_data: bytes | None) -> tuple[int, bytes] | None:
        """Where a replay from `start` begins: the index of its segment among `numbers` and that
        segment's uncompressed bytes; None (with a note) when the log no longer holds `start`."""
        for index, (number, compressed) in enumerate(numbers):
            if number != start.number:
                continue
            name = segment.file_name(number, compressed)
            data = last_data if index == len(numbers) - 1 and last_data is not None else self.fs.read(self._path(name))
            if limit is not None and limit[0] == number:
                data = data[:limit[1]]
            if compressed:
                data = segment.decompress(data, self._path(name))
            if segment.starts_at(data, start.salt, start.offset):
                damage = segment.check_before(data, self._path(name), start.salt, start.offset)
                if damage is None:
                    self.report.notes.append(f"resumed after a checkpoint at {name} offset {start.offset}")
                    return index, data
                self.report.notes.append(f"a checkpoint ends in {name}, damaged at offset {damage} with no valid "
                                         f"record after it: replayed the whole log")
                return None
            break
        self.report.notes.append(f"a checkpoint names segment {start.number} offset {start.offset}, which the "
                                 f"log no longer holds: replayed the whole log")
        return None

    def first_number(self) -> int:
        """The number of the first segment of a log that has none (after BASE, if a compaction set it)."""
        return max(1, compaction.read_base(self.fs, self.directory))

    def finish_compaction(self) -> None:
        """Finish a committed compaction, discard an uncommitted one (engine.compaction.finish)."""
        if compaction.finish(self.fs, self.directory):
            self.report.compaction_finished = True

    def _live_segments_cleaned(self) -> list[tuple[int, bool]]:
        """Live segments in order, after removing leftovers (temporary copies, segments below BASE, a
        .log whose compressed .zst was completed)."""
        numbers, leftovers = list_segments(self.fs, self.directory)
        if leftovers:
            for name in leftovers:
                self.fs.unlink(self._path(name))
            self.fs.fsync_dir(self.directory)
            self.report.notes.append(f"removed leftovers: {sorted(leftovers)}")
        return numbers

    def _drop_unborn(self, numbers: list[tuple[int, bool]]) -> bytes | None:
        """Remove last segments that were never born (segment.is_unborn); returns the bytes of the
        (new) last segment when it is uncompressed, so it is read once."""
        while numbers and not numbers[-1][1]:
            name = segment.file_name(numbers[-1][0], False)
            data = self.fs.read(self._path(name))
            if not segment.is_unborn(data):
                return data
            self.fs.unlink(self._path(name))
            self.fs.fsync_dir(self.directory)
            self.report.notes.append(f"removed unborn segment {name} ({len(data)} bytes)")
            numbers.pop()
        return None

    def _replay_segment(self, number: int, compressed: bool, is_last: bool, end_at: int | None = None,
                        data: bytes | None = None, offset: int | None = None,
                        write: int = 0) -> Generator[tuple[int, Any], None, Tail]:
        """Yield the records of one segment, truncate a torn tail (last segment); returns its Tail.
        `end_at` ignores bytes from there on. With `offset` (resuming), `data` is the segment's
        uncompressed bytes already cut at `end_at`, and the scan starts there after write `write`."""
        name = segment.file_name(number, compressed)
        path = self._path(name)
        if offset is None:
            if data is None:
                data = self.fs.read(path)
            if end_at is not None:
                data = data[:end_at]
            if compressed:
                data = segment.decompress(data, path)
        assert data is not None
        end = yield from segment.scan(data, path, compressed or not is_last,
                                      codec.SEGMENT_HEADER_SIZE if offset is None else offset, write)
        self.report.records += end.records
        if end.cut is not None:
            self._truncate_tail(name, end.cut, end.size)
        return Tail(number, compressed, end.salt, end.write, end.size if end.cut is None else end.cut)

    def _truncate_tail(self, name: str, offset: int, size: int) -> None:
        handle = self.fs.open(self._path(name), "append")
        try:
            self.fs.truncate(handle, offset)
            self.fs.fsync(handle)
        finally:
            self.fs.close(handle)
        self.report.torn_tail = True
        self.report.truncated_bytes = size - offset
        self.report.truncated_at_offset = offset
        self.report.truncated_file = self._path(name)
        self.report.notes.append(f"truncated torn tail of {name}: {size - offset} bytes at offset {offset}")
