"""Reading one log segment: its records in order, and the recovery verdict on its end.

Shared by replay (`engine.recovery`) and the read-only `verify` check, so both judge a segment by
the same rule (see `engine.message_log` for the rule, `engine.codec` for the format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator

from . import codec
from .errors import CorruptRecord


PREFIX = "seg-"


def file_name(number: int, compressed: bool) -> str:
    return f"{PREFIX}{number:012d}.{'zst' if compressed else 'log'}"


def number_of(name: str) -> int | None:
    """The segment number in a file name (temporary copies included), None for other files."""
    if not name.startswith(PREFIX):
        return None
    stem = name[len(PREFIX):].partition(".")[0]
    return int(stem) if stem.isdigit() else None


def live_segments(names: list[str], base: int) -> tuple[list[tuple[int, bool]], list[str]]:
    """From a shard directory's file names: the live segments in order as (number, compressed), and
    the leftovers to remove (temporary copies, segments below `base`, a .log whose .zst is complete)."""
    found: dict[int, bool] = {}
    leftovers = []
    for name in names:
        number = number_of(name)
        if number is None:
            continue
        extension = name[len(PREFIX) + 12:]
        if extension not in (".log", ".zst") or number < base:
            leftovers.append(name)
        elif extension == ".zst":
            found[number] = True
        else:
            found.setdefault(number, False)
    leftovers += [file_name(number, False) for number, compressed in found.items()
                  if compressed and file_name(number, False) in names]
    return sorted(found.items()), leftovers


def is_unborn(data: bytes) -> bool:
    """A last segment that was created but never born: shorter than a header, or only zeros (a power
    loss kept its size but not its data). Nothing can have been acknowledged in it."""
    return codec.read_segment_header(data) is None and (len(data) < codec.SEGMENT_HEADER_SIZE
                                                        or not data.strip(b"\0"))


@dataclass
class SegmentEnd:
    """How a segment ends: `cut` is the offset to truncate a torn tail at (None when clean);
    `write` is the number of its last complete write (the next one continues from it)."""

    salt: int
    size: int
    cut: int | None
    records: int
    largest_frame: int
    write: int


def decompress(data: bytes, path: str) -> bytes:
    try:
        return codec.decompress_segment(data)
    except Exception as exc:  # zstd raises its own error types
        raise CorruptRecord(f"Corrupt compressed segment {path}: {exc}") from None


def scan(data: bytes, path: str, sealed: bool, start: int = codec.SEGMENT_HEADER_SIZE,
         write: int = 0) -> Generator[tuple[int, Any], None, SegmentEnd]:
    """Yield (type, body) of every complete record of a segment (a group's parts merged into one).

    `sealed` is True for every segment but the last (and for compressed ones): there, any damage
    is corruption. In the last segment, damage is a torn tail, cut off from where it starts, unless
    a valid frame after it says the damaged write had reached the disk before (its `synced` number
    covers that write): then it is corruption. So a tail whose pages reached the disk in any order
    is cut, and durable data that was damaged is never silently dropped. A group missing its last
    part at the end is cut too. Raises CorruptRecord naming the file and offset. `start` and `write`
    resume a scan at a record boundary a checkpoint covers up to (`write`: the last write before it).
    """
    salt = codec.read_segment_header(data)
    if salt is None:
        raise CorruptRecord(f"Corrupt segment header in {path} at offset 0; refusing to open")
    group: list[Any] = []
    group_start = end = start
    records = largest = 0
    write_ended = True
    for offset, frame in codec.iter_frames(data, salt, start):
        end = frame.next_offset
        largest = max(largest, len(frame.payload))
        write, write_ended = frame.write, bool(frame.record_type & codec.WRITE_END)
        where = f"in {path} at offset {offset}"
        body = codec.decode(frame.record_type, frame.payload, where)
        if frame.record_type & codec.CONTINUED:
            if not group:
                group_start = offset
            group.append(body)
            continue
        base_type = frame.record_type & ~(codec.COMPRESSED | codec.CONTINUED | codec.WRITE_END)
        if group:
            if base_type != codec.MESSAGES:
                raise CorruptRecord(f"Record group ends with a record of type {base_type} {where}")
            body = codec.merge_group(group, body)
            group = []
        records += 1
        yield base_type, body
        group_start = end
    damaged = end < len(data)
    if damaged and (sealed or _durable_before(data, end, salt, write + 1 if write_ended else write)):
        raise CorruptRecord(f"Corrupt record in {path} at offset {end}: it was on disk before records "
                            f"that follow it; refusing to open (restore the file or truncate it by hand)")
    if group and sealed:
        raise CorruptRecord(f"Incomplete record group in sealed segment {path} at offset {group_start}; "
                            f"refusing to open")
    cut = group_start if group else (end if damaged else None)
    return SegmentEnd(salt, len(data), cut, records, largest, write)


def _durable_before(data: bytes, offset: int, salt: int, damaged_write: int) -> bool:
    """Does a valid frame after `offset` show that write `damaged_write` was already on disk (or
    come from an earlier write, which an append-only log cannot hold after it)?"""
    for frame in codec.valid_frames_after(data, offset, salt):
        if frame.synced >= damaged_write or frame.write < damaged_write:
            return True
    return False


def starts_at(data: bytes, salt: int, offset: int) -> bool:
    """Can a scan of this (uncompressed) segment resume at `offset`: its salt is `salt` and a record
    starts there, or the segment ends there?"""
    if codec.read_segment_header(data) != salt or not codec.SEGMENT_HEADER_SIZE <= offset <= len(data):
        return False
    return offset == len(data) or codec.check_frame(data, offset, salt) is not None


def check_before(data: bytes, path: str, salt: int, offset: int) -> int | None:
    """Check the frames of a segment up to `offset` (checksums only, nothing decoded): None when they
    are intact, else the offset of the damage when no valid frame follows it anywhere in the segment
    (the open then treats it as a torn tail: replay the whole log by the usual rule). Damage that a
    valid frame follows is corruption: raises CorruptRecord."""
    end = codec.SEGMENT_HEADER_SIZE
    for _, frame in codec.iter_frames(data[:offset], salt):
        end = frame.next_offset
    if end == offset:
        return None
    if next(codec.valid_frames_after(data, end, salt), None) is not None:
        raise CorruptRecord(f"Corrupt record in {path} at offset {end}: it was on disk before records that "
                            f"follow it; refusing to open (restore the file or truncate it by hand)")
    return end
