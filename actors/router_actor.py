"""RouterActor: fans user-level reads and deletes out to every shard and merges the answers.

Partial-result policy: search waits at most `timeout_s` for each phase; shards that do not answer
are listed in `shards_failed` and the other shards' results are returned with `partial=True`.
Listings, analytics, deletes and purges need every shard: a silent shard fails the call.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from typing import Any

from engine.config import EngineConfig
from engine.errors import EngineError, ShardClosed, UserNotFound
from engine.manifest import PathManifest
from engine.search_index import merge_ranked, merge_stats
from engine.session_store import merge_analytics


class RouterActor:
    """One per storage path (async actor). Also owns the path lock and the shard-count manifest."""

    def __init__(self, storage_path: str, requested_shard_count: int, explicit: bool, namespace: str) -> None:
        self._manifest = PathManifest(storage_path)
        self._open_error: EngineError | None = None
        try:
            self.shard_count = self._manifest.open(requested_shard_count, explicit)
        except EngineError as exc:  # reported by info(): an actor whose __init__ raises cannot say why
            self._open_error, self.shard_count = exc, 0
        self._namespace = namespace
        self._shards: list[Any] | None = None
        self._attached = 0

    # ------------------------------------------------------------------ membership
    def info(self) -> dict[str, Any]:
        if self._open_error is not None:
            raise self._open_error
        return {"shard_count": self.shard_count, "attached": self._attached, "pid": os.getpid()}

    def attach(self) -> int:
        self._attached += 1
        return self._attached

    def detach(self) -> int:
        self._attached = max(0, self._attached - 1)
        return self._attached

    def set_shards(self, handles: list[Any]) -> None:
        self._shards = list(handles)

    def close(self) -> bool:
        self._manifest.close()
        return True

    # ------------------------------------------------------------------ fan-out helpers
    async def _call(self, index: int, operations: list[tuple[str, tuple, dict]]) -> list[tuple[bool, Any]]:
        assert self._shards is not None, "set_shards() must run before fan-out"
        return await self._shards[index].execute.remote(operations)

    async def _fan_out(self, per_shard: dict[int, list[tuple[str, tuple, dict]]], timeout_s: float
                       ) -> tuple[dict[int, list[tuple[bool, Any]]], list[int]]:
        tasks = {index: asyncio.ensure_future(self._call(index, ops)) for index, ops in per_shard.items()}
        done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
        for task in pending:
            task.cancel()
        answers: dict[int, list[tuple[bool, Any]]] = {}
        failed: list[int] = []
        for index, task in tasks.items():
            if task in done and task.exception() is None:
                answers[index] = task.result()
            else:
                failed.append(index)
        return answers, sorted(failed)

    @staticmethod
    def _first_error(answers: dict[int, list[tuple[bool, Any]]]) -> EngineError | None:
        for results in answers.values():
            for ok, value in results:
                if not ok:
                    return value
        return None

    async def _all_shards(self, operation: tuple[str, tuple, dict], timeout_s: float,
                          extra: dict[int, list[tuple[str, tuple, dict]]] | None = None) -> dict[int, list]:
        per_shard = {i: [operation] + (extra or {}).get(i, []) for i in range(self.shard_count)}
        answers, failed = await self._fan_out(per_shard, timeout_s)
        if failed:
            raise ShardClosed(f"Shards {failed} did not answer within {timeout_s:.1f}s")
        error = self._first_error(answers)
        if error is not None:
            raise error
        return answers

    # ------------------------------------------------------------------ user-level operations
    async def search(self, user_id: str, terms: list[str], user_shard: int, window: int, offset: int, limit: int,
                     filters: dict[str, Any], sort: str, include_metadata: bool, timeout_s: float) -> dict[str, Any]:
        """Two-phase ranked search: sum corpus statistics, then score on every shard and merge top-k."""
        phase1 = {i: [("search_stats", (user_id, terms), {})] for i in range(self.shard_count)}
        phase1[user_shard].append(("user_exists", (user_id,), {}))
        answers, failed = await self._fan_out(phase1, timeout_s)
        if user_shard in failed:
            raise ShardClosed(f"Shard {user_shard} holding user '{user_id}' did not answer")
        if not answers[user_shard][-1][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        stats = merge_stats([answers[i][0][1] for i in answers], terms)
        alive = sorted(answers)
        phase2 = {i: [("search", (user_id, terms, stats, window, filters, sort, include_metadata), {})] for i in alive}
        answers2, failed2 = await self._fan_out(phase2, timeout_s)
        error = self._first_error(answers2)
        if error is not None:
            raise error
        parts = [answers2[i][0][1] for i in sorted(answers2)]
        merged = merge_ranked([part[0]["hits"] for part in parts], offset, limit, sort)
        return {"results": merged, "total": sum(part[0]["total"] for part in parts),
                "shards_failed": sorted(set(failed) | set(failed2)),
                "cache_hit": bool(parts) and all(part[1] for part in parts), "doc_count": stats["doc_count"]}

    async def list_sessions(self, user_id: str, user_shard: int, timeout_s: float) -> dict[str, Any]:
        answers = await self._all_shards(("list_user_sessions", (user_id,), {}), timeout_s,
                                         {user_shard: [("user_exists", (user_id,), {})]})
        sessions = [s for i in answers for s in answers[i][0][1][0]]
        sessions.sort(key=lambda s: (s["created_at"], s["session_id"]), reverse=True)
        return {"sessions": sessions, "user_exists": answers[user_shard][1][1],
                "cache_hit": all(answers[i][0][1][1] for i in answers)}

    async def analytics(self, user_id: str, user_shard: int, days: int, timeout_s: float) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        end = now.timestamp()
        start = end - days * 86400
        answers = await self._all_shards(("analytics", (user_id, start, end), {}), timeout_s,
                                         {user_shard: [("user_exists", (user_id,), {})]})
        if not answers[user_shard][1][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        parts = [answers[i][0][1][0] for i in sorted(answers)]
        return {"analytics": merge_analytics(parts, days, now), "cache_hit": all(answers[i][0][1][1] for i in answers)}

    async def delete_user(self, user_id: str, user_shard: int, timeout_s: float) -> dict[str, int]:
        exists = await self._call(user_shard, [("user_exists", (user_id,), {})])
        if not exists[0][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        answers = await self._all_shards(("delete_user_data", (user_id,), {}), timeout_s)
        totals = {"sessions_deleted": 0, "messages_deleted": 0}
        for results in answers.values():
            for key in totals:
                totals[key] += results[0][1][key]
        return totals

    async def purge(self, cutoff_epoch: float, user_id: str | None, timeout_s: float) -> dict[str, int]:
        answers = await self._all_shards(("purge", (cutoff_epoch, user_id), {}), timeout_s)
        return {key: sum(results[0][1][key] for results in answers.values())
                for key in ("messages_deleted", "sessions_deleted")}

    async def list_users(self, timeout_s: float) -> list[str]:
        answers = await self._all_shards(("list_users", (), {}), timeout_s)
        return sorted({user for results in answers.values() for user in results[0][1]})

    async def clear_cache(self, timeout_s: float) -> int:
        answers = await self._all_shards(("clear_cache", (), {}), timeout_s)
        return sum(results[0][1] for results in answers.values())
