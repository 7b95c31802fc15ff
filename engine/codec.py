"""Record encoding and framing of shard logs (format 2).

A record is `(type, payload)`: a type byte and the msgpack bytes of its body, built by `pack`
before any state changes (encode before apply). The log frames records when it writes them:

    segment = header | frame*
    header  = b"FFCHSEG2" | salt:u64 | crc32(magic + salt):u32                     (20 bytes)
    frame   = b"FC" | type:u8 | length:u32 | salt:u64 | write:u32 | synced:u32
              | crc32(type..synced + payload):u32 | payload                        (27 + length)

`salt` is a random number drawn for each segment and repeated in each of its frames. A frame
counts as valid only with its segment's salt and a matching CRC, so bytes a user wrote inside a
message can never pass for a frame (they cannot know the salt): recovery's torn-tail-versus-
corruption decision cannot be fooled by content.

`write` numbers the log writes within a segment (1, 2, ...; every frame of one write carries it)
and `synced` is the highest write of the segment known to be on disk (fdatasync'd) when this one
was issued. Recovery uses them to tell an unsynced tail whose pages reached the disk out of order
(truncated) from damage to data that was already durable (refused); see engine.segment.

Type flags: 0x80 payload is zstd-compressed; 0x40 the record continues in the next frame; 0x20
last frame of its write. One logical record (a large batch of messages) may be written as several
part frames so no frame exceeds MAX_RECORD_BYTES, the one bound the writer enforces and the reader
accepts; replay applies a group only when its last part is read, so a batch is never half-applied.
"""

from __future__ import annotations

import struct
import threading
import zlib
from typing import Any, Iterator, NamedTuple

import msgpack
import zstandard

from .config import MB
from .errors import CorruptRecord, InvalidInput, StorageFailure

SEGMENT_MAGIC = b"FFCHSEG2"
SEGMENT_HEADER = struct.Struct("<8sQI")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size
FRAME_MAGIC = b"FC"
FRAME_HEADER = struct.Struct("<2sBIQIII")
FRAME_HEADER_SIZE = FRAME_HEADER.size
_CRC_AT = FRAME_HEADER_SIZE - 4
MAX_RECORD_BYTES = 32 * MB
PART_TARGET_BYTES = 8 * MB
ROW_SLACK_BYTES = 4096  # room for a MESSAGES body's user, session and time around its rows
COMPRESSED = 0x80
CONTINUED = 0x40
WRITE_END = 0x20
_FLAGS = COMPRESSED | CONTINUED | WRITE_END
COMPRESS_MIN_BYTES = 512

USER_PUT = 1
USER_DELETE = 2
SESSION_PUT = 3
SESSION_DELETE = 4
MESSAGES = 5
PURGE = 6
RECORD_TYPES = frozenset({USER_PUT, USER_DELETE, SESSION_PUT, SESSION_DELETE, MESSAGES, PURGE})

Record = tuple[int, bytes]

class _Codecs(threading.local):
    """A packer and zstd (de)compressors per thread: neither msgpack's Packer nor python-zstandard's
    objects may be used by two threads at once (four threads sharing one compressor segfault), and
    shards, their upkeep threads, compaction, backups and verify all encode or compress."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.chunk_compressor = zstandard.ZstdCompressor(level=1)
        self.decompressor = zstandard.ZstdDecompressor()


_codecs = _Codecs()


# ---------------------------------------------------------------------- encoding
def _packed(body: Any) -> bytes:
    try:
        payload: bytes = _codecs.pack(body)
        return payload
    except (TypeError, ValueError, OverflowError) as exc:  # unencodable value: the caller's input
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidInput(f"Record cannot be stored: {reason}", "INVALID_MESSAGE") from None


def pack(record_type: int, body: dict[str, Any], compress: bool = False) -> list[Record]:
    """The exact record(s) the log will hold for `body`; raises InvalidInput if it cannot be encoded
    or is too large. Only a MESSAGES body above the bound becomes several parts (a group)."""
    assert record_type in RECORD_TYPES
    payload = _packed(body)
    # A MESSAGES record keeps ROW_SLACK_BYTES below the bound, so every row it accepts fits again in a
    # record of its own later (compaction re-packs rows with another session record around them).
    bound = MAX_RECORD_BYTES - ROW_SLACK_BYTES if record_type == MESSAGES else MAX_RECORD_BYTES
    if len(payload) <= bound:
        return [_finish(record_type, payload, compress)]
    if record_type != MESSAGES:
        raise InvalidInput(f"Record of {len(payload)} bytes is above the {MAX_RECORD_BYTES}-byte limit",
                           "MESSAGE_TOO_LARGE")
    return _split_messages(body, compress)


def _split_messages(body: dict[str, Any], compress: bool) -> list[Record]:
    parts: list[list[Any]] = [[]]
    size = 0
    for row in body["m"]:
        row_size = len(_packed(row))
        if row_size > MAX_RECORD_BYTES - ROW_SLACK_BYTES:
            raise InvalidInput(f"Message {row[0]!r} encodes to {row_size} bytes, above the record limit",
                               "MESSAGE_TOO_LARGE")
        if parts[-1] and size + row_size > PART_TARGET_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row_size
    records = []
    for position, rows in enumerate(parts):
        record_type = MESSAGES | (CONTINUED if position < len(parts) - 1 else 0)
        records.append(_finish(record_type, _packed({**body, "m": rows}), compress))
    return records


def _finish(record_type: int, payload: bytes, compress: bool) -> Record:
    if compress and len(payload) >= COMPRESS_MIN_BYTES:
        return record_type | COMPRESSED, _codecs.compressor.compress(payload)
    return record_type, payload


def frame(record: Record, salt: int, write: int = 1, synced: int = 0, last: bool = True) -> bytes:
    """Header + payload of one record in a segment salted with `salt`, as part of write `write`."""
    record_type, payload = record
    if last:
        record_type |= WRITE_END
    header = FRAME_HEADER.pack(FRAME_MAGIC, record_type, len(payload), salt, write, synced, 0)
    crc = zlib.crc32(payload, zlib.crc32(header[2:_CRC_AT]))
    return header[:_CRC_AT] + crc.to_bytes(4, "little") + payload


def frames(records: list[Record], salt: int, write: int, synced: int) -> bytes:
    """The bytes of one log write: its records framed, the last one flagged as the write's end."""
    last = len(records) - 1
    return b"".join(frame(record, salt, write, synced, position == last)
                    for position, record in enumerate(records))


