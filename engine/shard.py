"""One shard: its log, users, sessions, messages, search slice and result cache.

Every write builds a log record, applies it to memory through `_apply` (the same code replay
uses) and queues its frame; `commit()` writes the queued frames as one group commit. `execute()`
runs a batch of operations and commits once, so one actor call carries many messages.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from . import codec
from .config import EngineConfig
from .errors import EngineError, InvalidInput, SessionNotFound
from .message_log import MessageLog
from .models import ROLES, new_message_id, validate_id
from .search_index import SearchIndex
from .shard_cache import ShardCache
from .vector_index import VectorIndex, load_embedder
from .session_store import (SessionState, StoredMessage, analytics_partial, history_page, page_bytes)

_DEFAULT_TITLES = {"chat": "New Chat", "panel": "Panel Session", "debate": "Debate Session",
                   "problem_solving": "Problem Solving Session"}
_RESERVED_PROFILE_KEYS = ("user_id", "created_at", "updated_at")
COMPACT_MIN_DEAD = 10_000  # compact once deleted messages exceed this and the live count


def default_title(session_type: str) -> str:
    return _DEFAULT_TITLES.get(session_type, "New Session")


class Shard:
    """Domain state of shard `index` of a storage path.

    Example:
        >>> shard = Shard(EngineConfig(storage_path="/tmp/p", shard_count=1), 0)
        >>> shard.open()
        >>> shard.create_session("alice", "s1")
        True
        >>> shard.append("alice", "s1", [{"role": "user", "content": "hi"}])["count"]
        1
        >>> shard.commit(); shard.close()
    """

    def __init__(self, config: EngineConfig, index: int, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.index = index
        self.directory = os.path.join(config.storage_path, f"shard-{index:04d}")
        self._clock = clock
        self.log = MessageLog(self.directory, config.durability, config.segment_bytes_max,
                              config.compress_sealed_segments, config.flush_interval_s)
        self.users: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, str], SessionState] = {}
        self.user_sessions: dict[str, set[str]] = {}
        self.search_index = SearchIndex()
        self.vectors = VectorIndex(load_embedder(config.embedder) if config.embedder else None)
        self.cache = ShardCache(config.cache_bytes_max)
        self.message_count = 0
        self._pending: list[bytes] = []
        self._batch_now: str | None = None
        self.dead_messages = 0  # deleted since the last compaction (their records still sit in the log)
        self.compactions = 0
        self._compress_records = False
        self.opened = False

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> dict[str, Any]:
        """Replay the log into memory; returns the recovery report."""
        for record_type, body in self.log.open():
            self._apply(record_type, body)
        self.opened = True
        return self.log.report.as_dict()

    def commit(self) -> None:
        """Write queued records as one batch (group commit); the ack point of every write."""
        if self._pending:
            frames, self._pending = self._pending, []
            self.log.append_batch(frames)

    def execute(self, operations: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[tuple[bool, Any]]:
        """Run operations in order, commit once, return [(ok, result or EngineError)].

        A commit failure raises (the caller must treat every write of the batch as failed and
        restart the shard so memory matches the log again).
        """
        results: list[tuple[bool, Any]] = []
        self._batch_now = None  # one acknowledgement time per batch (they share one commit)
        for name, args, kwargs in operations:
            if name.startswith("_") or name not in _OPERATIONS:
                results.append((False, InvalidInput(f"Unknown shard operation '{name}'", "INVALID_ARGUMENT")))
                continue
            try:
                results.append((True, getattr(self, name)(*args, **kwargs)))
            except EngineError as exc:
                results.append((False, exc))
        self._batch_now = None
        self.commit()
        if self.dead_messages > max(COMPACT_MIN_DEAD, self.message_count):
            self.compact()
        return results

    def close(self) -> None:
        self.commit()
        self.log.close()
        self.opened = False

    def now_iso(self) -> str:
        if self._batch_now is None:
            self._batch_now = datetime.fromtimestamp(self._clock(), timezone.utc).isoformat()
        return self._batch_now

    def _write(self, record_type: int, body: dict[str, Any]) -> None:
        self._apply(record_type, body)
        self._pending.append(codec.encode(record_type, body, self._compress_records))

    def set_record_compression(self, enabled: bool) -> None:
        self._compress_records = enabled

    # ------------------------------------------------------------------ apply (live and replay)
    def _apply(self, record_type: int, body: dict[str, Any]) -> None:
        if record_type == codec.MESSAGES:
            self._apply_messages(body)
        elif record_type == codec.USER_PUT:
            self.users[body["u"]] = body["p"]
        elif record_type == codec.USER_DELETE:
            self.users.pop(body["u"], None)
        elif record_type == codec.SESSION_PUT:
            key = (body["u"], body["s"])
            state = self.sessions.get(key)
            if state is None:
                self.sessions[key] = SessionState(body["r"])
                self.user_sessions.setdefault(body["u"], set()).add(body["s"])
            else:
                state.record = body["r"]
        elif record_type == codec.SESSION_DELETE:
            self._apply_session_delete(body["u"], body["s"])
        elif record_type == codec.PURGE:
            self._apply_purge(body["c"], body.get("u"))

    def _apply_messages(self, body: dict[str, Any]) -> None:
        user_id, session_id = body["u"], body["s"]
        state = self.sessions[(user_id, session_id)]
        last_text, epoch = "", 0.0
        for message_id, role, content, timestamp, attachments, metadata, stored_at in body["m"]:
            if timestamp != last_text:  # a batch usually shares one timestamp: parse it once
                last_text, epoch = timestamp, datetime.fromisoformat(timestamp).timestamp()
            state.append(StoredMessage(message_id, role, content, timestamp, epoch, attachments, metadata, stored_at))
            self.search_index.add(user_id, session_id, message_id, content, role, epoch)
            self.vectors.add(user_id, session_id, message_id, content, role, epoch)
        self.message_count += len(body["m"])
        state.record["updated_at"] = body["t"]
        self._invalidate(user_id, session_id)

    def _apply_session_delete(self, user_id: str, session_id: str) -> int:
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
        self._invalidate(user_id, session_id)
        self._maybe_compact(user_id)
        return len(state.messages)

    def _apply_purge(self, cutoff: float, only_user: str | None) -> tuple[int, int]:
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
                self._invalidate(user_id, session_id)
            created = datetime.fromisoformat(state.record["created_at"]).timestamp()
            if not state.messages and created < cutoff:
                self._apply_session_delete(user_id, session_id)
                sessions_deleted += 1
            self._maybe_compact(user_id)
        return messages_deleted, sessions_deleted

    def _maybe_compact(self, user_id: str) -> None:
        if self.search_index.needs_compaction(user_id):
            self.search_index.rebuild_user(user_id, (
                (session_id, m.message_id, m.content, m.role, m.timestamp_epoch)
                for session_id in self.user_sessions.get(user_id, ())
                for m in self.sessions[(user_id, session_id)].messages))

    def _invalidate(self, user_id: str, session_id: str | None = None) -> None:
        if session_id is not None:
            self.cache.invalidate(("s", user_id, session_id))
        self.cache.invalidate(("u", user_id))

    # ------------------------------------------------------------------ users (on the user's shard)
    def create_user(self, user_id: str, profile: dict[str, Any] | None = None) -> bool:
        validate_id(user_id, "user")
        if user_id in self.users:
            return False
        now = self.now_iso()
        record = {key: value for key, value in (profile or {}).items() if key not in _RESERVED_PROFILE_KEYS}
        record = {"user_id": user_id, "username": record.pop("username", ""), "created_at": now, "updated_at": now,
                  "preferences": record.pop("preferences", {}) or {}, "metadata": record.pop("metadata", {}) or {},
                  **record}
        self._write(codec.USER_PUT, {"u": user_id, "p": record})
        return True

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        profile = self.users.get(user_id)
        return dict(profile) if profile is not None else None

    def user_exists(self, user_id: str) -> bool:
        return user_id in self.users

    def update_user(self, user_id: str, updates: dict[str, Any]) -> bool:
        profile = self.users.get(user_id)
        if profile is None:
            return False
        record = dict(profile)
        for key, value in updates.items():
            if key in _RESERVED_PROFILE_KEYS:
                continue
            if key in ("preferences", "metadata") and isinstance(value, dict):
                record[key] = {**(record.get(key) or {}), **value}
            else:
                record[key] = value
        record["updated_at"] = self.now_iso()
        self._write(codec.USER_PUT, {"u": user_id, "p": record})
        return True

    def delete_profile(self, user_id: str) -> bool:
        if user_id not in self.users:
            return False
        self._write(codec.USER_DELETE, {"u": user_id})
        self._invalidate(user_id)
        return True

    def list_users(self) -> list[str]:
        return sorted(self.users)

    # ------------------------------------------------------------------ sessions
    def _session(self, user_id: str, session_id: str) -> SessionState:
        state = self.sessions.get((user_id, session_id))
        if state is None:
            raise SessionNotFound(f"Session '{session_id}' not found for user '{user_id}'")
        return state

    def create_session(self, user_id: str, session_id: str, title: str | None = None, session_type: str = "chat",
                       metadata: dict[str, Any] | None = None, created_at: str | None = None,
                       updated_at: str | None = None) -> bool:
        """Create a session; False if (user_id, session_id) exists."""
        validate_id(user_id, "user")
        validate_id(session_id, "session")
        if (user_id, session_id) in self.sessions:
            return False
        now = self.now_iso()
        record = {"session_id": session_id, "user_id": user_id,
                  "title": title if title is not None else default_title(session_type),
                  "session_type": session_type, "created_at": created_at or now,
                  "updated_at": updated_at or created_at or now, "metadata": metadata or {}}
        self._write(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
        self._invalidate(user_id)
        return True

    def get_session(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        state = self.sessions.get((user_id, session_id))
        return state.to_dict() if state is not None else None

    def update_session(self, user_id: str, session_id: str, updates: dict[str, Any]) -> bool:
        state = self.sessions.get((user_id, session_id))
        if state is None:
            return False
        record = dict(state.record)
        if "title" in updates and isinstance(updates["title"], str):
            record["title"] = updates["title"]
        if "session_name" in updates and isinstance(updates["session_name"], str):
            record["title"] = updates["session_name"]
        if isinstance(updates.get("metadata"), dict):
            record["metadata"] = {**(record.get("metadata") or {}), **updates["metadata"]}
        record["updated_at"] = updates["updated_at"] if isinstance(updates.get("updated_at"), str) else self.now_iso()
        self._write(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
        self._invalidate(user_id, session_id)
        return True

    def delete_session(self, user_id: str, session_id: str) -> int:
        """Delete a session and its messages; returns messages deleted."""
        state = self._session(user_id, session_id)
        count = len(state.messages)
        self._write(codec.SESSION_DELETE, {"u": user_id, "s": session_id})
        return count

    def list_user_sessions(self, user_id: str) -> tuple[list[dict[str, Any]], bool]:
        """This shard's sessions of a user (cached); returns (sessions, cache_hit)."""
        key = ("l", user_id)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        sessions = [self.sessions[(user_id, s)].to_dict() for s in self.user_sessions.get(user_id, ())]
        self.cache.put(key, sessions, 128 + 400 * len(sessions), [("u", user_id)])
        return sessions, False

    def session_stats(self, user_id: str, session_id: str) -> dict[str, Any]:
        state = self._session(user_id, session_id)
        count = len(state.messages)
        return {"message_count": count, "total_size_bytes": state.content_bytes,
                "average_message_size": state.content_bytes / count if count else 0.0,
                "created_at": state.record["created_at"], "updated_at": state.record["updated_at"],
                "last_activity": state.messages[-1].timestamp if count else state.record["updated_at"]}

    def delete_user_data(self, user_id: str) -> dict[str, int]:
        """Delete the user's sessions on this shard and the profile if it lives here."""
        sessions_deleted = messages_deleted = 0
        for session_id in sorted(self.user_sessions.get(user_id, ())):
            messages_deleted += self.delete_session(user_id, session_id)
            sessions_deleted += 1
        profile_deleted = self.delete_profile(user_id)
        return {"sessions_deleted": sessions_deleted, "messages_deleted": messages_deleted,
                "profile_deleted": int(profile_deleted)}

    def purge(self, cutoff_epoch: float, user_id: str | None = None) -> dict[str, int]:
        """Delete messages older than the cutoff (and sessions left empty created before it)."""
        body: dict[str, Any] = {"c": cutoff_epoch}
        if user_id is not None:
            body["u"] = user_id
        messages_deleted, sessions_deleted = self._apply_purge(cutoff_epoch, user_id)
        if messages_deleted or sessions_deleted:
            self._pending.append(codec.encode(codec.PURGE, body))
        return {"messages_deleted": messages_deleted, "sessions_deleted": sessions_deleted}

    # ------------------------------------------------------------------ messages
    def append(self, user_id: str, session_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Append validated messages contiguously; idempotent on message_id.

        Returns {message_ids, stored_at, count (new), duplicates, records, session_bytes}.
        Raises SessionNotFound, InvalidInput (id reused with other content, repeated in the batch).
        """
        state = self._session(user_id, session_id)
        if len(messages) > self.config.max_batch_messages:
            raise InvalidInput(f"Batch of {len(messages)} messages is above {self.config.max_batch_messages}")
        now = self.now_iso()
        seen: set[str] = set()
        rows: list[list[Any]] = []
        ids: list[str] = []
        records: list[dict[str, Any]] = []
        duplicates = 0
        for position, message in enumerate(messages):
            message_id = message.get("message_id") or new_message_id()
            if message_id in seen:
                raise InvalidInput(f"messages[{position}]: message_id '{message_id}' repeated in the batch")
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise InvalidInput(f"messages[{position}]: invalid message", "INVALID_MESSAGE")
            seen.add(message_id)
            ids.append(message_id)
            existing_position = state.positions.get(message_id)
            if existing_position is not None:
                existing = state.messages[existing_position]
                if existing.role != message["role"] or existing.content != message["content"]:
                    raise InvalidInput(f"message_id '{message_id}' already used with different content")
                duplicates += 1
                records.append({**existing.to_dict(), "stored_at": existing.stored_at, "duplicate": True})
                continue
            timestamp = message.get("timestamp") or now
            row = [message_id, message["role"], message["content"], timestamp,
                   message.get("attachments") or None, message.get("metadata") or None, now]
            rows.append(row)
            records.append({"message_id": message_id, "timestamp": timestamp, "stored_at": now, "duplicate": False})
        if rows:
            self._write(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows, "t": now})
        # Per-message records matter to single stores (the API returns one); a batch answer stays small.
        return {"message_ids": ids, "stored_at": now, "count": len(rows), "duplicates": duplicates,
                "records": records if len(messages) == 1 else [], "session_bytes": state.content_bytes}

    def history(self, user_id: str, session_id: str, limit: int, offset: int = 0, before: str | None = None,
                after: str | None = None, latest: bool = False) -> tuple[dict[str, Any], bool]:
        """A history page (cached per exact request); returns (page, cache_hit)."""
        state = self._session(user_id, session_id)
        key = ("h", user_id, session_id, limit, offset, before, after, latest)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        page = history_page(state, limit, offset, before, after, latest)
        self.cache.put(key, page, page_bytes(page), [("s", user_id, session_id)])
        return page, False

    def read_range(self, user_id: str, session_id: str, start: int, count: int, end: int | None = None) -> dict[str, Any]:
        """Messages [start, min(start+count, end)) uncached, for streaming and export."""
        state = self._session(user_id, session_id)
        stop = min(start + count, len(state.messages) if end is None else end)
        return {"messages": [m.to_dict() for m in state.messages[start:stop]], "total_count": len(state.messages)}

    def export_session(self, user_id: str, session_id: str) -> dict[str, Any]:
        state = self._session(user_id, session_id)
        return {"session": state.to_dict(), "messages": [m.to_dict() for m in state.messages]}

    # ------------------------------------------------------------------ user-level reads (fanned out by the router)
    def search_stats(self, user_id: str, terms: list[str]) -> dict[str, Any]:
        return self.search_index.stats(user_id, terms)

    def search(self, user_id: str, terms: list[str], global_stats: dict[str, Any], limit: int,
               filters: dict[str, Any] | None = None, sort: str = "relevance",
               include_metadata: bool = True) -> tuple[dict[str, Any], bool]:
        """Top `limit` matches of this shard with global BM25 statistics; returns (result, cache_hit)."""
        filters = filters or {}
        key = ("q", user_id, tuple(terms), global_stats["doc_count"], global_stats["total_length"],
               tuple(sorted(global_stats["doc_freq"].items())), limit, sort, include_metadata,
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in filters.items())))
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        found = self.search_index.search(user_id, terms, global_stats, limit, sort=sort, **filters)
        hits = self._hit_dicts(user_id, found["hits"], include_metadata)
        result = {"hits": hits, "total": found["total"]}
        self.cache.put(key, result, 256 + sum(len(h["content"]) + 300 for h in hits), [("u", user_id)])
        return result, False

    def vector_search(self, user_id: str, query_vector: list[float], limit: int,
                      filters: dict[str, Any] | None = None, threshold: float | None = None,
                      include_metadata: bool = True, sort: str = "relevance") -> dict[str, Any]:
        """Top `limit` of the user's messages on this shard by cosine similarity (embeds the user's
        queued messages first, up to 2,000); returns {"hits", "total", "pending"}."""
        self.vectors.embed_pending(2000, user_id)
        found = self.vectors.search(user_id, query_vector, limit, threshold=threshold, sort=sort, **(filters or {}))
        return {"hits": self._hit_dicts(user_id, found["hits"], include_metadata), "total": found["total"],
                "pending": self.vectors.pending(user_id)}

    def embed_pending(self, limit: int = 1000) -> int:
        """Embed queued messages of any user (the bridge's background refresh calls this)."""
        return self.vectors.embed_pending(limit)

    def _hit_dicts(self, user_id: str, hits: list[tuple[str, str, float, float]],
                   include_metadata: bool) -> list[dict[str, Any]]:
        out = []
        for session_id, message_id, score, epoch in hits:
            state = self.sessions[(user_id, session_id)]
            message = state.messages[state.positions[message_id]].to_dict(include_metadata)
            message.update(session_id=session_id, relevance_score=score, result_type="message", timestamp_epoch=epoch)
            out.append(message)
        return out

    def analytics(self, user_id: str, window_start: float, window_end: float) -> tuple[dict[str, Any], bool]:
        """This shard's analytics partial for the user; cached until the user's next write or 60 s."""
        key = ("a", user_id, int(window_start // 60), int(window_end // 60))
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        sessions = [self.sessions[(user_id, s)] for s in self.user_sessions.get(user_id, ())]
        partial = analytics_partial(sessions, window_start, window_end)
        self.cache.put(key, partial, 512 + 16 * len(partial["days"]), [("u", user_id)])
        return partial, False

    # ------------------------------------------------------------------ admin
    def compact(self) -> dict[str, int]:
        """Rewrite the log as a snapshot of live state, so deleted data leaves the disk.

        Blocks this shard for the rewrite (0.1 s for 100k live messages here).
        """
        self.commit()
        before = self.log.disk_bytes()
        self.log.rewrite(self._snapshot_frames())
        self.dead_messages = 0
        self.compactions += 1
        return {"bytes_before": before, "bytes_after": self.log.disk_bytes()}

    def _snapshot_frames(self) -> Iterator[bytes]:
        for user_id, profile in self.users.items():
            yield codec.encode(codec.USER_PUT, {"u": user_id, "p": profile})
        for (user_id, session_id), state in self.sessions.items():
            record = dict(state.record)
            yield codec.encode(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
            for start in range(0, len(state.messages), 1000):
                rows = [[m.message_id, m.role, m.content, m.timestamp, m.attachments, m.metadata, m.stored_at]
                        for m in state.messages[start:start + 1000]]
                yield codec.encode(codec.MESSAGES, {"u": user_id, "s": session_id, "m": rows,
                                                    "t": record["updated_at"]}, self._compress_records)

    def clear_cache(self) -> int:
        entries = len(self.cache)
        self.cache.clear()
        return entries

    def flush(self) -> None:
        self.commit()
        self.log.flush()

    def probe(self) -> dict[str, Any]:
        """Cheap health facts: log open, directory readable/writable (access checks, no writes), disk free."""
        readable = os.access(self.directory, os.R_OK | os.X_OK)
        writable = os.access(self.directory, os.W_OK)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = 0
        return {"shard": self.index, "log_open": self.log.is_open, "readable": readable, "writable": writable,
                "disk_free_bytes": free, "sessions": len(self.sessions), "messages": self.message_count,
                "users": len(self.users), "cache_bytes": self.cache.bytes, "cache_entries": len(self.cache),
                "cache_capacity_bytes": self.cache.capacity_bytes, "cache_hits": self.cache.hits,
                "cache_misses": self.cache.misses, "epoch": self.log.epoch}

    def stats(self) -> dict[str, Any]:
        ram = sum(state.ram_bytes for state in self.sessions.values()) + self.search_index.nbytes()
        return {**self.probe(), "ram_bytes": ram,
                "ram_bytes_per_message": ram / self.message_count if self.message_count else 0.0,
                "log_bytes": self.log.disk_bytes(), "log_commits": self.log.commits, "log_fsyncs": self.log.fsyncs,
                "dead_messages": self.dead_messages, "compactions": self.compactions,
                "recovery": self.log.report.as_dict()}


_OPERATIONS = frozenset({
    "create_user", "get_user", "user_exists", "update_user", "delete_profile", "list_users",
    "create_session", "get_session", "update_session", "delete_session", "list_user_sessions", "session_stats",
    "delete_user_data", "purge", "append", "history", "read_range", "export_session", "search_stats", "search",
    "analytics", "clear_cache", "compact", "flush", "probe", "stats", "vector_search", "embed_pending",
})
