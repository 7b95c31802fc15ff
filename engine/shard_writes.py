"""The writes a shard performs: users, sessions, messages, deletes and purges, with the shard's own checks.

Each handler checks its input (the api checked already; this keeps a shard safe from any caller),
encodes its log record and applies it through `_write` (encode before apply: a value that cannot be
stored fails alone, before anything changes). Handlers are registered for their operation types with
`@handles`; the shard dispatches by type and commits the batch once (engine/shard_core.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from . import codec
from . import operations as ops
from .errors import InvalidInput
from .models import MAX_METADATA_BYTES, new_message_id, normalize_message, validate_id
from .operations import AppendReply
from .shard_core import ShardCore, handles
from .storable import check_json, check_text

_DEFAULT_TITLES = {"chat": "New Chat", "panel": "Panel Session", "debate": "Debate Session",
                   "problem_solving": "Problem Solving Session"}
_RESERVED_PROFILE_KEYS = ("user_id", "created_at", "updated_at")


def default_title(session_type: str) -> str:
    return _DEFAULT_TITLES.get(session_type, "New Session")


class WriteHandlers(ShardCore):
    """Write operations of a shard."""

    @handles(ops.CreateUser)
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

    @handles(ops.UpdateUser)
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

    @handles(ops.CreateSession)
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

    @handles(ops.UpdateSession)
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

    @handles(ops.DeleteSession)
    def delete_session(self, user_id: str, session_id: str) -> int:
        """Delete a session and its messages; returns messages deleted."""
        state = self._session(user_id, session_id)
        count = len(state.messages)
        self._write(codec.SESSION_DELETE, {"u": user_id, "s": session_id})
        return count

    @handles(ops.DeleteUserData)
    def delete_user_data(self, user_id: str) -> dict[str, int]:
        """Delete the user's sessions on this shard and the profile if it lives here."""
        sessions_deleted = messages_deleted = 0
        for session_id in sorted(self.state.user_sessions.get(user_id, ())):
            messages_deleted += self.delete_session(user_id, session_id)
            sessions_deleted += 1
        profile_deleted = self.delete_profile(user_id)
        return {"sessions_deleted": sessions_deleted, "messages_deleted": messages_deleted,
                "profile_deleted": int(profile_deleted)}

    @handles(ops.Purge)
    def purge(self, cutoff_epoch: float, user_id: str | None = None) -> dict[str, int]:
        """Delete messages older than the cutoff (and sessions left empty created before it)."""
        _shape(type(cutoff_epoch) in (int, float) and cutoff_epoch == cutoff_epoch, "cutoff must be a number")
        _shape(user_id is None or isinstance(user_id, str), "user_id must be a string or None")
        body: dict[str, Any] = {"c": cutoff_epoch}
        if user_id is not None:
            body["u"] = user_id
        records = codec.pack(codec.PURGE, body)
        self.applied += 1
        messages_deleted, sessions_deleted = self.state.purge(cutoff_epoch, user_id)
        if messages_deleted or sessions_deleted:
            self._pending.extend(records)
        return {"messages_deleted": messages_deleted, "sessions_deleted": sessions_deleted}

    @handles(ops.Append)
    def append(self, user_id: str, session_id: str, messages: list[dict[str, Any]],
               session_updated_at: str | None = None) -> AppendReply:
        """Append validated messages contiguously; idempotent on message_id; all or nothing.

        The session's updated_at becomes the batch's time, or `session_updated_at` (an import keeps
        the exported value). Raises SessionNotFound, InvalidInput (id reused with other content,
        repeated in the batch, a value that cannot be stored).
        """
        _shape(isinstance(messages, list) and all(isinstance(m, dict) for m in messages),
               "messages must be a list of dicts")
        updated_at = _timestamp(session_updated_at, "updated_at")
        state = self._session(user_id, session_id)
        if len(messages) > self.config.max_batch_messages:
            raise InvalidInput(f"Batch of {len(messages)} messages is above {self.config.max_batch_messages}")
        now = self.now_iso()
        seen: set[str] = set()
        rows: list[list[Any]] = []
        ids: list[str] = []
        records: list[dict[str, Any]] = []
        duplicates = 0
        # Ids already stored, found for the whole batch at once (a retry sends the same ids again).
        stored = state.messages.positions_of(m["message_id"] for m in messages
                                             if isinstance(m.get("message_id"), str))
        for position, raw in enumerate(messages):
            message = _checked_message(position, raw, self.config.max_message_bytes)
            message_id = message.get("message_id") or new_message_id()
            if message_id in seen:
                raise InvalidInput(f"messages[{position}]: message_id '{message_id}' repeated in the batch")
            seen.add(message_id)
            ids.append(message_id)
            existing_position = stored.get(message_id)
            if existing_position is not None:
                existing = state.messages[existing_position]
                if existing.role != message.get("role") or existing.content != message.get("content"):
                    raise InvalidInput(f"message_id '{message_id}' already used with different content")
                duplicates += 1
                records.append({**existing.to_dict(), "stored_at": existing.stored_at, "duplicate": True})
                continue
            row = _message_row(message, message_id, now)
            rows.append(row)
            records.append({"message_id": message_id, "timestamp": row[3], "stored_at": now, "duplicate": False})
        if rows:
            body = {"u": user_id, "s": session_id, "m": rows, "t": updated_at or now}
            self._write(codec.MESSAGES, body)
        # Per-message records matter to single stores (the API returns one); a batch answer stays small.
        return AppendReply(ids, now, len(rows), duplicates, records if len(messages) == 1 else [], state.content_bytes)


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


def _shape(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message, "INVALID_ARGUMENT")


def _check_size(value: Any, what: str) -> None:
    if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{what} is above {MAX_METADATA_BYTES} bytes serialised", "MESSAGE_TOO_LARGE")


def _check_profile(record: dict[str, Any]) -> None:
    check_json(record, "Profile")
    _check_size(record, "Profile")


def _checked_message(position: int, message: Any, max_message_bytes: int) -> dict[str, Any]:
    """One message checked by the api's own rules (engine.models.normalize_message: content present
    and within max_message_bytes, role, id, UTC timestamp, attachments, metadata within its bound):
    the api checked already; this keeps a shard safe from any caller. Errors name the position."""
    try:
        clean, _ = normalize_message(message, max_message_bytes)
    except InvalidInput as exc:
        raise InvalidInput(f"messages[{position}]: {exc.message}", exc.code) from None
    return clean


def _message_row(message: dict[str, Any], message_id: str, now: str) -> list[Any]:
    """The log row of one new, checked message."""
    return [message_id, message["role"], message["content"], message.get("timestamp") or now,
            message.get("attachments") or None, message.get("metadata") or None, now]

