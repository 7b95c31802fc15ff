"""Reference adapter: an embedded SQLite store with the same async calls, for same-process ratios.

WAL journal, synchronous=NORMAL, FTS5 for ranked search (bm25()), and one writer thread that
commits everything queued as one transaction (grouped commits), like a well-built embedded store.
Reads run on the caller's thread, as an embedded database's reads do.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import uuid
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (user_id TEXT, session_id TEXT, title TEXT, created_at REAL,
                                     PRIMARY KEY (user_id, session_id));
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, user_id TEXT, session_id TEXT, message_id TEXT,
                                     role TEXT, content TEXT, ts REAL);
CREATE INDEX IF NOT EXISTS messages_session ON messages (user_id, session_id, id);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content, user_id UNINDEXED);
"""


class SqliteBaseline:
    """The baseline store. `await SqliteBaseline.open(path)`, then the same calls as the benchmark uses."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: list[tuple[str, tuple, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str) -> "SqliteBaseline":
        store = cls(path)
        os.makedirs(path, exist_ok=True)
        ready = threading.Event()
        store._writer = threading.Thread(target=store._write_loop, args=(ready,), daemon=True)
        store._writer.start()
        ready.wait()
        store._reader = sqlite3.connect(os.path.join(path, "chat.db"), check_same_thread=False)
        return store

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(os.path.join(self.path, "chat.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _write_loop(self, ready: threading.Event) -> None:
        db = self._connect()
        db.executescript(_SCHEMA)
        ready.set()
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop and not self._queue:
                    break
                batch, self._queue = self._queue, []
            results = []
            db.execute("BEGIN")
            for kind, args, _, _ in batch:
                results.append(self._apply(db, kind, args))
            db.execute("COMMIT")
            for (_, _, future, loop), result in zip(batch, results):
                loop.call_soon_threadsafe(_resolve, future, result)
        db.close()

    @staticmethod
    def _apply(db: sqlite3.Connection, kind: str, args: tuple) -> Any:
        if kind == "session":
            db.execute("INSERT OR IGNORE INTO sessions VALUES (?, ?, ?, ?)", (*args, time.time()))
            return args[1]
        user_id, session_id, messages = args
        ids = []
        for role, content, message_id in messages:
            cursor = db.execute("INSERT INTO messages (user_id, session_id, message_id, role, content, ts) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (user_id, session_id, message_id, role, content,
                                                              time.time()))
            db.execute("INSERT INTO messages_fts (rowid, content, user_id) VALUES (?, ?, ?)",
                       (cursor.lastrowid, content, user_id))
            ids.append(message_id)
        return ids

    async def _submit(self, kind: str, args: tuple) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            self._queue.append((kind, args, future, loop))
            self._cond.notify()
        return await future

    async def create_session(self, user_id: str, title: str) -> str:
        return await self._submit("session", (user_id, "s_" + uuid.uuid4().hex[:12], title))

    async def store_chat_message(self, user_id: str, session_id: str, message: dict[str, Any]) -> dict[str, Any]:
        ids = await self._submit("messages", (user_id, session_id, [(message["role"], message["content"],
                                                                     "msg_" + uuid.uuid4().hex[:24])]))
        return {"success": True, "data": {"message_id": ids[0]}}

    async def store_chat_messages(self, user_id: str, session_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [(m["role"], m["content"], "msg_" + uuid.uuid4().hex[:24]) for m in messages]
        ids = await self._submit("messages", (user_id, session_id, rows))
        return {"success": True, "data": {"message_ids": ids, "count": len(ids)}}

    async def get_chat_history(self, user_id: str, session_id: str, limit: int = 50) -> dict[str, Any]:
        assert self._reader is not None
        rows = self._reader.execute(
            "SELECT role, content, message_id FROM (SELECT id, role, content, message_id FROM messages "
            "WHERE user_id = ? AND session_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (user_id, session_id, limit)).fetchall()
        total = self._reader.execute("SELECT count(*) FROM messages WHERE user_id = ? AND session_id = ?",
                                     (user_id, session_id)).fetchone()[0]
        return {"success": True, "data": {"messages": [{"role": r, "content": c, "message_id": m}
                                                       for r, c, m in rows], "total_count": total}}

    async def search_conversations(self, user_id: str, query: str, limit: int = 10) -> dict[str, Any]:
        assert self._reader is not None
        match = " OR ".join(f'"{term}"' for term in query.split())
        # Rank inside FTS5 (bm25, user filter on an UNINDEXED column), then fetch the top rows by id:
        # the fastest plan we found for SQLite, so the ratio is against a fair baseline.
        top = self._reader.execute(
            "SELECT rowid, bm25(messages_fts) AS score FROM messages_fts WHERE messages_fts MATCH ? AND user_id = ? "
            "ORDER BY score LIMIT ?", (match, user_id, limit)).fetchall()
        total = self._reader.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ? AND user_id = ?",
                                     (match, user_id)).fetchone()[0]
        rows = [self._reader.execute("SELECT content, session_id FROM messages WHERE id = ?", (rowid,)).fetchone()
                for rowid, _ in top]
        return {"success": True, "data": {"results": [{"content": c, "session_id": s} for c, s in rows],
                                          "search_metadata": {"total_matches": total}}}

    async def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        if self._reader is not None:
            self._reader.close()


def _resolve(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)
