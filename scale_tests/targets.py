"""The two systems under test behind one small async interface: ours (the bridge) and SQLite."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from api import FFChatAppBridge

from .baseline import SqliteBaseline


class OursTarget:
    name = "ours"
    # How the bridges of this run reached their shards ("unix", "tcp", "ray"), by data plane.
    transports_seen: dict[str, set[str]] = {}

    def __init__(self, bridge: FFChatAppBridge) -> None:
        self.bridge = bridge
        self.data = bridge.get_data_layer()

    @classmethod
    async def open(cls, path: str, options: dict[str, Any] | None = None) -> "OursTarget":
        bridge = await FFChatAppBridge.create_for_chat_app(path, options or {"performance_mode": "speed"})
        # Let the router finish starting its spare actors before we measure: otherwise process
        # start-ups from the previous section's bridges compete with the workload for the 2 cores.
        await bridge.backend.transport.router.warm.remote()
        cls.transports_seen.setdefault(bridge.data_plane, set()).update(t for t, _ in bridge.backend.transports())
        return cls(bridge)

    async def create_session(self, user_id: str, title: str) -> str:
        await self.data.storage.create_user(user_id, {"name": user_id})
        return await self.data.storage.create_session(user_id, title)

    async def store(self, user_id: str, session_id: str, content: str) -> dict[str, Any]:
        return await self.data.store_chat_message(user_id, session_id, {"role": "user", "content": content})

    async def store_batch(self, user_id: str, session_id: str, contents: list[str]) -> dict[str, Any]:
        return await self.data.store_chat_messages(user_id, session_id,
                                                   [{"role": "user", "content": c} for c in contents])

    async def history(self, user_id: str, session_id: str, limit: int, offset: int = 0) -> dict[str, Any]:
        return await self.data.get_chat_history(user_id, session_id, limit=limit, offset=offset)

    async def search(self, user_id: str, query: str, limit: int) -> dict[str, Any]:
        return await self.data.search_conversations(user_id, query, {"search_type": "text", "limit": limit})

    async def close(self) -> None:
        await self.bridge.close()


class SqliteTarget:
    name = "sqlite"

    def __init__(self, store: SqliteBaseline) -> None:
        self.db = store

    @classmethod
    async def open(cls, path: str, options: dict[str, Any] | None = None) -> "SqliteTarget":
        return cls(await SqliteBaseline.open(os.path.join(path, "sqlite")))

    async def create_session(self, user_id: str, title: str) -> str:
        return await self.db.create_session(user_id, title)

    async def store(self, user_id: str, session_id: str, content: str) -> dict[str, Any]:
        return await self.db.store_chat_message(user_id, session_id, {"role": "user", "content": content})

    async def store_batch(self, user_id: str, session_id: str, contents: list[str]) -> dict[str, Any]:
        return await self.db.store_chat_messages(user_id, session_id,
                                                    [{"role": "user", "content": c} for c in contents])

    async def history(self, user_id: str, session_id: str, limit: int, offset: int = 0) -> dict[str, Any]:
        return await self.db.get_chat_history(user_id, session_id, limit)

    async def search(self, user_id: str, query: str, limit: int) -> dict[str, Any]:
        return await self.db.search_conversations(user_id, query, limit)

    async def close(self) -> None:
        await self.db.close()


def scratch_dir(root: str, label: str) -> str:
    return tempfile.mkdtemp(prefix=f"{label}-", dir=root)
