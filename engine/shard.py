"""One shard: its log, users, sessions, messages, search slice and result cache.

Every write encodes its log record first (`codec.pack`: the exact bytes the log will hold), then
applies it to memory through `ShardState.apply` (the code replay uses) and queues it; `commit()`
writes the queued records as one group commit. A value that cannot be encoded therefore fails
alone, before anything changes. `execute()` runs a batch of operations and commits once, so one
actor call carries many messages; if the commit fails, every operation of the batch fails, memory
is rebuilt from the log (so it holds only what the log holds) and writes pause briefly.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import shutil
import time
from datetime import datetime, timezone
from typing import Any, Callable

from . import codec
from .backoff import Backoff
from .config import EngineConfig
from .errors import CorruptRecord, EngineError, InvalidInput, SessionNotFound, StaleEpoch, StorageFailure
from .filesystem import FileSystem, atomic_write
from .message_log import MessageLog
from .models import MAX_METADATA_BYTES, ROLES, new_message_id, validate_id
from .session_store import SessionState, analytics_partial, history_page, page_bytes
from .shard_state import RECOVERED_TITLE, ShardState
from .storable import check_json, check_text, text_bytes
from .vector_index import load_embedder

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
        >>> shard.append("alice", "s1", [{"role": "user", "content": "hi", "message_id": "m1"}])["count"]
        1
        >>> shard.commit(); shard.close()
    """

    def __init__(self, config: EngineConfig, index: int, clock: Callable[[], float] = time.time,
                 fs: FileSystem | None = None, monotonic: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.index = index
        self.directory = os.path.join(config.storage_path, f"shard-{index:04d}")
        self._clock = clock
        self.fs = fs or FileSystem()
        self.log = MessageLog(self.directory, config.durability, config.segment_bytes_max,
                              config.compress_sealed_segments, config.flush_interval_s, clock=monotonic,
                              fs=self.fs, rng=rng)
        self.state = ShardState(config.cache_bytes_max, load_embedder(config.embedder) if config.embedder else None)
        self._pending: list[codec.Record] = []
        self._batch_now: str | None = None
        self.compactions = 0
        self._compact_retry = Backoff(1.0, 60.0, monotonic)
        self._compact_wanted = False
        self._write_pause = Backoff(0.05, 5.0, monotonic)  # writes wait after a failed commit
        self._reload_needed = False
        self.reloads = 0
        self._compress_records = False
        self.opened = False

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> dict[str, Any]:
        """Replay the log into memory; returns the recovery report. On failure nothing stays held
        (locks released). Raises ShardLocked, CorruptRecord, StorageFailure."""
        try:
            for record_type, body in self.log.open():
                self.state.apply(record_type, body)
            self._check_identity()
        except OSError as exc:
            self.log._release()
            raise StorageFailure(f"Cannot open shard {self.index} at {self.directory}: {exc}") from None
        except BaseException:
            self.log._release()
            raise
        self.opened = True
        report = self.log.report.as_dict()
        if self.state.orphans:
            report["notes"].append(f"{self.state.orphans} messages of sessions the log never created were kept "
                                   f"in sessions titled '{RECOVERED_TITLE}'")
        return report

    def _check_identity(self) -> None:
        """SHARD.json says which shard of how many this directory is: written once, checked on open,
        so directories copied between stores or a lost manifest can never be misread."""
        path = os.path.join(self.directory, "SHARD.json")
        wanted = {"index": self.index, "shard_count": self.config.shard_count}
        if not self.fs.exists(path):
            atomic_write(self.fs, path, json.dumps(wanted).encode())
            return
        try:
            found = json.loads(self.fs.read(path))
        except ValueError:
            found = None
        if not isinstance(found, dict) or {k: found.get(k) for k in wanted} != wanted:
            raise CorruptRecord(f"{path} says {found}, but this store expects {wanted}; refusing to open")

    def reload(self) -> None:
        """Rebuild memory from the log (after a failed commit left memory ahead of it). The new
        state replaces the old only once the whole log was read; raises StorageFailure if it
        cannot be read (the caller must then stop serving: memory is ahead of the log)."""
        self._pending = []
        fresh = self.state.empty_copy()
        for record_type, body in self.log.reload():
            fresh.apply(record_type, body)
        self.state = fresh
        self._reload_needed = False
        self.reloads += 1

    def commit(self) -> None:
        """Write queued records as one batch (group commit); the ack point of every write."""
        if self._pending:
            records, self._pending = self._pending, []
            self.log.append_batch(records)

    def execute(self, operations: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[tuple[bool, Any]]:
        """Run operations in order, commit once, return [(ok, result or EngineError)].

        An operation that fails (bad input, unknown session) fails alone. If the commit fails,
        every operation of the batch fails with STORAGE_ERROR, memory is rebuilt from the log and
        writes pause for a short, growing interval. Raises StaleEpoch (a newer instance owns the
        log: this one must stop) and StorageFailure if memory cannot be rebuilt.
        """
        results: list[tuple[bool, Any]] = []
        self._batch_now = None  # one acknowledgement time per batch (they share one commit)
        paused = self._write_pause.waiting()
        after_commit: list[tuple[int, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        for name, args, kwargs in operations:
            handler = _OPERATIONS.get(name)
            if handler is None:
                results.append((False, InvalidInput(f"Unknown shard operation '{name}'", "INVALID_ARGUMENT")))
            elif paused and name in WRITE_OPERATIONS:
                results.append((False, StorageFailure(f"Shard {self.index} paused writes after a failed write "
                                                      f"({self.log.failure}); retry shortly")))
            elif name in AFTER_COMMIT_OPERATIONS:
                # flush and compact write the log themselves: they run once the batch is committed,
                # so no record of the batch is ever written apart from the batch's own commit.
                after_commit.append((len(results), handler, args, kwargs))
                results.append((False, None))
            else:
                results.append(self._run(name, handler, args, kwargs))
        self._batch_now = None
        try:
            self.commit()
        except StorageFailure as failure:
            # The batch's records are not in the log but are in memory: nothing of it may be
            # acknowledged, and memory must hold only what the log holds.
            self._write_pause.failed()
            self.reload()
            return [(False, failure)] * len(operations)
        for position, handler, args, kwargs in after_commit:
            results[position] = self._run(handler.__name__, handler, args, kwargs)
        if not paused:
            self._write_pause.succeeded()
        if self._reload_needed:
            self.reload()
        self.maintain()
        return results

    def _run(self, name: str, handler: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[bool, Any]:
        try:
            return True, handler(self, *args, **kwargs)
        except StaleEpoch:
            raise
        except EngineError as exc:
            return False, exc
        except Exception as exc:
            if isinstance(exc, TypeError) and not _binds(handler, self, args, kwargs):
                return False, InvalidInput(f"Bad arguments for shard operation {name}: {exc}", "INVALID_ARGUMENT")
            # A write that failed half-way must not leave memory ahead of the log: rebuilt after the batch.
            self._reload_needed = self._reload_needed or name in WRITE_OPERATIONS
            return False, StorageFailure(f"Shard {self.index}: internal error in {name} ({type(exc).__name__})")

    def maintain(self) -> None:
        """Background upkeep: due none-mode flushes, retries of failed log steps, compaction."""
        self.log.maintain()
        due = self._compact_wanted or self.state.dead_messages > max(COMPACT_MIN_DEAD, self.state.message_count)
        if due and not self._compact_retry.waiting():
            try:
                self.compact()
            except StorageFailure:
                pass  # recorded (health shows it) and retried after the backoff

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.log.close()
            self.opened = False

    def now_iso(self) -> str:
        if self._batch_now is None:
            self._batch_now = datetime.fromtimestamp(self._clock(), timezone.utc).isoformat()
        return self._batch_now

    def _write(self, record_type: int, body: dict[str, Any]) -> None:
        """Encode first (raises InvalidInput if the record cannot be stored), then apply and queue."""
        records = codec.pack(record_type, body, self._compress_records)
        self.state.apply(record_type, body)
        self._pending.extend(records)

    def set_record_compression(self, enabled: bool) -> None:
        self._compress_records = enabled

    # ------------------------------------------------------------------ users (on the user's shard)
    def create_user(self, user_id: str, profile: dict[str, Any] | None = None) -> bool:
        validate_id(user_id, "user")
        _shape(profile is None or isinstance(profile, dict), "profile must be a dict")
        if user_id in self.state.users:
            return False
        now = self.now_iso()
        record = {key: value for key, value in (profile or {}).items() if key not in _RESERVED_PROFILE_KEYS}
        record = {"user_id": user_id, "username": record.pop("username", ""), "created_at": now, "updated_at": now,
                  "preferences": record.pop("preferences", {}) or {}, "metadata": record.pop("metadata", {}) or {},
                  **record}
        _check_profile(record)
        self._write(codec.USER_PUT, {"u": user_id, "p": record})
        return True

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        profile = self.state.users.get(user_id)
        return dict(profile) if profile is not None else None

    def user_exists(self, user_id: str) -> bool:
        return user_id in self.state.users

    def update_user(self, user_id: str, updates: dict[str, Any]) -> bool:
        _shape(isinstance(updates, dict), "updates must be a dict")
        profile = self.state.users.get(user_id)
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
        _check_profile(record)
        self._write(codec.USER_PUT, {"u": user_id, "p": record})
        return True

    def delete_profile(self, user_id: str) -> bool:
        if user_id not in self.state.users:
            return False
        self._write(codec.USER_DELETE, {"u": user_id})
        return True

    def list_users(self) -> list[str]:
        return sorted(self.state.users)

    # ------------------------------------------------------------------ sessions
    def _session(self, user_id: str, session_id: str) -> SessionState:
        if type(user_id) is not str or type(session_id) is not str:
            raise InvalidInput("user_id and session_id must be strings", "INVALID_ID")
        state = self.state.sessions.get((user_id, session_id))
        if state is None:
            raise SessionNotFound(f"Session '{session_id}' not found for user '{user_id}'")
        return state

    def create_session(self, user_id: str, session_id: str, title: str | None = None, session_type: str = "chat",
                       metadata: dict[str, Any] | None = None, created_at: str | None = None,
                       updated_at: str | None = None) -> bool:
        """Create a session; False if (user_id, session_id) exists."""
        validate_id(user_id, "user")
        validate_id(session_id, "session")
        if (user_id, session_id) in self.state.sessions:
            return False
        check_text(session_type, "session_type", "INVALID_ARGUMENT")
        _shape(metadata is None or isinstance(metadata, dict), "session metadata must be a dict")
        if title is not None:
            check_text(title, "Session title")
        check_json(metadata or {}, "Session metadata")
        now = self.now_iso()
        record = {"session_id": session_id, "user_id": user_id,
                  "title": title if title is not None else default_title(session_type),
                  "session_type": session_type, "created_at": _timestamp(created_at, "created_at") or now,
                  "updated_at": _timestamp(updated_at, "updated_at") or _timestamp(created_at, "created_at") or now,
                  "metadata": metadata or {}}
        self._write(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
        return True

    def get_session(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        state = self.state.sessions.get((user_id, session_id))
        return state.to_dict() if state is not None else None

    def update_session(self, user_id: str, session_id: str, updates: dict[str, Any]) -> bool:
        _shape(isinstance(updates, dict), "updates must be a dict")
        state = self.state.sessions.get((user_id, session_id))
        if state is None:
            return False
        record = dict(state.record)
        for key in ("title", "session_name"):
            if isinstance(updates.get(key), str):
                record["title"] = check_text(updates[key], "Session title")
        if isinstance(updates.get("metadata"), dict):
            record["metadata"] = {**(record.get("metadata") or {}), **updates["metadata"]}
            check_json(record["metadata"], "Session metadata")
            _check_size(record["metadata"], "Session metadata")
        record["updated_at"] = _timestamp(updates.get("updated_at"), "updated_at") or self.now_iso()
        self._write(codec.SESSION_PUT, {"u": user_id, "s": session_id, "r": record})
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
        cached = self.state.cache.get(key)
        if cached is not None:
            return cached, True
        sessions = [self.state.sessions[(user_id, s)].to_dict() for s in self.state.user_sessions.get(user_id, ())]
        self.state.cache.put(key, sessions, 128 + 400 * len(sessions), [("u", user_id)])
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
        for session_id in sorted(self.state.user_sessions.get(user_id, ())):
            messages_deleted += self.delete_session(user_id, session_id)
            sessions_deleted += 1
        profile_deleted = self.delete_profile(user_id)
        return {"sessions_deleted": sessions_deleted, "messages_deleted": messages_deleted,
                "profile_deleted": int(profile_deleted)}

    def purge(self, cutoff_epoch: float, user_id: str | None = None) -> dict[str, int]:
        """Delete messages older than the cutoff (and sessions left empty created before it)."""
        _shape(type(cutoff_epoch) in (int, float) and cutoff_epoch == cutoff_epoch, "cutoff must be a number")
        _shape(user_id is None or isinstance(user_id, str), "user_id must be a string or None")
        body: dict[str, Any] = {"c": cutoff_epoch}
        if user_id is not None:
            body["u"] = user_id
        records = codec.pack(codec.PURGE, body)
        messages_deleted, sessions_deleted = self.state.purge(cutoff_epoch, user_id)
        if messages_deleted or sessions_deleted:
            self._pending.extend(records)
        return {"messages_deleted": messages_deleted, "sessions_deleted": sessions_deleted}

    # ------------------------------------------------------------------ messages
    def append(self, user_id: str, session_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Append validated messages contiguously; idempotent on message_id; all or nothing.

        Returns {message_ids, stored_at, count (new), duplicates, records, session_bytes}.
        Raises SessionNotFound, InvalidInput (id reused with other content, repeated in the batch,
        a value that cannot be stored).
        """
        _shape(isinstance(messages, list) and all(isinstance(m, dict) for m in messages),
               "messages must be a list of dicts")
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
            message_id = validate_id(message.get("message_id") or new_message_id(), "message")
            if message_id in seen:
                raise InvalidInput(f"messages[{position}]: message_id '{message_id}' repeated in the batch")
            seen.add(message_id)
            ids.append(message_id)
            existing_position = state.positions.get(message_id)
            if existing_position is not None:
                existing = state.messages[existing_position]
                if existing.role != message.get("role") or existing.content != message.get("content"):
                    raise InvalidInput(f"message_id '{message_id}' already used with different content")
                duplicates += 1
                records.append({**existing.to_dict(), "stored_at": existing.stored_at, "duplicate": True})
                continue
            row = _message_row(position, message, message_id, now)
            rows.append(row)
            records.append({"message_id": message_id, "timestamp": row[3], "stored_at": now, "duplicate": False})
        if rows:
            body = {"u": user_id, "s": session_id, "m": rows, "t": now}
            try:
                self._write(codec.MESSAGES, body)
            except InvalidInput as exc:
                _explain_unencodable(rows)
                raise exc
        # Per-message records matter to single stores (the API returns one); a batch answer stays small.
        return {"message_ids": ids, "stored_at": now, "count": len(rows), "duplicates": duplicates,
                "records": records if len(messages) == 1 else [], "session_bytes": state.content_bytes}

    def history(self, user_id: str, session_id: str, limit: int, offset: int = 0, before: str | None = None,
                after: str | None = None, latest: bool = False) -> tuple[dict[str, Any], bool]:
        """A history page (cached per exact request); returns (page, cache_hit)."""
        state = self._session(user_id, session_id)
        key = ("h", user_id, session_id, limit, offset, before, after, latest)
        cached = self.state.cache.get(key)
        if cached is not None:
            return cached, True
        page = history_page(state, limit, offset, before, after, latest)
        self.state.cache.put(key, page, page_bytes(page), [("s", user_id, session_id)])
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
        return self.state.search_index.stats(user_id, terms)

    def search(self, user_id: str, terms: list[str], global_stats: dict[str, Any], limit: int,
               filters: dict[str, Any] | None = None, sort: str = "relevance",
               include_metadata: bool = True) -> tuple[dict[str, Any], bool]:
        """Top `limit` matches of this shard with global BM25 statistics; returns (result, cache_hit)."""
        filters = filters or {}
        key = ("q", user_id, tuple(terms), global_stats["doc_count"], global_stats["total_length"],
               tuple(sorted(global_stats["doc_freq"].items())), limit, sort, include_metadata,
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in filters.items())))
        cached = self.state.cache.get(key)
        if cached is not None:
            return cached, True
        found = self.state.search_index.search(user_id, terms, global_stats, limit, sort=sort, **filters)
        hits = self._hit_dicts(user_id, found["hits"], include_metadata)
        result = {"hits": hits, "total": found["total"]}
        self.state.cache.put(key, result, 256 + sum(len(h["content"]) + 300 for h in hits), [("u", user_id)])
        return result, False

    def vector_search(self, user_id: str, query_vector: list[float], limit: int,
                      filters: dict[str, Any] | None = None, threshold: float | None = None,
                      include_metadata: bool = True, sort: str = "relevance") -> dict[str, Any]:
        """Top `limit` of the user's messages on this shard by cosine similarity (embeds the user's
        queued messages first, up to 2,000); returns {"hits", "total", "pending"}."""
        self.state.vectors.embed_pending(2000, user_id)
        found = self.state.vectors.search(user_id, query_vector, limit, threshold=threshold, sort=sort, **(filters or {}))
        return {"hits": self._hit_dicts(user_id, found["hits"], include_metadata), "total": found["total"],
                "pending": self.state.vectors.pending(user_id)}

    def embed_pending(self, limit: int = 1000) -> int:
        """Embed queued messages of any user (the bridge's background refresh calls this)."""
        return self.state.vectors.embed_pending(limit)

    def _hit_dicts(self, user_id: str, hits: list[tuple[str, str, float, float]],
                   include_metadata: bool) -> list[dict[str, Any]]:
        out = []
        for session_id, message_id, score, epoch in hits:
            state = self.state.sessions[(user_id, session_id)]
            message = state.messages[state.positions[message_id]].to_dict(include_metadata)
            message.update(session_id=session_id, relevance_score=score, result_type="message", timestamp_epoch=epoch)
            out.append(message)
        return out

    def analytics(self, user_id: str, window_start: float, window_end: float) -> tuple[dict[str, Any], bool]:
        """This shard's analytics partial for the user; cached until the user's next write or 60 s."""
        key = ("a", user_id, int(window_start // 60), int(window_end // 60))
        cached = self.state.cache.get(key)
        if cached is not None:
            return cached, True
        sessions = [self.state.sessions[(user_id, s)] for s in self.state.user_sessions.get(user_id, ())]
        partial = analytics_partial(sessions, window_start, window_end)
        self.state.cache.put(key, partial, 512 + 16 * len(partial["days"]), [("u", user_id)])
        return partial, False

    # ------------------------------------------------------------------ admin
    def compact(self) -> dict[str, int]:
        """Rewrite the log as a snapshot of live state, so deleted data leaves the disk.

        Blocks this shard for the rewrite. A failure before the rewrite's commit point leaves the
        old log serving (raises StorageFailure; `maintain` retries with backoff).
        """
        self.commit()
        try:
            before = self.log.disk_bytes()
            self.log.rewrite(self.state.snapshot_records(self._compress_records))
        except (StorageFailure, OSError) as exc:
            # Wanted until it succeeds: `maintain` retries with backoff.
            self._compact_wanted = True
            self._compact_retry.failed()
            raise StorageFailure(f"Compaction of shard {self.index} failed: {exc}") from None
        self.state.dead_messages = 0
        self.compactions += 1
        self._compact_wanted = False
        self._compact_retry.succeeded()
        return {"bytes_before": before, "bytes_after": self.log.disk_bytes()}

    def clear_cache(self) -> int:
        entries = len(self.state.cache)
        self.state.cache.clear()
        return entries

    def flush(self) -> None:
        self.commit()
        self.log.flush()

    def probe(self) -> dict[str, Any]:
        """Cheap health facts: log open, directory readable/writable (access checks, no writes), disk
        free, and whether a write or background step failed (`degraded`, with the reason)."""
        readable = os.access(self.directory, os.R_OK | os.X_OK)
        writable = os.access(self.directory, os.W_OK)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            free = 0
        health = self.log.health()
        paused = self._write_pause.waiting()
        if self._compact_wanted and "compaction" not in health["pending_steps"]:
            health["pending_steps"].append("compaction")
        return {"shard": self.index, "log_open": self.log.is_open, "readable": readable, "writable": writable,
                "disk_free_bytes": free, "sessions": len(self.state.sessions), "messages": self.state.message_count,
                "users": len(self.state.users), "cache_bytes": self.state.cache.bytes, "cache_entries": len(self.state.cache),
                "cache_capacity_bytes": self.state.cache.capacity_bytes, "cache_hits": self.state.cache.hits,
                "cache_misses": self.state.cache.misses, "epoch": self.log.epoch,
                "degraded": health["degraded"] or paused or bool(health["pending_steps"]),
                "degraded_reason": health["reason"],
                "pending_steps": health["pending_steps"], "io_failures": health["failures"],
                "writes_paused": paused}

    def stats(self) -> dict[str, Any]:
        ram = sum(state.ram_bytes for state in self.state.sessions.values()) + self.state.search_index.nbytes()
        return {**self.probe(), "ram_bytes": ram,
                "ram_bytes_per_message": ram / self.state.message_count if self.state.message_count else 0.0,
                "log_bytes": self.log.disk_bytes(), "log_commits": self.log.commits, "log_fsyncs": self.log.fsyncs,
                "dead_messages": self.state.dead_messages, "compactions": self.compactions, "reloads": self.reloads,
                "recovery": self.log.report.as_dict()}


# ---------------------------------------------------------------------- checks of what gets stored
def _timestamp(value: Any, name: str) -> str | None:
    """An ISO-8601 timestamp with a UTC offset, as stored (replay and analytics turn it into epoch
    seconds), or None when not given."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an ISO-8601 string", "INVALID_ARGUMENT")
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("no UTC offset")
        moment.timestamp()
    except (ValueError, OverflowError):
        raise InvalidInput(f"Invalid {name} {value[:64]!r}: expected ISO-8601 with a UTC offset",
                           "INVALID_ARGUMENT") from None
    return value


def _binds(handler: Callable[..., Any], shard: Shard, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Do these arguments fit the handler's signature? (A TypeError before the handler ran.)"""
    try:
        inspect.signature(handler).bind(shard, *args, **kwargs)
    except TypeError:
        return False
    return True


def _shape(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message, "INVALID_ARGUMENT")


def _check_size(value: Any, what: str) -> None:
    if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{what} is above {MAX_METADATA_BYTES} bytes serialised", "MESSAGE_TOO_LARGE")


def _check_profile(record: dict[str, Any]) -> None:
    check_json(record, "Profile")
    _check_size(record, "Profile")


def _message_row(position: int, message: dict[str, Any], message_id: str, now: str) -> list[Any]:
    """The log row of one new message, after the shard's own checks (the api checked already;
    this keeps a shard safe from any caller)."""
    where = f"messages[{position}]"
    if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
        raise InvalidInput(f"{where}: invalid message", "INVALID_MESSAGE")
    timestamp = message.get("timestamp") or now
    if timestamp is not now:
        _timestamp(timestamp, f"{where} timestamp")
    attachments = message.get("attachments") or None
    metadata = message.get("metadata") or None
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(item, str) for item in attachments):
            raise InvalidInput(f"{where}: attachments must be a list of strings", "INVALID_MESSAGE")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidInput(f"{where}: metadata must be a dict", "INVALID_MESSAGE")
        check_json(metadata, f"{where} metadata")
    return [message_id, message["role"], message["content"], timestamp, attachments, metadata, now]


def _explain_unencodable(rows: list[list[Any]]) -> None:
    """Raise the precise error for the first row that cannot be encoded (after `codec.pack` failed)."""
    for row in rows:
        text_bytes(row[2], f"Message {row[0]} content")
        check_json(row[4] or [], f"Message {row[0]} attachments")


_OPERATIONS: dict[str, Callable[..., Any]] = {name: getattr(Shard, name) for name in (
    "create_user", "get_user", "user_exists", "update_user", "delete_profile", "list_users",
    "create_session", "get_session", "update_session", "delete_session", "list_user_sessions", "session_stats",
    "delete_user_data", "purge", "append", "history", "read_range", "export_session", "search_stats", "search",
    "analytics", "clear_cache", "compact", "flush", "probe", "stats", "vector_search", "embed_pending",
)}
AFTER_COMMIT_OPERATIONS = frozenset({"flush", "compact"})
WRITE_OPERATIONS = frozenset({"create_user", "update_user", "delete_profile", "create_session", "update_session",
                              "delete_session", "delete_user_data", "purge", "append", "compact"})