def segment_header(salt: int) -> bytes:
    head = SEGMENT_MAGIC + salt.to_bytes(8, "little")
    return head + zlib.crc32(head).to_bytes(4, "little")


def read_segment_header(data: bytes) -> int | None:
    """The salt of a segment, or None if its header is missing or damaged."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return None
    magic, salt, crc = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC or zlib.crc32(data[:16]) != crc:
        return None
    return int(salt)


# ---------------------------------------------------------------------- decoding
class Frame(NamedTuple):
    """A valid frame: type with flags, payload, where the next frame starts, its write numbers."""

    record_type: int
    payload: bytes
    next_offset: int
    write: int
    synced: int


def check_frame(buffer: bytes, offset: int, salt: int) -> Frame | None:
    """The frame at `offset` if a valid frame of this segment starts there, else None."""
    if offset + FRAME_HEADER_SIZE > len(buffer):
        return None
    magic, record_type, length, frame_salt, write, synced, crc = FRAME_HEADER.unpack_from(buffer, offset)
    if (magic != FRAME_MAGIC or frame_salt != salt or length > MAX_RECORD_BYTES
            or (record_type & ~_FLAGS) not in RECORD_TYPES):
        return None
    start = offset + FRAME_HEADER_SIZE
    end = start + length
    if end > len(buffer):
        return None
    payload = buffer[start:end]
    if zlib.crc32(payload, zlib.crc32(buffer[offset + 2:offset + _CRC_AT])) != crc:
        return None
    return Frame(record_type, payload, end, write, synced)


def decode(record_type: int, payload: bytes, where: str) -> Any:
    """The body of a checksum-valid record; a body that cannot be decoded is corruption."""
    try:
        if record_type & COMPRESSED:
            size = zstandard.frame_content_size(payload)
            if size < 0 or size > MAX_RECORD_BYTES:
                raise ValueError(f"compressed record declares {size} bytes")
            payload = _codecs.decompressor.decompress(payload)
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, zstandard.ZstdError) as exc:
        raise CorruptRecord(f"Undecodable record {where}: {exc}") from None


def decode_records(records: list[Record], where: str) -> Iterator[tuple[int, Any]]:
    """(type, body) of encoded records, the parts of a group merged into one body."""
    group: list[Any] = []
    for record_type, payload in records:
        body = decode(record_type, payload, where)
        if record_type & CONTINUED:
            group.append(body)
            continue
        if group:
            body = merge_group(group, body)
            group = []
        yield record_type & ~_FLAGS, body


def merge_group(parts: list[Any], last: Any) -> Any:
    """One MESSAGES body from the bodies of a group's parts."""
    return {**last, "m": [row for part in parts for row in part["m"]] + last["m"]}


def iter_frames(buffer: bytes, salt: int, offset: int = SEGMENT_HEADER_SIZE) -> Iterator[tuple[int, Frame]]:
    """Yield (offset, frame) until the first invalid frame."""
    while offset < len(buffer):
        checked = check_frame(buffer, offset, salt)
        if checked is None:
            return
        yield offset, checked
        offset = checked.next_offset


def valid_frames_after(buffer: bytes, offset: int, salt: int) -> Iterator[Frame]:
    """Every valid frame of this segment that starts strictly after `offset` (found by scanning)."""
    position = buffer.find(FRAME_MAGIC, offset + 1)
    while position != -1:
        checked = check_frame(buffer, position, salt)
        if checked is not None:
            yield checked
        position = buffer.find(FRAME_MAGIC, position + 1)


def compress_segment(data: bytes) -> bytes:
    """zstd of a sealed segment; raises StorageFailure if the compressor fails (a background step retries)."""
    try:
        compressed: bytes = _codecs.compressor.compress(data)
        return compressed
    except zstandard.ZstdError as exc:
        raise StorageFailure(f"Cannot compress a segment: {exc}") from None


def decompress_segment(data: bytes) -> bytes:
    return _codecs.decompressor.decompress(data)


def pack_rows(rows: list[list[Any]]) -> bytes:
    """A chunk of message rows as a session table holds it in RAM (zstd of their msgpack)."""
    compressed = _codecs.chunk_compressor.compress(_codecs.pack(rows))
    # python-zstandard's output keeps the allocation of its worst-case bound (often 7x the data): a
    # copy of the exact size is what a long-lived chunk should hold.
    return bytes(memoryview(compressed))


def unpack_rows(chunk: bytes) -> list[list[Any]]:
    rows: list[list[Any]] = msgpack.unpackb(_codecs.decompressor.decompress(chunk), raw=False, strict_map_key=True)
    return rows


def unpacked_size(chunk: bytes) -> int:
    """The msgpack size a chunk decompresses to (zstd records it in the frame)."""
    size: int = zstandard.frame_content_size(chunk)
    return max(size, len(chunk))
