"""Record framing for shard logs: header (magic, type, length, CRC32) + msgpack payload.

Frame: b"FC" | type:u8 | length:u32 LE | crc32(type byte + payload):u32 LE | payload.
Bit 0x80 of the type marks a zstd-compressed payload (large records when compression is on).
Payloads are msgpack (already a Ray dependency): about 5x faster to encode than json on the hot
append path, and exact for the JSON-shaped bodies we store (str keys, lists, numbers, None).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Iterator

import msgpack
import zstandard

MAGIC = b"FC"
HEADER = struct.Struct("<2sBII")
HEADER_SIZE = HEADER.size
MAX_RECORD_BYTES = 256 * 1024 * 1024
COMPRESSED_FLAG = 0x80
COMPRESS_MIN_BYTES = 512

USER_PUT = 1
USER_DELETE = 2
SESSION_PUT = 3
SESSION_DELETE = 4
MESSAGES = 5
PURGE = 6
RECORD_TYPES = frozenset({USER_PUT, USER_DELETE, SESSION_PUT, SESSION_DELETE, MESSAGES, PURGE})

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_compressor = zstandard.ZstdCompressor(level=3)
_decompressor = zstandard.ZstdDecompressor()


def encode(record_type: int, body: Any, compress: bool = False) -> bytes:
    """Frame one record; `body` must be JSON-shaped (dict/list/str/int/float/bool/None)."""
    assert record_type in RECORD_TYPES
    payload = _pack(body)
    if compress and len(payload) >= COMPRESS_MIN_BYTES:
        payload = _compressor.compress(payload)
        record_type |= COMPRESSED_FLAG
    crc = zlib.crc32(payload, zlib.crc32(bytes((record_type,))))
    return bytes(HEADER.pack(MAGIC, record_type, len(payload), crc) + payload)


def try_decode_at(buffer: bytes | memoryview, offset: int) -> tuple[int, Any, int] | None:
    """Decode the frame at `offset`: (type, body, next offset), or None if it is not a valid frame."""
    end = len(buffer)
    if offset + HEADER_SIZE > end:
        return None
    magic, record_type, length, crc = HEADER.unpack_from(buffer, offset)
    if magic != MAGIC or (record_type & ~COMPRESSED_FLAG) not in RECORD_TYPES or length > MAX_RECORD_BYTES:
        return None
    start = offset + HEADER_SIZE
    if start + length > end:
        return None
    payload = bytes(buffer[start:start + length])
    if zlib.crc32(payload, zlib.crc32(bytes((record_type,)))) != crc:
        return None
    if record_type & COMPRESSED_FLAG:
        payload = _decompressor.decompress(payload)
        record_type &= ~COMPRESSED_FLAG
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError):
        return None
    return record_type, body, start + length


def iter_frames(buffer: bytes) -> Iterator[tuple[int, Any, int, int]]:
    """Yield (type, body, offset, next_offset) until the first invalid frame; see `first_bad_offset`."""
    offset = 0
    while offset < len(buffer):
        decoded = try_decode_at(buffer, offset)
        if decoded is None:
            return
        record_type, body, next_offset = decoded
        yield record_type, body, offset, next_offset
        offset = next_offset


def find_valid_frame_after(buffer: bytes, offset: int) -> int | None:
    """Offset of the first valid frame strictly after `offset`, or None (tells corruption from a torn tail)."""
    position = buffer.find(MAGIC, offset + 1)
    while position != -1:
        if try_decode_at(buffer, position) is not None:
            return position
        position = buffer.find(MAGIC, position + 1)
    return None


def compress_segment(data: bytes) -> bytes:
    return _compressor.compress(data)


def decompress_segment(data: bytes) -> bytes:
    return _decompressor.decompress(data)
