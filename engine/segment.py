"""Reading one log segment: its records in order, and the recovery verdict on its end.

Shared by replay (`MessageLog.open`) and the read-only `verify` check, so both judge a segment by
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


@dataclass
class SegmentEnd:
    """How a segment ends: `cut` is the offset to truncate a torn tail at (None when clean)."""

    salt: int
    size: int
    cut: int | None
    records: int
    largest_frame: int


def decompress(data: bytes, path: str) -> bytes:
    try:
        return codec.decompress_segment(data)
    except Exception as exc:  # zstd raises its own error types
        raise CorruptRecord(f"Corrupt compressed segment {path}: {exc}") from None


def scan(data: bytes, path: str, sealed: bool) -> Generator[tuple[int, Any], None, SegmentEnd]:
    """Yield (type, body) of every complete record of a segment (a group's parts merged into one).

    `sealed` is True for every segment but the last (and for compressed ones): there, any damage
    is corruption. In the last segment, a bad frame with no valid frame of this segment after it,
    or a group missing its last part, is a torn tail: the returned `cut` says where it starts.
    Raises CorruptRecord naming the file and offset.
    """
    salt = codec.read_segment_header(data)
    if salt is None:
        raise CorruptRecord(f"Corrupt segment header in {path} at offset 0; refusing to open")
    group: list[Any] = []
    group_start = end = codec.SEGMENT_HEADER_SIZE
    records = largest = 0
    for record_type, payload, offset, next_offset in codec.iter_frames(data, salt):
        end = next_offset
        largest = max(largest, len(payload))
        where = f"in {path} at offset {offset}"
        body = codec.decode(record_type, payload, where)
        if record_type & codec.CONTINUED:
            if not group:
                group_start = offset
            group.append(body)
            continue
        base_type = record_type & ~(codec.COMPRESSED | codec.CONTINUED)
        if group:
            if base_type != codec.MESSAGES:
                raise CorruptRecord(f"Record group ends with a record of type {base_type} {where}")
            body = codec.merge_group(group, body)
            group = []
        records += 1
        yield base_type, body
        group_start = next_offset
    damaged = end < len(data)
    if damaged and (sealed or codec.find_valid_frame_after(data, end, salt) is not None):
        raise CorruptRecord(f"Corrupt record in {path} at offset {end}: valid records follow it; refusing to "
                            f"open (restore the file or truncate it by hand)")
    if group and sealed:
        raise CorruptRecord(f"Incomplete record group in sealed segment {path} at offset {group_start}; "
                            f"refusing to open")
    cut = group_start if group else (end if damaged else None)
    return SegmentEnd(salt, len(data), cut, records, largest)
