"""A message as a shard hands it out (`StoredMessage`), the log row it is stored as, the key its id
is found by, and the process-wide cache of decoded chunks (engine/message_table.py holds the tables).
"""

from __future__ import annotations

import sys
import threading
import zlib
from collections import OrderedDict
from typing import Any, NamedTuple

from . import codec

DECODED_BYTES = 32 * 2**20  # decoded chunks kept per process (LRU, by their decoded size)
ROLE_NAMES = ("user", "assistant", "system", "tool")
ROLES = {name: code for code, name in enumerate(ROLE_NAMES)}
_STR_OVERHEAD = sys.getsizeof("")
_TUPLE_BYTES = sys.getsizeof(tuple(range(8)))


class StoredMessage(NamedTuple):
    """One message as a shard hands it out (a tuple: ~8 pointers instead of a dict per message)."""

    message_id: str
    role: str
    content: str
    timestamp: str
    timestamp_epoch: float
    attachments: list[str] | None
    metadata: dict[str, Any] | None
    stored_at: str

    def to_dict(self, include_metadata: bool = True) -> dict[str, Any]:
        out = {"role": self.role, "content": self.content, "message_id": self.message_id,
               "timestamp": self.timestamp, "attachments": list(self.attachments or ())}
        if include_metadata:
            out["metadata"] = copy_json(self.metadata) if self.metadata else {}
        return out

    def ram_bytes(self) -> int:
        """Bytes this message holds in RAM (CPython object sizes; ASCII strings are 49 + len bytes)."""
        text = len(self.content) if self.content.isascii() else sys.getsizeof(self.content) - _STR_OVERHEAD
        return (_TUPLE_BYTES + 24 + 4 * _STR_OVERHEAD + text + len(self.message_id) + len(self.timestamp)
                + len(self.stored_at))


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (callers may change what they get without changing the store)."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


class _DecodedChunks:
    """Recently read chunks, decoded (shared by every table of the process; any thread), bounded by
    their decoded size; a chunk larger than a tenth of the bound is decoded for each read instead."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.bytes = 0
        self._entries: OrderedDict[int, tuple[bytes, list[list[Any]], int]] = OrderedDict()
        self._lock = threading.Lock()

    def rows(self, blob: bytes, remember: bool = True) -> list[list[Any]]:
        key = id(blob)  # the entry holds `blob`, so its id cannot be reused while the entry exists
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is blob:
                self._entries.move_to_end(key)
                return entry[1]
        rows = codec.unpack_rows(blob)
        weight = 2 * codec.unpacked_size(blob) + 64 * len(rows)  # objects take about twice their bytes
        if remember and weight <= self.capacity_bytes // 10:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = (blob, rows, weight)
                    self.bytes += weight
                while self.bytes > self.capacity_bytes:
                    self.bytes -= self._entries.popitem(last=False)[1][2]
        return rows

    def forget(self, blob: bytes) -> None:
        with self._lock:
            entry = self._entries.get(id(blob))
            if entry is not None and entry[0] is blob:
                del self._entries[id(blob)]
                self.bytes -= entry[2]


decoded_chunks = _DecodedChunks(DECODED_BYTES)


def key_of(message_id: str) -> int:
    """The 32-bit key a message id is found by (CRC-32 of its UTF-8: the same in every process, so a
    checkpoint can keep it; ids with equal keys are told apart by their rows)."""
    return zlib.crc32(message_id.encode("utf-8", "surrogatepass"))


def message_of(row: list[Any], epoch: float) -> StoredMessage:
    """The message a log row holds ([id, role, content, timestamp, attachments, metadata, stored_at])."""
    message_id, role, content, timestamp, attachments, metadata, stored_at = row
    return StoredMessage(message_id, role, content, timestamp, epoch, attachments, metadata, stored_at)


def row_of(message: StoredMessage) -> list[Any]:
    """The log row of a message (what chunks and checkpoints hold)."""
    return [message.message_id, message.role, message.content, message.timestamp, message.attachments,
            message.metadata, message.stored_at]
