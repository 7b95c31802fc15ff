"""Checkpoints: a shard's memory written down at a log position, so an open loads it and replays only
the records after it instead of the whole log.

    checkpoint.ffc = b"FFCHCKP2" | part* | b"FFCHEND!" | parts:u32 | length:u64 | crc32(parts):u32
    part           = size:u32 | msgpack: the header {v, position: [segment, offset, write, salt],
                     users, order, counts, sessions}, then [user, session, record, table] per session

A checkpoint is derived data: the log stays the truth. It is written through the storage seam, part
after part into a temporary file, then fsync, rename and fsync of the directory, and only at a
position the log has on disk (`MessageLog.durable_position`), so a crash at any step leaves the
previous checkpoint or the new one, each covering a prefix of the log. A snapshot is taken under the
engine lock (`prepare`); a shard actor writes it after releasing the lock. At open, a checkpoint is
used only if its checksum and contents hold and the log still holds its position (same segment and
salt, a record boundary there, the frames before it in that segment intact); anything else is
noted, the whole log is replayed and the file removed. Compaction renumbers segments, so it retires
every checkpoint before it (the next one is due at once). Not used with an embedder (the vector
index is rebuilt by replay).

A shard writes one at a clean close, when at least CHECKPOINT_EVERY changes (or a quarter of its
messages) were applied since the last one and CHECKPOINT_INTERVAL_S have passed, and on `Checkpoint`.
"""

from __future__ import annotations

import gc
import os
import struct
import threading
import time
import zlib
from typing import Any, Callable, ClassVar, Iterator

import msgpack

from .errors import StorageFailure
from .filesystem import FileSystem, atomic_write
from .message_table import MessageTable
from .operations import ShardOperation, typed
from .recovery import Position
from .session_store import SessionState
from .shard_state import ShardState

FILE_NAME = "checkpoint.ffc"
MAGIC = b"FFCHCKP2"
PART = struct.Struct("<I")
TRAILER = struct.Struct("<8sIQI")
TRAILER_MAGIC = b"FFCHEND!"
VERSION = 2
CHECKPOINT_EVERY = 50_000
CHECKPOINT_INTERVAL_S = 5.0


@typed
class Checkpoint(ShardOperation):
    """Reply: {written, bytes, messages, ms} (written False when nothing changed since the last one or
    the log cannot name a durable position yet); runs after the batch's commit."""

    after_commit: ClassVar[bool] = True


# ---------------------------------------------------------------------- the file
def snapshot(position: Position, state: ShardState) -> list[Any]:
    """What a checkpoint of `state` (which holds exactly the log up to `position`) writes, as values
    later changes of `state` do not touch: the header, then [user, session, record, table] per
    session. Cheap (array copies; chunks are immutable and shared), so it is taken under the engine
    lock and the encoding and writing happen outside it."""
    header = {"v": VERSION, "position": list(position), "users": dict(state.users), "order": state.log_order(),
              "counts": [state.message_count, state.dead_messages, state.orphans], "sessions": len(state.sessions)}
    return [header] + [[user_id, session_id, dict(session.record), session.messages.dump()]
                       for (user_id, session_id), session in state.sessions.items()]


def encode(bodies: list[Any]) -> Iterator[bytes]:
    """The checkpoint file's bytes for a `snapshot`, in parts: the header part, then one part per
    session, then the trailer (part count, payload length, CRC-32 of every part). Written as they
    come, so no second copy of the state is ever held."""
    yield MAGIC
    crc = length = count = 0
    for body in bodies:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        part = PART.pack(len(packed)) + packed
        crc, length, count = zlib.crc32(part, crc), length + len(part), count + 1
        yield part
    yield TRAILER.pack(TRAILER_MAGIC, count, length, crc)


def decode(data: bytes, cache_bytes_max: int) -> tuple[Position, ShardState]:
    """The position and state a checkpoint file holds; raises ValueError saying why it cannot be used."""
    if len(data) < len(MAGIC) + TRAILER.size:
        raise ValueError("damaged (shorter than its header and trailer)")
    end, count, length, crc = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    payload = memoryview(data)[len(MAGIC):len(data) - TRAILER.size]
    if data[:len(MAGIC)] != MAGIC or end != TRAILER_MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
        raise ValueError("damaged (header, trailer or checksum)")
    try:
        parts = _parts(payload, count)
        header = next(parts)
        state = ShardState(cache_bytes_max, None)
        state.users = dict(header["users"])
        for user_id, session_id, record, table in parts:
            session = state.sessions[(user_id, session_id)] = SessionState(record)
            session.messages = MessageTable.load(table)
            state.user_sessions.setdefault(user_id, set()).add(session_id)
        if len(state.sessions) != header["sessions"]:
            raise ValueError(f"{len(state.sessions)} sessions of {header['sessions']}")
        state.message_count, state.dead_messages, state.orphans = (int(n) for n in header["counts"])
        state.adopt(header["order"])
        return Position(*(int(n) for n in header["position"])), state
    except (KeyError, TypeError, ValueError, StopIteration, struct.error, msgpack.UnpackException) as exc:
        raise ValueError(f"unreadable contents ({type(exc).__name__}: {exc})") from None


