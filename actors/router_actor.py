"""RouterActor: one per Ray runtime. Registers storage paths, lends them pooled shard actors, and fans
user-level reads and deletes out to a path's shards, merging the answers.

Partial-result policy: search waits at most `timeout_s` for each phase; shards that do not answer
are listed in `shards_failed` and the other shards' results are returned with `partial=True`.
Listings, analytics, deletes and purges need every shard: a silent shard fails the call.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from typing import Any, Callable

from engine.config import EngineConfig
from engine.errors import EngineError, PathNotOpen, ShardClosed, ShardUnassigned, UserNotFound
from engine.manifest import PathManifest
from engine.search_index import fuse_rrf, merge_ranked, merge_stats
from engine.session_store import merge_analytics


class _Path:
    """What the router knows about one open storage path."""

    def __init__(self, manifest: PathManifest, config: EngineConfig, shards: list[Any], compress: bool) -> None:
        self.manifest = manifest
        self.config = config
        self.shards = shards
        self.compress = compress
        self.attached = 0


class RouterActor:
    """The runtime's router (async actor): path registry, pool of idle shard actors, fan-out.

    `spawn(slot, node_id)` creates one shard actor, preferably on that node (deploy.py supplies it,
    so this class needs no Ray decorators).
    """

    def __init__(self, spawn: Callable[[str, str | None], Any] | None = None, spare: int = 2,
                 idle_max: int = 8) -> None:
        self._spawn = spawn
        self._spare = spare
        self._idle_max = idle_max
        self._idle: list[tuple[Any, str | None]] = []
        self._next_slot = 0
        self._incarnation = os.urandom(4).hex()
        self._paths: dict[str, _Path] = {}
        self._lock = asyncio.Lock()
        self._refill: asyncio.Task | None = None

    # ------------------------------------------------------------------ pool
    # Idle actors are kept with the node they run on, so a path's shards can be spread over nodes
    # (SPREAD alone does not separate zero-CPU actors reliably).
    async def _new_actor(self, node_id: str | None = None) -> tuple[Any, str | None]:
        assert self._spawn is not None, "no actor factory"
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        # Names carry this router incarnation: after a router restart, new pool actors must never
        # be confused with (get_if_exists) actors the previous incarnation lent to a path.
        handle = self._spawn(f"{self._incarnation}-{slot}", node_id)
        facts = await handle.ping.remote()
        return handle, facts.get("node_id")

    @staticmethod
    def _alive_nodes() -> list[str]:
        try:
            import ray
            return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))
        except Exception:  # outside Ray (unit tests)
            return []

    def _least_used(self, usage: dict[str | None, int]) -> str | None:
        nodes = self._alive_nodes()
        if not nodes:
            return None
        return min(nodes, key=lambda node: (usage.get(node, 0), node))

    async def _take(self, count: int) -> list[Any]:
        """`count` actors for a path, on as many different nodes as possible."""
        usage: dict[str | None, int] = {}
        taken: list[Any] = []
        to_start: list[str | None] = []
        for _ in range(count):
            target = self._least_used(usage)
            pick = next((i for i, (_, node) in enumerate(self._idle) if node == target), None)
            if pick is None and target is None and self._idle:
                pick = len(self._idle) - 1
            if pick is not None:
                handle, node = self._idle.pop(pick)
                taken.append(handle)
            else:
                node = target
                to_start.append(target)
            usage[node] = usage.get(node, 0) + 1
        started = await asyncio.gather(*(self._new_actor(node) for node in to_start))  # start in parallel
        taken.extend(handle for handle, _ in started)
        self._schedule_refill()
        return taken

    def _schedule_refill(self) -> None:
        if self._spawn is not None and (self._refill is None or self._refill.done()):
            self._refill = asyncio.ensure_future(self._keep_spare())

    async def _keep_spare(self) -> None:
        # Start processes ahead of need, so the next bridge finds actors ready (one at a time,
        # to leave the CPU to the traffic that is running now), spread over the nodes.
        while len(self._idle) < self._spare:
            usage: dict[str | None, int] = {}
            for _, node in self._idle:
                usage[node] = usage.get(node, 0) + 1
            self._idle.append(await self._new_actor(self._least_used(usage)))

    async def warm(self) -> int:
        """Start the spare actors now; returns how many are idle."""
        self._schedule_refill()
        if self._refill is not None:
            await self._refill
        return len(self._idle)

    # ------------------------------------------------------------------ paths
    async def open_path(self, namespace: str, template: EngineConfig, requested: int, explicit: bool,
                        compress_records: bool, shards: list[Any] | None = None) -> dict[str, Any]:
        """Attach to a path, opening it first if needed: lock it, fix its shard count, assign shards.

        `shards` re-registers a path whose actors already exist (after a router restart).
        Raises ShardLocked (another runtime holds the path), InvalidInput CONFIG_ERROR (shard count).
        """
        async with self._lock:
            known = self._paths.get(namespace)
            if known is None:
                known = await self._open(namespace, template, requested, explicit, compress_records, shards)
            elif explicit and requested != known.config.shard_count:
                raise EngineError(f"shard_count {requested} does not match the {known.config.shard_count} "
                                  f"shards stored at {template.storage_path}", "CONFIG_ERROR")
            known.attached += 1
            return {"shards": known.shards, "shard_count": known.config.shard_count, "config": known.config,
                    "attached": known.attached, "pid": os.getpid()}

    async def _open(self, namespace: str, template: EngineConfig, requested: int, explicit: bool,
                    compress_records: bool, shards: list[Any] | None) -> _Path:
        manifest = PathManifest(template.storage_path)
        count = manifest.open(requested, explicit)  # raises EngineError subclasses only
        handles: list[Any] = []
        try:
            config = template.model_copy(update={"shard_count": count,
                                                 "cache_bytes_max": template.cache_bytes_max // count})
            handles = shards if shards is not None else await self._take(count)
            outcomes = await asyncio.gather(*(h.assign.remote(config, i, compress_records, shards is None)
                                              for i, h in enumerate(handles)), return_exceptions=True)
        except BaseException:
            if shards is None:
                await self._give_back(handles)
            manifest.close()
            raise
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        # A fresh open must assign every shard (ShardLocked means another runtime holds it). An actor
        # whose open failed is stopped, never pooled; the others go back to the pool. On
        # re-registration after a router restart, a shard that is itself restarting is left for
        # `_call` to re-assign on first contact.
        if failures and shards is None:
            await self._give_back([h for h, o in zip(handles, outcomes) if not isinstance(o, BaseException)])
            for handle, outcome in zip(handles, outcomes):
                if isinstance(outcome, BaseException):
                    self._kill(handle)
            manifest.close()
            raise failures[0]
        self._paths[namespace] = path = _Path(manifest, config, handles, compress_records)
        return path

    async def close_path(self, namespace: str) -> int:
        """Detach one bridge; the last one releases the shards back to the pool. Returns bridges left."""
        async with self._lock:
            path = self._paths.get(namespace)
            if path is None:
                return 0
            path.attached -= 1
            if path.attached > 0:
                return path.attached
            del self._paths[namespace]
            await self._give_back(path.shards)
            path.manifest.close()
            return 0

    async def _give_back(self, handles: list[Any]) -> None:
        results = await asyncio.gather(*(h.release.remote() for h in handles), return_exceptions=True)
        for handle, result in zip(handles, results):
            if result is True and len(self._idle) < self._idle_max:
                try:
                    node = (await handle.ping.remote()).get("node_id")
                except Exception:  # gone meanwhile
                    continue
                self._idle.append((handle, node))
            else:
                self._kill(handle)

    @staticmethod
    def _kill(handle: Any) -> None:
        try:
            import ray
            ray.kill(handle, no_restart=True)
        except Exception:  # an actor that is already gone needs no killing
            pass

    def info(self) -> dict[str, Any]:
        return {"paths": {ns: {"attached": p.attached, "shard_count": p.config.shard_count,
                               "storage_path": p.config.storage_path} for ns, p in self._paths.items()},
                "idle": len(self._idle), "pid": os.getpid()}

    def _path(self, namespace: str) -> _Path:
        path = self._paths.get(namespace)
        if path is None:
            raise PathNotOpen(f"path {namespace} is not registered with this router")
        return path

    # ------------------------------------------------------------------ fan-out helpers
    @staticmethod
    async def _call(path: _Path, index: int, operations: list[tuple[str, tuple, dict]]) -> list[tuple[bool, Any]]:
        handle = path.shards[index]
        try:
            return await handle.execute.remote(operations)
        except ShardUnassigned:
            # The actor restarted (its node died, or it crashed) and nobody has re-assigned it yet:
            # give it its shard back (it replays the log), then answer. Idle shards heal this way too.
            await handle.assign.remote(path.config, index, path.compress, False)
            return await handle.execute.remote(operations)

    async def _fan_out(self, path: _Path, per_shard: dict[int, list[tuple[str, tuple, dict]]], timeout_s: float
                       ) -> tuple[dict[int, list[tuple[bool, Any]]], list[int]]:
        tasks = {index: asyncio.ensure_future(self._call(path, index, ops)) for index, ops in per_shard.items()}
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

    async def _all_shards(self, path: _Path, operation: tuple[str, tuple, dict], timeout_s: float,
                          extra: dict[int, list[tuple[str, tuple, dict]]] | None = None) -> dict[int, list]:
        per_shard = {i: [operation] + (extra or {}).get(i, []) for i in range(len(path.shards))}
        answers, failed = await self._fan_out(path, per_shard, timeout_s)
        if failed:
            raise ShardClosed(f"Shards {failed} did not answer within {timeout_s:.1f}s")
        error = self._first_error(answers)
        if error is not None:
            raise error
        return answers

    async def _fan_out_for_user(self, path: _Path, operation: tuple[str, tuple, dict], user_id: str,
                                user_shard: int, timeout_s: float) -> tuple[dict[int, Any], list[int]]:
        """Run `operation` on every shard (plus the user check on the profile's shard); return
        {shard: result} of the shards that answered, and the silent ones.

        With the profile's shard silent the user's existence is unknown: the caller gets the other
        shards' results (a partial answer) rather than a failure. Raises UserNotFound, the first
        operation error, or ShardClosed when no shard answered.
        """
        per_shard = {i: [operation] for i in range(len(path.shards))}
        per_shard[user_shard].append(("user_exists", (user_id,), {}))
        answers, failed = await self._fan_out(path, per_shard, timeout_s)
        if not answers:
            raise ShardClosed(f"No shard answered the search (shards {failed})")
        if user_shard not in failed and not answers[user_shard][-1][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        for results in answers.values():
            if not results[0][0]:
                raise results[0][1]
        return {i: answers[i][0][1] for i in sorted(answers)}, failed

    # ------------------------------------------------------------------ user-level operations
    async def search(self, namespace: str, user_id: str, terms: list[str], user_shard: int, window: int, offset: int, limit: int,
                     filters: dict[str, Any], sort: str, include_metadata: bool, timeout_s: float) -> dict[str, Any]:
        """Two-phase ranked search: sum corpus statistics, then score on every shard and merge top-k."""
        path = self._path(namespace)
        shard_stats, failed = await self._fan_out_for_user(path, ("search_stats", (user_id, terms), {}), user_id,
                                                           user_shard, timeout_s)
        stats = merge_stats(shard_stats.values(), terms)
        alive = sorted(shard_stats)
        phase2 = {i: [("search", (user_id, terms, stats, window, filters, sort, include_metadata), {})] for i in alive}
        answers2, failed2 = await self._fan_out(path, phase2, timeout_s)
        error = self._first_error(answers2)
        if error is not None:
            raise error
        parts = [answers2[i][0][1] for i in sorted(answers2)]
        merged = merge_ranked([part[0]["hits"] for part in parts], offset, limit, sort)
        return {"results": merged, "total": sum(part[0]["total"] for part in parts),
                "shards_failed": sorted(set(failed) | set(failed2)),
                "cache_hit": bool(parts) and all(part[1] for part in parts)}

    async def vector_search(self, namespace: str, user_id: str, vector: list[float], user_shard: int, window: int,
                            offset: int, limit: int, filters: dict[str, Any], threshold: float | None, sort: str,
                            include_metadata: bool, timeout_s: float) -> dict[str, Any]:
        """Cosine-similarity search on every shard (each embeds its queued messages first), merged."""
        operation = ("vector_search", (user_id, vector, window, filters, threshold, include_metadata, sort), {})
        results, failed = await self._fan_out_for_user(self._path(namespace), operation, user_id, user_shard,
                                                       timeout_s)
        parts = list(results.values())
        merged = merge_ranked([part["hits"] for part in parts], offset, limit, sort)
        return {"results": merged, "total": sum(part["total"] for part in parts),
                "pending": sum(part["pending"] for part in parts), "shards_failed": failed, "cache_hit": False}

    async def hybrid_search(self, namespace: str, user_id: str, terms: list[str], vector: list[float],
                            user_shard: int, window: int, offset: int, limit: int, filters: dict[str, Any],
                            threshold: float | None, include_metadata: bool, timeout_s: float) -> dict[str, Any]:
        """Text (BM25) and vector rankings fused by reciprocal rank fusion (k=60)."""
        depth = max(window, 50)
        text, vector_result = await asyncio.gather(
            self.search(namespace, user_id, terms, user_shard, depth, 0, depth, filters, "relevance",
                        include_metadata, timeout_s),
            self.vector_search(namespace, user_id, vector, user_shard, depth, 0, depth, filters, threshold,
                               "relevance", include_metadata, timeout_s))
        merged = fuse_rrf([text["results"], vector_result["results"]], offset, limit)
        return {"results": merged, "total": max(text["total"], vector_result["total"]),
                "pending": vector_result["pending"],
                "shards_failed": sorted(set(text["shards_failed"]) | set(vector_result["shards_failed"])),
                "cache_hit": False}

    async def embed_pending(self, namespace: str, timeout_s: float) -> int:
        answers = await self._all_shards(self._path(namespace), ("embed_pending", (), {}), timeout_s)
        return sum(results[0][1] for results in answers.values())

    async def list_sessions(self, namespace: str, user_id: str, user_shard: int, timeout_s: float) -> dict[str, Any]:
        answers = await self._all_shards(self._path(namespace), ("list_user_sessions", (user_id,), {}), timeout_s,
                                         {user_shard: [("user_exists", (user_id,), {})]})
        sessions = [s for i in answers for s in answers[i][0][1][0]]
        sessions.sort(key=lambda s: (s["created_at"], s["session_id"]), reverse=True)
        return {"sessions": sessions, "user_exists": answers[user_shard][1][1],
                "cache_hit": all(answers[i][0][1][1] for i in answers)}

    async def analytics(self, namespace: str, user_id: str, user_shard: int, days: int, timeout_s: float
                        ) -> dict[str, Any]:
        now = datetime.now(timezone.utc)
        end = now.timestamp()
        start = end - days * 86400
        answers = await self._all_shards(self._path(namespace), ("analytics", (user_id, start, end), {}), timeout_s,
                                         {user_shard: [("user_exists", (user_id,), {})]})
        if not answers[user_shard][1][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        parts = [answers[i][0][1][0] for i in sorted(answers)]
        return {"analytics": merge_analytics(parts, days, now), "cache_hit": all(answers[i][0][1][1] for i in answers)}

    async def delete_user(self, namespace: str, user_id: str, user_shard: int, timeout_s: float) -> dict[str, int]:
        path = self._path(namespace)
        exists = await self._call(path, user_shard, [("user_exists", (user_id,), {})])
        if not exists[0][1]:
            raise UserNotFound(f"User '{user_id}' not found")
        answers = await self._all_shards(path, ("delete_user_data", (user_id,), {}), timeout_s)
        totals = {"sessions_deleted": 0, "messages_deleted": 0}
        for results in answers.values():
            for key in totals:
                totals[key] += results[0][1][key]
        return totals

    async def purge(self, namespace: str, cutoff_epoch: float, user_id: str | None, timeout_s: float
                    ) -> dict[str, int]:
        answers = await self._all_shards(self._path(namespace), ("purge", (cutoff_epoch, user_id), {}), timeout_s)
        return {key: sum(results[0][1][key] for results in answers.values())
                for key in ("messages_deleted", "sessions_deleted")}

    async def list_users(self, namespace: str, timeout_s: float) -> list[str]:
        answers = await self._all_shards(self._path(namespace), ("list_users", (), {}), timeout_s)
        return sorted({user for results in answers.values() for user in results[0][1]})

    async def clear_cache(self, namespace: str, timeout_s: float) -> int:
        answers = await self._all_shards(self._path(namespace), ("clear_cache", (), {}), timeout_s)
        return sum(results[0][1] for results in answers.values())
