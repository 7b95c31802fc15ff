"""LangChain chat history over a bridge: `FFChatMessageHistory` (needs the `[langchain]` extra).

Each history is one session of one user. LangChain messages map both ways without loss: the role
becomes ours (human -> user, ai -> assistant, system, tool; any other type is stored as "user"), the
text becomes the searchable `content`, and the whole message (type, content blocks, id, tool
calls, additional kwargs, response metadata...) is kept in the stored message's metadata, from
which it is rebuilt exactly. A list of messages is stored in one round trip (per batch of
`message_batch_size`); the session is created on first use.

Async methods run on the caller's loop (the bridge's). The sync ones are for code on other
threads: they run the async ones on the bridge's event loop and wait; called on that loop itself
they would deadlock, so they raise instead.

Example:
    >>> history = FFChatMessageHistory(bridge, "alice", "trip-planning")
    >>> await history.aadd_messages([HumanMessage("Trams in Lisbon?"), AIMessage("Line 28.")])
    >>> [m.content for m in await history.aget_messages()]
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Coroutine, Sequence, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from engine.models import validate_id

from .errors import StorageError

_T = TypeVar("_T")
_ROLE_OF_TYPE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_KEY = "langchain"  # the metadata key holding the whole LangChain message
_PAGE = 1000


class FFChatMessageHistory(BaseChatMessageHistory):
    """The messages of one session (`session_id`) of one user, stored by the bridge."""

    def __init__(self, bridge: Any, user_id: str, session_id: str, title: str | None = None) -> None:
        validate_id(user_id, "user")
        validate_id(session_id, "session")
        self.bridge = bridge
        self.user_id = user_id
        self.session_id = session_id
        self.title = title or f"LangChain session {session_id}"
        self._known_session = False

    # ------------------------------------------------------------------ async
    async def aget_messages(self) -> list[BaseMessage]:
        """Every message of the session, oldest first ([] if the session does not exist yet)."""
        data, rebuilt, offset = self.bridge.get_data_layer(), [], 0
        while True:
            page = await data.get_chat_history(self.user_id, self.session_id, limit=_PAGE, offset=offset)
            if not page["success"]:
                if page["metadata"]["error_code"] == "SESSION_NOT_FOUND":
                    return []
                raise StorageError(page["error"], error_code=page["metadata"]["error_code"])
            rebuilt += [_from_stored(message) for message in page["data"]["messages"]]
            offset += len(page["data"]["messages"])
            if not page["data"]["has_more"] or not page["data"]["messages"]:
                return rebuilt

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store `messages` in order (one round trip per batch); creates the session on first use."""
        if not messages:
            return
        await self._ensure_session()
        data = self.bridge.get_data_layer()
        stored = [_to_stored(message) for message in messages]
        size = max(1, self.bridge.settings.message_batch_size)
        for start in range(0, len(stored), size):
            result = await data.store_chat_messages(self.user_id, self.session_id, stored[start:start + size])
            if not result["success"]:
                raise StorageError(result["error"], error_code=result["metadata"]["error_code"])

    async def aclear(self) -> None:
        """Delete the session and its messages (the next add starts a new, empty one)."""
        await self.bridge.get_data_layer().storage.delete_session(self.user_id, self.session_id)
        self._known_session = False

    async def _ensure_session(self) -> None:
        if self._known_session:
            return
        storage = self.bridge.get_data_layer().storage
        if await storage.get_session(self.user_id, self.session_id) is None:
            await storage.create_session(self.user_id, self.title, session_id=self.session_id)
        self._known_session = True

    # ------------------------------------------------------------------ sync (other threads)
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return self._wait(self.aget_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self._wait(self.aadd_messages(messages))

    def clear(self) -> None:
        self._wait(self.aclear())

    def _wait(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        loop = self.bridge.event_loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            coroutine.close()
            raise RuntimeError("FFChatMessageHistory's sync methods wait for the bridge's event loop: on that "
                               "loop use aget_messages / aadd_messages / aclear instead")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _to_stored(message: BaseMessage) -> dict[str, Any]:
    """Our message: role, searchable text, and the whole LangChain message in metadata."""
    whole = message_to_dict(message)
    stored: dict[str, Any] = {"role": _ROLE_OF_TYPE.get(message.type, "user"), "content": _text_of(message),
                              "metadata": {_KEY: json.loads(json.dumps(whole, default=str))}}
    if isinstance(message.id, str):
        try:
            stored["message_id"] = validate_id(message.id, "message")
        except Exception:  # an id ours does not take: kept in metadata, a new one is given
            pass
    return stored


def _text_of(message: BaseMessage) -> str:
    """The searchable text: the message's text, else (ours refuses empty content) what it carries,
    such as the tool calls of an AI message that only calls tools. The message itself is in metadata."""
    text = message.text if isinstance(getattr(message, "text", None), str) else str(message.content)
    if text.strip():
        return text
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return "tool calls: " + ", ".join(f"{call['name']}({json.dumps(call.get('args', {}), default=str)})"
                                          for call in calls)
    return f"[empty {message.type} message]"


def _from_stored(stored: dict[str, Any]) -> BaseMessage:
    whole = (stored.get("metadata") or {}).get(_KEY)
    if whole is None:  # stored by other code: a plain message of its role
        kind = {role: kind for kind, role in _ROLE_OF_TYPE.items()}.get(stored["role"], "human")
        whole = {"type": kind, "data": {"content": stored["content"], "id": stored.get("message_id")}}
        if kind == "tool":
            whole["data"]["tool_call_id"] = (stored.get("metadata") or {}).get("tool_call_id", "")
    message = messages_from_dict([whole])[0]
    if message.id is None:
        message.id = stored.get("message_id")
    return message


__all__ = ["FFChatMessageHistory"]
