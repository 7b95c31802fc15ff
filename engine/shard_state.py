"""The in-memory state of one shard and the one function that changes it: `apply(record)`.

Live writes and replay both go through `apply`, so memory after a restart is exactly memory
before it. Records are applied only after they were encoded (encode before apply).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator

from . import codec
from .search_index import SearchIndex
from .session_store import SessionState, StoredMessage
from .shard_cache import ShardCache
from .vector_index import Embedder, VectorIndex

RECOVERED_TITLE = "Recovered session"


class ShardState:
    """Users, sessions, messages, search and vector slices and the result cache of one shard."""

    def __init__(self, cache_bytes_max: int, embedder: Embedder | None) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, str], SessionState] = {}
        self.user_sessions: dict[str, set[str]] = {}
        self.search_index = SearchIndex()
        self.vectors = VectorIndex(embedder)
        self.cache = ShardCache(cache_bytes_max)
        self.message_count = 0
        self.dead_messages = 0  # deleted since the last compaction (their records still sit in the log)
        self.orphans = 0  # messages replayed for a session the log never created (older writers)

    def empty_copy(self) -> "ShardState":
        """A new, empty state with the same cache budget, embedder and cache counters (to replay
        the log into)."""
        fresh = ShardState(self.cache.capacity_bytes, self.vectors._embed)
        fresh.cache.hits, fresh.cache.misses = self.cache.hits, self.cache.misses
        return fresh

    # ------------------------------------------------------------------ apply (live and replay)
    def apply(self, record_type: int, body: dict[str, Any]) -> None:
        if record_type == codec.MESSAGES:
            self._apply_messages(body)
        elif record_type == codec.USER_PUT:
            self.users[body["u"]] = body["p"]
        elif record_type == codec.USER_DELETE:
            self.users.pop(body["u"], None)
            self.invalidate(body["u"])
        elif record_type == codec.SESSION_PUT:
            key = (body["u"], body["s"])
            state = self.sessions.get(key)
            if state is None:
                self.sessions[key] = SessionState(body["r"])
                self.user_sessions.setdefault(body["u"], set()).add(body["s"])
            else:
                state.record = body["r"]
            self.invalidate(body["u"], body["s"])
        elif record_type == codec.SESSION_DELETE:
            self.delete_session(body["u"], body["s"])
        elif record_type == codec.PURGE:
            self.purge(body["c"], body.get("u"))

    def _apply_messages(self, body: dict[str, Any]) -> None:
        user_id, session_id = body["u"], body["s"]
        state = self.sessions.get((user_id, session_id))
        if state is None:
            # Only an older writer could log messages of a session it never recorded: keep them
            # reachable under a recovered session rather than refuse to open the shard.
            state = self.sessions[(user_id, session_id)] = SessionState({
                "session_id": session_id, "user_id": user_id, "title": RECOVERED_TITLE, "session_type": "chat",
                "created_at": body["t"], "updated_at": body["t"], "metadata": {}})
            self.user_sessions.setdefault(user_id, set()).add(session_id)
            self.orphans += len(body["m"])
        last_text, epoch = "", 0.0
        for message_id, role, content, timestamp, attachments, metadata, stored_at in body["m"]:
            if timestamp != last_text:  # a batch usually shares one timestamp: parse it once
                last_text, epoch = timestamp, datetime.fromisoformat(timestamp).timestamp()
            state.append(StoredMessage(message_id, role, content, timestamp, epoch, attachments, metadata, stored_at))
            self.search_index.add(user_id, session_id, message_id, content, role, epoch)
            self.vectors.add(user_id, session_id, message_id, content, role, epoch)
        self.message_count += len(body["m"])
        state.record["updated_at"] = body["t"]
        self.invalidate(user_id, session_id)

    def delete_session(self, user_id: str, session_id: str) -> int:
        state = self.sessions.pop((user_id, session_id), None)
        if state is None:
            return 0
        self.search_index.remove_session(user_id, session_id, {m.message_id: m.content for m in state.messages})
        for message in state.messages:
            self.vectors.remove(user_id, session_id, message.message_id)
        owned = self.user_sessions.get(user_id)
        if owned is not None:
            owned.discard(session_id)
            if not owned:
                del self.user_sessions[user_id]
                self.search_index.drop_user(user_id)
                self.vectors.drop_user(user_id)
        self.message_count -= len(state.messages)
        self.dead_messages += len(state.messages) + 1
        self.invalidate(user_id, session_id)
        self._compact_index(user_id)
        return len(state.messages)

    def purge(self, cutoff: float, only_user: str | None) -> tuple[int, int]:
        """Delete messages older than `cutoff` and sessions left empty that were created before it."""
        messages_deleted = sessions_deleted = 0
        for (user_id, session_id), state in list(self.sessions.items()):
            if only_user is not None and user_id != only_user:
                continue
            old = [m for m in state.messages if m.timestamp_epoch < cutoff]
            if old:
                for message in old:
                    self.search_index.remove_message(user_id, session_id, message.message_id, message.content)
                    self.vectors.remove(user_id, session_id, message.message_id)
                state.keep_only([m for m in state.messages if m.timestamp_epoch >= cutoff])
                messages_deleted += len(old)
                self.message_count -= len(old)
                self.dead_messages += len(old)
                self.invalidate(user_id, session_id)
            created = datetime.fromisoformat(state.record["created_at"]).timestamp()
            if not state.messages and created < cutoff:
                self.delete_session(user_id, session_id)
                sessions_deleted += 1
            self._compact_index(user_id)
        return messages_deleted, sessions_deleted

    def _compact_index(self, user_id: str) -> None:
        if self.search_index.needs_compaction(user_id):
            self.search_index.rebuild_user(user_id, (
                (session_id, m.message_id, m.content, m.role, m.timestamp_epoch)
                for session_id in self.user_sessions.get(user_id, ())
                for m in self.sessions[(user_id, session_id)].messages))

    def invalidate(self, user_id: str, session_id: str | None = None) -> None:
        if session_id is not None:
            self.cache.invalidate(("s", user_id, session_id))
        self.cache.invalidate(("u", user_id))

    # ------------------------------------------------------------------ snapshot (compaction)
    def snapshot_records(self, compress: bool) -> Iterator[codec.Record]:
        """The live state as records; message rows are cut into parts of about PART_TARGET_BYTES,
        so every record stays under the reader's bound whatever the message sizes."""
        for user_id, profile in self.users.items():
            yield from codec.pack(codec.USER_PUT, {"u": user_id, "p": profile})
        for (user_id, session_id), state in self.sessions.items():
            record = dict(state.record)
            yield from codec.pack(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
            rows: list[list[Any]] = []
            size = 0
            for m in state.messages:
                rows.append([m.message_id, m.role, m.content, m.timestamp, m.attachments, m.metadata, m.stored_at])
                size += (len(m.content) + (len(str(m.metadata)) if m.metadata else 0)
                         + (sum(map(len, m.attachments)) if m.attachments else 0)) * 4 + 512
                if size >= codec.PART_TARGET_BYTES:
                    yield from codec.pack(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows,
                                                           "t": record["updated_at"]}, compress)
                    rows, size = [], 0
            if rows:
                yield from codec.pack(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows,
                                                       "t": record["updated_at"]}, compress)
