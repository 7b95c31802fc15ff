"""The messages of one session, held compactly: a few fixed-size columns per message in arrays, and
the bodies in compressed chunks; only the newest messages (the tail) are held as objects.

Per message in RAM: its id's key (4 bytes), a sorted copy of the keys with positions (8), its
time (8), its role (1), and its compressed row (about the size the log holds). Reading a message
of a sealed chunk decompresses the chunk (a small LRU keeps recently read chunks decoded), so a
history page costs one or two chunk decodes; the tail answers without any. Message ids are found
through the key columns and confirmed against the decoded row, so a hash collision is never a
wrong answer.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Any, Iterable, Iterator, overload

import numpy as np

from . import codec
from .message_rows import (DECODED_BYTES, ROLE_NAMES, ROLES, StoredMessage, copy_json,
                           decoded_chunks, key_of, message_of, row_of)

__all__ = ["CHUNK_BYTES", "CHUNK_MESSAGES", "DECODED_BYTES", "MessageTable", "REST_MAX", "StoredMessage",
           "copy_json", "decoded_chunks", "key_of"]

CHUNK_MESSAGES = 64  # a tail this long is sealed into a chunk
REST_MAX = 4096  # keys not yet merged into the sorted copy (a lookup scans them)
CHUNK_BYTES = 256 * 1024  # a tail whose contents reach this is sealed too (large messages: small chunks)
_ENTRY_BYTES = 4 + 8 + 8 + 1  # key, sorted key + position, epoch, role


class MessageTable:
    """The ordered messages of one session (indexable, sliceable, iterable as StoredMessage).

    Example:
        >>> table = MessageTable()
        >>> table.extend([["m1", "user", "hi", "2026-01-01T00:00:00+00:00", None, None, "x"]], [0.0])
        >>> table.position_of("m1"), table[0].content
        (0, 'hi')
    """

    __slots__ = ("_chunks", "_starts", "_tail", "_keys", "_epochs", "_roles", "_sorted", "_sorted_at",
                 "_sealed", "content_bytes", "_tail_bytes", "_tail_content", "_chunk_bytes")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._starts = array("q")  # position of each chunk's first message
        self._tail: list[StoredMessage] = []
        self._keys = array("I")
        self._epochs = array("d")
        self._roles = bytearray()
        # Keys of positions [0, _sorted_at) sorted, with their positions: ids are found by
        # bisection there and by a scan of the (short) rest.
        self._sorted: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.uint32), np.empty(0, np.int32))
        self._sorted_at = 0
        self._sealed = 0
        self.content_bytes = 0
        self._tail_bytes = 0
        self._tail_content = 0  # characters of the tail's contents (a chunk is sealed at CHUNK_BYTES)
        self._chunk_bytes = 0

    # ------------------------------------------------------------------ size and columns
    def __len__(self) -> int:
        return len(self._epochs)

    @property
    def sealed(self) -> int:
        """How many messages are in chunks (the tail holds the rest)."""
        return self._sealed

    def epochs(self) -> np.ndarray:
        """Every message's time (epoch seconds), in order: a read-only view."""
        view = np.frombuffer(self._epochs, dtype=np.float64) if len(self._epochs) else np.empty(0)
        view.flags.writeable = False
        return view

    def roles(self) -> list[str]:
        return [ROLE_NAMES[code] for code in self._roles]

    def ram_bytes(self) -> int:
        """Bytes this table holds: columns, chunks (with their object headers) and the tail's objects."""
        return (len(self) * _ENTRY_BYTES + self._chunk_bytes + len(self._chunks) * 49 + self._tail_bytes
                + 200)

    # ------------------------------------------------------------------ appends
    def extend(self, rows: list[list[Any]], epochs: list[float]) -> None:
        """Append log rows ([id, role, content, timestamp, attachments, metadata, stored_at]) with their
        times; full chunks are sealed straight from the rows."""
        for row, epoch in zip(rows, epochs):
            message_id, role, content = row[0], row[1], row[2]
            self._keys.append(key_of(message_id))
            self._epochs.append(epoch)
            self._roles.append(ROLES[role])
            self.content_bytes += len(content) if content.isascii() else len(content.encode("utf-8"))
        start, count, size = 0, len(self._tail), self._tail_content
        for index, row in enumerate(rows):  # a chunk ends at CHUNK_MESSAGES rows or CHUNK_BYTES of content
            count, size = count + 1, size + len(row[2])
            if count >= CHUNK_MESSAGES or size >= CHUNK_BYTES:
                self._seal([row_of(m) for m in self._tail] + rows[start:index + 1])
                start, count, size = index + 1, 0, 0
        for row, epoch in zip(rows[start:], epochs[start:]):
            message = message_of(row, epoch)
            self._tail.append(message)
            self._tail_bytes += message.ram_bytes()
            self._tail_content += len(row[2])
        self._maybe_sort()

    def seal(self) -> None:
        """Compress the tail into a chunk (upkeep does this for sessions that went quiet)."""
        if self._tail:
            self._seal([row_of(m) for m in self._tail])

    def _seal(self, rows: list[list[Any]]) -> None:
        """Seal the tail followed by `rows` (the tail's rows come first in `rows`)."""
        blob = codec.pack_rows(rows)
        self._starts.append(self._sealed)
        self._chunks.append(blob)
        self._sealed += len(rows)
        self._chunk_bytes += len(blob)
        self._tail = []
        self._tail_bytes = self._tail_content = 0

    # ------------------------------------------------------------------ reads
    @overload
    def __getitem__(self, key: int) -> StoredMessage: ...

    @overload
    def __getitem__(self, key: slice) -> list[StoredMessage]: ...

    def __getitem__(self, key: int | slice) -> StoredMessage | list[StoredMessage]:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            assert step == 1, "tables are read in order"
            return self.slice(start, stop)
        position = key + len(self) if key < 0 else key
        if not 0 <= position < len(self):
            raise IndexError(key)
        if position >= self._sealed:
            return self._tail[position - self._sealed]
        chunk = bisect_right(self._starts, position) - 1
        row = decoded_chunks.rows(self._chunks[chunk])[position - self._starts[chunk]]
        return message_of(row, self._epochs[position])

    def slice(self, start: int, stop: int, remember: bool = True) -> list[StoredMessage]:
        """Messages [start, stop) in order; `remember=False` for one-off scans (they do not push
        recently read chunks out of the decoded LRU)."""
        stop = min(stop, len(self))
        out: list[StoredMessage] = []
        position = max(0, start)
        while position < min(stop, self._sealed):
            chunk = bisect_right(self._starts, position) - 1
            first = self._starts[chunk]
            rows = decoded_chunks.rows(self._chunks[chunk], remember)
            end = min(stop, first + len(rows))
            if end <= position:  # chunk bounds that disagree with the chunks: fail, never loop
                raise AssertionError(f"message table: chunk {chunk} ends at {end}, before {position}")
            out.extend(message_of(row, epoch) for row, epoch in zip(rows[position - first:end - first],
                                                                  self._epochs[position:end]))
            position = end
        if position < stop:
            out.extend(self._tail[position - self._sealed:stop - self._sealed])
        return out

    def __iter__(self) -> Iterator[StoredMessage]:
        for start in range(0, len(self), 4 * CHUNK_MESSAGES):
            yield from self.slice(start, start + 4 * CHUNK_MESSAGES, remember=False)

    def raw_rows(self) -> Iterator[list[Any]]:
        """Every message as its log row, in order (compaction re-packs these)."""
        for blob in self._chunks:
            yield from decoded_chunks.rows(blob, remember=False)
        for message in self._tail:
            yield row_of(message)

    # ------------------------------------------------------------------ finding ids
    def position_of(self, message_id: str) -> int | None:
        """The position of the message with this id, or None."""
        for position in self._candidates(key_of(message_id)):
            if self._id_at(position) == message_id:
                return position
        return None

    def positions_of(self, message_ids: Iterable[str]) -> dict[str, int]:
        """The positions of those of `message_ids` that are in the table (one vectorised probe for
        the whole batch; only probable hits are confirmed one by one)."""
        ids = list(message_ids)
        if not ids or not len(self):
            return {}
        wanted = np.fromiter((key_of(message_id) for message_id in ids), np.uint32, len(ids))
        keys, _ = self._sorted
        hit = np.zeros(len(ids), bool)
        if len(keys):
            at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
            hit |= keys[at] == wanted
        rest = np.frombuffer(self._keys, np.uint32)[self._sorted_at:]
        if len(rest) and len(ids) > 16:
            hit |= np.isin(wanted, rest)
        elif len(rest):
            for number, key in enumerate(wanted.tolist()):
                hit[number] |= bool((rest == key).any())
        found = {}
        for index in np.flatnonzero(hit):
            position = self.position_of(ids[index])
            if position is not None:
                found[ids[index]] = position
        return found

    def _candidates(self, key: int) -> list[int]:
        keys, positions = self._sorted
        out: list[int] = []
        if len(keys):
            left = int(np.searchsorted(keys, key))
            right = int(np.searchsorted(keys, key, side="right"))
            out.extend(int(p) for p in positions[left:right])
        if self._sorted_at < len(self):
            rest = np.frombuffer(self._keys, np.uint32)[self._sorted_at:]
            out.extend(int(p) + self._sorted_at for p in np.flatnonzero(rest == key))
        return out

    def _id_at(self, position: int) -> str:
        if position >= self._sealed:
            return self._tail[position - self._sealed].message_id
        chunk = bisect_right(self._starts, position) - 1
        message_id: str = decoded_chunks.rows(self._chunks[chunk])[position - self._starts[chunk]][0]
        return message_id

    def _maybe_sort(self) -> None:
        """Merge the unsorted rest into the sorted keys once it is longer than REST_MAX (so a lookup
        scans at most that many; a merge copies the sorted arrays once per REST_MAX appends)."""
        if len(self) - self._sorted_at <= REST_MAX:
            return
        rest = np.frombuffer(self._keys, np.uint32)[self._sorted_at:]
        order = np.argsort(rest, kind="stable")
        new_keys, new_positions = rest[order], (order + self._sorted_at).astype(np.int32)
        del rest  # a view of the array would stop it from growing
        keys, positions = self._sorted
        at = np.searchsorted(keys, new_keys, side="right")
        self._sorted = (np.insert(keys, at, new_keys), np.insert(positions, at, new_positions))
        self._sorted_at = len(self)

    # ------------------------------------------------------------------ removal
    def keep_where(self, keep: np.ndarray) -> list[StoredMessage]:
        """Keep the messages where `keep` is True (in order); returns the ones removed. Chunks that
        keep every row stay as they are; only chunks that lose rows are decoded and re-packed."""
        keep = np.asarray(keep, dtype=bool)
        removed: list[StoredMessage] = []
        chunks: list[bytes] = []
        starts = array("q")
        sealed = 0
        bounds = list(self._starts) + [self._sealed]
        for number, blob in enumerate(self._chunks):
            first, end = bounds[number], bounds[number + 1]
            kept = keep[first:end]
            if kept.all():
                chunks.append(blob)
            else:
                rows = decoded_chunks.rows(blob, remember=False)
                decoded_chunks.forget(blob)
                removed.extend(message_of(row, self._epochs[first + offset])
                               for offset, row in enumerate(rows) if not kept[offset])
                left = [row for offset, row in enumerate(rows) if kept[offset]]
                if not left:
                    continue
                chunks.append(codec.pack_rows(left))
            starts.append(sealed)
            sealed += int(kept.sum())
        tail = [message for offset, message in enumerate(self._tail) if keep[self._sealed + offset]]
        removed.extend(message for offset, message in enumerate(self._tail) if not keep[self._sealed + offset])
        self._keep_columns(keep, chunks, starts, sealed, tail, removed)
        return removed

    def _keep_columns(self, keep: np.ndarray, chunks: list[bytes], starts: array[int], sealed: int,
                      tail: list[StoredMessage], removed: list[StoredMessage]) -> None:
        """Take the kept rows' columns, the new chunks and tail; the sorted keys are merged anew."""
        columns = []
        for values, kind in ((self._keys, np.uint32), (self._epochs, np.float64)):
            columns.append(np.frombuffer(values, kind)[keep].tobytes() if len(values) else b"")
        roles = bytes(np.frombuffer(bytes(self._roles), np.uint8)[keep]) if len(self._roles) else b""
        self._keys, self._epochs = array("I"), array("d")
        self._keys.frombytes(columns[0])
        self._epochs.frombytes(columns[1])
        self._roles = bytearray(roles)
        self._chunks, self._starts, self._sealed, self._tail = chunks, starts, sealed, tail
        self._recount()
        self.content_bytes -= sum(len(m.content) if m.content.isascii() else len(m.content.encode("utf-8"))
                                  for m in removed)
        self._sorted = (np.empty(0, np.uint32), np.empty(0, np.int32))
        self._sorted_at = 0
        self._maybe_sort()

    # ------------------------------------------------------------------ checkpoints
    def dump(self) -> list[Any]:
        """The table as plain values (bytes, lists, ints) for a checkpoint, none of which later changes
        of the table touch (a snapshot may be written after them): `load` rebuilds it exactly."""
        keys, positions = self._sorted
        # A copy of the chunk list: later seals append to it (the chunks themselves never change).
        return [list(self._chunks), self._starts.tobytes(), self._keys.tobytes(), self._epochs.tobytes(),
                bytes(self._roles), keys.tobytes(), positions.tobytes(), self._sorted_at,
                [row_of(message) for message in self._tail], self.content_bytes, self._sealed]

    @classmethod
    def load(cls, parts: list[Any]) -> "MessageTable":
        """The table `dump` described (raises ValueError, TypeError, KeyError if `parts` do not
        describe one: a checkpoint that passed its checksum but not this is not used)."""
        chunks, starts, keys, epochs, roles, sorted_keys, sorted_positions, sorted_at, tail, content, sealed = parts
        table = cls()
        table._chunks = list(chunks)
        table._starts.frombytes(starts)
        table._keys.frombytes(keys)
        table._epochs.frombytes(epochs)
        table._roles = bytearray(roles)
        table._sorted = (np.frombuffer(sorted_keys, np.uint32).copy(), np.frombuffer(sorted_positions, np.int32).copy())
        table._sorted_at = int(sorted_at)
        table._sealed = int(sealed)
        count = len(table._keys)
        if not (len(table._epochs) == len(table._roles) == count and len(table._starts) == len(table._chunks)
                and len(table._sorted[0]) == len(table._sorted[1]) == table._sorted_at <= count
                and table._sealed + len(tail) == count and (table._starts[-1] < table._sealed if table._chunks
                                                             else table._sealed == 0)
                and max(table._roles, default=0) < len(ROLE_NAMES)):
            raise ValueError("inconsistent message table")
        table._tail = [message_of(row, table._epochs[table._sealed + offset]) for offset, row in enumerate(tail)]
        table._recount()
        table.content_bytes = int(content)
        return table

    def _recount(self) -> None:
        """The byte counts of the chunks and the tail, after they were replaced whole."""
        self._chunk_bytes = sum(len(blob) for blob in self._chunks)
        self._tail_bytes = sum(message.ram_bytes() for message in self._tail)
        self._tail_content = sum(len(message.content) for message in self._tail)
