"""The storage facade (`data_layer.storage`, contract §5) and its value types."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine import operations as ops
from engine.errors import EngineError, InvalidInput, SessionNotFound, UserNotFound
from engine.models import (check_metadata_dict, check_profile, check_session_type, check_title, iso, new_message_id,
                           new_session_id, normalize_message, parse_timestamp, validate_id)
from engine.text import query_terms

from . import validation
from .backend import PathBackend
from .errors import ErrorCode, SearchError, StorageError

_ALL = 10**9


@dataclass(frozen=True)
class ChatMessage:
    """An immutable stored message."""

    role: str
    content: str
    message_id: str = ""
    timestamp: str = ""
    attachments: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatMessage":
        return cls(data["role"], data["content"], data.get("message_id", ""), data.get("timestamp", ""),
                   list(data.get("attachments") or []), dict(data.get("metadata") or {}))


@dataclass(frozen=True)
class ChatSession:
    """An immutable session record; `session_name` is an alias of `title`."""

    session_id: str
    user_id: str
    title: str
    session_type: str = "chat"
    created_at: str = ""
    updated_at: str = ""
    message_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def session_name(self) -> str:
        return self.title

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatSession":
        return cls(data["session_id"], data["user_id"], data["title"], data.get("session_type", "chat"),
                   data.get("created_at", ""), data.get("updated_at", ""), int(data.get("message_count", 0)),
                   dict(data.get("metadata") or {}))


class StorageFacade:
    """Upstream-style storage manager: not found is False/None/""/[]; failures raise StorageError."""

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge

    def _backend(self) -> PathBackend:
        return self._bridge.open_backend()

    async def _guard(self, operation: str, coroutine_factory: Any, search: bool = False) -> Any:
        try:
            return await coroutine_factory()
        except EngineError as exc:
            if search:
                raise SearchError(exc.message, search_type="text", error_code=exc.code) from None
            raise StorageError(exc.message, operation=operation, error_code=exc.code) from None

    # ------------------------------------------------------------------ users
    async def create_user(self, user_id: str, profile: dict[str, Any] | None = None) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validate_id(user_id, "user")
            return bool(await backend.user(ops.CreateUser(user_id, check_profile(profile))))
        return await self._guard("create_user", run)

    async def get_user_profile(self, user_id: str) -> dict[str, Any] | None:
        async def run() -> dict[str, Any] | None:
            backend = self._backend()
            validate_id(user_id, "user")
            profile: dict[str, Any] | None = await backend.user(ops.GetUser(user_id))
            return profile
        return await self._guard("get_user_profile", run)

    async def update_user_profile(self, user_id: str, updates: dict[str, Any]) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validate_id(user_id, "user")
            return bool(await backend.user(ops.UpdateUser(user_id, check_profile(updates))))
        return await self._guard("update_user_profile", run)

    async def user_exists(self, user_id: str) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validate_id(user_id, "user")
            return bool(await backend.user(ops.UserExists(user_id)))
        return await self._guard("user_exists", run)

    async def list_users(self) -> list[str]:
        return await self._guard("list_users", lambda: self._backend().fan_out(ops.ListUsersRequest()))

    async def delete_user(self, user_id: str) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validate_id(user_id, "user")
            try:
                await backend.fan_out(ops.DeleteUserRequest(user_id, backend.user_shard(user_id)))
            except UserNotFound:
                return False
            return True
        return await self._guard("delete_user", run)

    # ------------------------------------------------------------------ sessions
    async def create_session(self, user_id: str, title: str | None = None, session_type: str = "chat", *,
                             session_id: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Create a session (and the user if missing); returns its id, or "" if the id exists."""
        async def run() -> str:
            backend = self._backend()
            deadline = backend.deadline()  # one deadline for both steps
            validate_id(user_id, "user")
            target = validate_id(session_id, "session") if session_id is not None else new_session_id()
            clean_title = check_title(title)
            kind = check_session_type(session_type)
            clean = check_metadata_dict(metadata, "session metadata")
            # The user first, then the session: a call cut short between the two leaves a user with
            # no session (a state create_user makes too), never a session whose owner search,
            # analytics and delete_user do not know.
            await backend.user(ops.CreateUser(user_id, {}), deadline)
            created = await backend.session(ops.CreateSession(user_id, target, clean_title, kind, clean), deadline)
            return target if created else ""
        return await self._guard("create_session", run)

    async def get_session(self, user_id: str, session_id: str) -> ChatSession | None:
        async def run() -> ChatSession | None:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            record = await backend.session(ops.GetSession(user_id, session_id))
            return ChatSession.from_dict(record) if record else None
        return await self._guard("get_session", run)

    async def list_sessions(self, user_id: str, limit: int | None = None, offset: int = 0) -> list[ChatSession]:
        async def run() -> list[ChatSession]:
            backend = self._backend()
            validate_id(user_id, "user")
            count = _ALL if limit is None else validation.int_arg(limit, "limit", 0, 1000)
            start = validation.int_arg(offset, "offset", 0)
            result: ops.SessionListing = await backend.fan_out(
                ops.ListSessionsRequest(user_id, backend.user_shard(user_id)))
            return [ChatSession.from_dict(s) for s in result.sessions[start:start + count]]
        return await self._guard("list_sessions", run)

    async def update_session(self, user_id: str, session_id: str, updates: dict[str, Any]) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            return bool(await backend.session(ops.UpdateSession(user_id, session_id, _session_updates(updates))))
        return await self._guard("update_session", run)

    async def update_session_metadata(self, user_id: str, session_id: str, metadata: dict[str, Any]) -> bool:
        return await self.update_session(user_id, session_id, {"metadata": metadata})

    async def delete_session(self, user_id: str, session_id: str) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            try:
                await backend.session(ops.DeleteSession(user_id, session_id))
            except SessionNotFound:
                return False
            return True
        return await self._guard("delete_session", run)

    async def get_session_stats(self, user_id: str, session_id: str) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            stats = await backend.session(ops.SessionStats(user_id, session_id))
            return {"session_id": session_id, "user_id": user_id, "created_at": stats["created_at"],
                    "updated_at": stats["updated_at"], "storage_path": f"{user_id}/{session_id}",
                    "message_count": stats["message_count"], "document_count": 0,
                    "total_size_bytes": stats["total_size_bytes"],
                    "average_message_size": stats["average_message_size"], "vector_count": stats["vector_count"],
                    "has_context": False, "context_snapshots": 0, "last_activity": stats["last_activity"]}
        return await self._guard("get_session_stats", run)

    # ------------------------------------------------------------------ messages
    async def add_message(self, user_id: str, session_id: str, message: Any) -> bool:
        async def run() -> bool:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            raw = message.to_dict() if isinstance(message, ChatMessage) else message
            if isinstance(raw, dict) and not raw.get("message_id"):
                raw = {key: value for key, value in raw.items() if key != "message_id" and
                       not (key == "timestamp" and value == "")}
            clean, _ = normalize_message(raw, self._bridge.settings.max_message_bytes)
            clean.setdefault("message_id", new_message_id())
            try:
                await backend.session(ops.Append(user_id, session_id, [clean]))
            except SessionNotFound:
                return False
            return True
        return await self._guard("add_message", run)

    async def get_messages(self, user_id: str, session_id: str, limit: int | None = None,
                           offset: int = 0) -> list[ChatMessage]:
        async def run() -> list[ChatMessage]:
            backend = self._backend()
            validation.user_and_session(user_id, session_id)
            count = _ALL if limit is None else validation.int_arg(limit, "limit", 0)
            start = validation.int_arg(offset, "offset", 0)
            if count == 0:
                return []
            try:
                result = await backend.session(ops.ReadRange(user_id, session_id, start, count))
            except SessionNotFound:
                return []
            return [ChatMessage.from_dict(m) for m in result["messages"]]
        return await self._guard("get_messages", run)

    async def get_all_messages(self, user_id: str, session_id: str) -> list[ChatMessage]:
        return await self.get_messages(user_id, session_id)

    async def search_messages(self, user_id: str, query: str, session_id: str | None = None,
                              session_ids: list[str] | None = None, *, limit: int = 100) -> list[ChatMessage]:
        async def run() -> list[ChatMessage]:
            backend = self._backend()
            validate_id(user_id, "user")
            text = validation.query_text(query)
            count = validation.int_arg(limit, "limit", 0, 1000)
            wanted = list(session_ids or []) + ([session_id] if session_id is not None else [])
            filters = {"session_ids": wanted} if (session_id is not None or session_ids is not None) else {}
            request = ops.SearchRequest(user_id, backend.user_shard(user_id), "text", query_terms(text), 0, count,
                                        filters)
            try:
                found: ops.SearchResult = await backend.fan_out(request, backend.search_phase_timeout())
            except UserNotFound:
                return []
            return [ChatMessage.from_dict(hit) for hit in found.results]
        return await self._guard("search_messages", run, search=True)


def _session_updates(updates: Any) -> dict[str, Any]:
    """The storable subset of update_session's `updates`: titles checked, updated_at as UTC ISO,
    metadata checked; None leaves a field unchanged and other keys are ignored."""
    if not isinstance(updates, dict):
        raise InvalidInput("updates must be a dict", "INVALID_ARGUMENT")
    clean: dict[str, Any] = {}
    for key in ("title", "session_name"):
        if updates.get(key) is not None:
            clean[key] = check_title(updates[key], key)
    if updates.get("updated_at") is not None:
        clean["updated_at"] = iso(parse_timestamp(updates["updated_at"], "updated_at", "INVALID_ARGUMENT"))
    if "metadata" in updates:
        clean["metadata"] = check_metadata_dict(updates["metadata"], "session metadata")
    return clean


__all__ = ["ChatMessage", "ChatSession", "ErrorCode", "StorageFacade"]