def _parts(payload: memoryview, count: int) -> Iterator[Any]:
    offset = 0
    for _ in range(count):
        (size,) = PART.unpack_from(payload, offset)
        yield msgpack.unpackb(payload[offset + PART.size:offset + PART.size + size], raw=False)
        offset += PART.size + size
    if offset != len(payload):
        raise ValueError("parts do not fill the payload")


class Checkpointer:
    """When a shard writes its checkpoints, and reading the one it opens from.

    Example:
        >>> checkpoints = Checkpointer(FileSystem(), "/tmp/shard-0000", time.monotonic)
        >>> loaded = checkpoints.read(cache_bytes_max=0)  # (position, state) or None, with `note` set
    """

    def __init__(self, fs: FileSystem, directory: str, monotonic: Callable[[], float]) -> None:
        self.fs = fs
        self.directory = directory
        self._monotonic = monotonic
        self.path = os.path.join(directory, FILE_NAME)
        self.position: Position | None = None  # of the last one written or loaded
        self.changes_at = 0  # the state's `changes` then
        self.next_at = 0.0  # monotonic time before which none is written on schedule
        self.note: str | None = None
        self.written = 0
        self.failures = 0
        self.last_failure: str | None = None
        self._lock = threading.Lock()  # one write at a time (close's and upkeep's may meet)
        self._taken = 0  # snapshots taken; a write of an older one than `_newest` is skipped
        self._newest = 0  # the newest snapshot written (or the retirement of all before it)

    def read(self, cache_bytes_max: int) -> tuple[Position, ShardState] | None:
        """The checkpoint on disk, decoded; None (and `note` says why) when there is none or it
        cannot be used, an I/O error included (the log is the truth: it is replayed whole). Removes
        temporary files a crash or a failed write left."""
        try:
            if not self.fs.exists(self.directory):
                return None
            for name in self.fs.listdir(self.directory):
                if name.startswith(FILE_NAME + ".") and name.endswith(".tmp"):
                    self.fs.unlink(os.path.join(self.directory, name))
            if not self.fs.exists(self.path):
                return None
            data = self.fs.read(self.path)
        except OSError as exc:
            self.note = f"checkpoint not used: cannot read it ({exc})"
            return None
        gc.disable()  # decoding makes many long-lived objects: collections in between only cost time
        try:
            return decode(data, cache_bytes_max)
        except ValueError as exc:
            self.note = f"checkpoint not used: {exc}"
            return None
        finally:
            gc.enable()

    def loaded(self, position: Position | None, unused: bool) -> None:
        """The open resumed after `position` (None: it replayed the whole log). A checkpoint the log no
        longer holds (`unused`) is removed: writes after this open could later put a record boundary
        at its offset again (if that fails, the next checkpoint, due at once, replaces it)."""
        self.position, self.changes_at = position, 0
        if not unused:
            return
        try:
            if self.fs.exists(self.path):
                self.fs.unlink(self.path)
                self.fs.fsync_dir(self.directory)
        except OSError as exc:  # the next checkpoint replaces it: make that one due at once
            self.changes_at = -(10 ** 12)
            self.note = f"{self.note or 'checkpoint not used'}; could not remove it ({exc})"

    def due(self, state: ShardState) -> bool:
        changed = state.changes - self.changes_at
        return (changed >= max(CHECKPOINT_EVERY, state.message_count // 4)
                and self._monotonic() >= self.next_at)

    def retire(self) -> None:
        """A compaction renumbered the log: the next checkpoint is due at once, and one whose
        snapshot was taken before is not written."""
        self.position = None
        self.changes_at = -(10 ** 12)
        with self._lock:
            self._newest = self._taken

    def prepare(self, position: Position | None, state: ShardState, epoch: int) -> Callable[[], dict[str, Any]]:
        """Take a snapshot of `state` at `position` (the log's durable end, which `state` holds exactly;
        None: the log cannot say) and return the call that writes it, which may run without the
        engine lock. It answers {written, bytes, messages, ms} and raises StorageFailure (the previous
        checkpoint stays)."""
        messages = state.message_count
        if position is None or position == self.position:
            return lambda: _not_written(messages)
        bodies = snapshot(position, state)
        previous, self.changes_at = self.changes_at, state.changes
        self.next_at = self._monotonic() + CHECKPOINT_INTERVAL_S
        with self._lock:
            self._taken += 1
            number = self._taken
        return lambda: self._write(number, position, bodies, messages, previous, epoch)

    def _write(self, number: int, position: Position, bodies: list[Any], messages: int, previous: int,
               epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        written = 0

        def counted() -> Iterator[bytes]:
            nonlocal written
            for part in encode(bodies):
                written += len(part)
                yield part
        with self._lock:
            if number <= self._newest:  # a newer snapshot was written, or a compaction retired this one
                return _not_written(messages)
            try:
                atomic_write(self.fs, self.path, counted(), f"{self.path}.{epoch}.tmp")
            except OSError as exc:
                self.failures += 1
                self.last_failure = str(exc)
                self.changes_at = min(self.changes_at, previous)  # still due, after the interval
                raise StorageFailure(f"Checkpoint of {self.directory} failed: {exc}") from None
            self._newest = number
            self.position = position
            self.written += 1
        return {"written": True, "bytes": written, "messages": messages,
                "ms": (time.perf_counter() - started) * 1000}


def _not_written(messages: int) -> dict[str, Any]:
    return {"written": False, "bytes": 0, "messages": messages, "ms": 0.0}
