"""Plumbing between the public API and one storage path's actors: handles, shard clients, deadlines."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Awaitable

from engine.config import EngineConfig
from engine.errors import EngineError, PathNotOpen
from engine.routing import shard_index_for, user_shard_index

from ._errors import RequestTimeout, ShardUnavailable, is_retryable_ray_error, map_ray_errors
from .shard_client import ShardClient

MB = 1024 * 1024
_ROUTE_CACHE_ENTRIES = 100_000


class PathBackend:
    """The actors of one storage path as seen by one bridge.

    Session calls go straight to the owning shard (one hop, coalesced by `ShardClient`);
    user-level reads and deletes go through the router.
    """

    def __init__(self, engine_config: EngineConfig, namespace: str, router: Any, shards: list[Any],
                 request_timeout_s: float, compress_records: bool = False) -> None:
        self.engine_config = engine_config
        self.namespace = namespace
        self.router = router
        self.shards = shards
        self.shard_count = len(shards)
        self.request_timeout_s = request_timeout_s
        self.compress_records = compress_records
        self.clients = [ShardClient(handle.execute.remote, index, self._reassign) for index, handle in enumerate(shards)]
        self._routes: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ routing
    def session_shard(self, user_id: str, session_id: str) -> int:
        key = (user_id, session_id)
        index = self._routes.get(key)
        if index is None:
            if len(self._routes) >= _ROUTE_CACHE_ENTRIES:
                self._routes.clear()  # a bounded memo, not an index: recomputing is always correct
            index = self._routes[key] = shard_index_for(user_id, session_id, self.shard_count)
        return index

    def user_shard(self, user_id: str) -> int:
        return user_shard_index(user_id, self.shard_count)

    def deadline(self) -> float:
        return time.monotonic() + self.request_timeout_s

    async def _reassign(self, index: int) -> None:
        """Give a restarted (unassigned) shard actor its shard back; it replays the log first."""
        await self.shards[index].assign.remote(self.engine_config, index, self.compress_records, False)

    async def _reregister(self) -> None:
        """Tell a restarted router about this path and its existing shard actors."""
        template = self.engine_config.model_copy(
            update={"cache_bytes_max": self.engine_config.cache_bytes_max * self.shard_count})
        await self.router.open_path.remote(self.namespace, template, self.shard_count, True, self.compress_records,
                                           self.shards)

    # ------------------------------------------------------------------ calls
    async def shard(self, index: int, name: str, *args: Any, deadline: float | None = None) -> Any:
        return await self.clients[index].call(name, args, deadline or self.deadline())

    def session_call(self, user_id: str, session_id: str, name: str, *args: Any) -> Awaitable[Any]:
        """One hop to the shard owning (user_id, session_id); returns the awaitable of the call."""
        client = self.clients[self.session_shard(user_id, session_id)]
        return client.call(name, (user_id, session_id, *args), time.monotonic() + self.request_timeout_s)

    async def user_call(self, user_id: str, name: str, *args: Any) -> Any:
        return await self.shard(self.user_shard(user_id), name, user_id, *args)

    async def routed(self, method: str, *args: Any, fanout_timeout_s: float | None = None) -> Any:
        """Call a router method with the remaining deadline; retries while the router restarts.

        The router's fan-out timeout defaults to 90% of the remaining deadline (so it can still
        answer before the caller gives up); search passes a shorter one to return partial results.
        """
        deadline = self.deadline()
        delay = 0.02
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout(f"router call {method} did not finish before the request deadline")
            try:
                fanout = min(fanout_timeout_s or remaining, remaining * 0.9)
                ref = getattr(self.router, method).remote(self.namespace, *args, fanout)
                return await asyncio.wait_for(ref, timeout=remaining)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"router call {method} did not finish before the request deadline") from None
            except PathNotOpen:
                try:
                    await asyncio.wait_for(self._reregister(), timeout=max(0.01, deadline - time.monotonic()))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the router may be restarting again: retry until the deadline
                    if deadline - time.monotonic() <= delay:
                        raise map_ray_errors(exc, f"router ({method})") from exc
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                continue
            except EngineError:
                raise
            except Exception as exc:  # api boundary: Ray failures are mapped here
                if not is_retryable_ray_error(exc) or deadline - time.monotonic() <= delay:
                    raise map_ray_errors(exc, f"router ({method})") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def detach(self, timeout_s: float = 10.0) -> None:
        """Tell the router this bridge is gone (the last one releases the path's shards)."""
        await asyncio.wait_for(self.router.close_path.remote(self.namespace), timeout=timeout_s)

    async def flush_and_detach(self, timeout_s: float = 10.0) -> None:
        """Write every shard's buffered (`none`-mode) records, then detach."""
        flushes = [shard.execute.remote([("flush", (), {})]) for shard in self.shards]
        await asyncio.wait_for(asyncio.gather(*flushes, return_exceptions=True), timeout=timeout_s)
        await self.detach(timeout_s)

    def clear_caches(self) -> None:
        """Submit a cache clear to every shard without waiting: Ray runs a caller's calls to an actor in
        submission order, so every call issued after this sees a cold cache."""
        for handle in self.shards:
            handle.execute.remote([("clear_cache", (), {})])

    async def probe_all(self, timeout_s: float) -> list[dict[str, Any]]:
        """Probe every shard in parallel (health concurrency group); one entry per shard."""
        async def probe(index: int) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                ref = self.shards[index].probe.options(concurrency_group="health").remote()
                facts = await asyncio.wait_for(ref, timeout=timeout_s)
                facts["response_time_ms"] = (time.perf_counter() - started) * 1000
                facts["error"] = facts.get("error")
                return facts
            except asyncio.TimeoutError:
                return {"shard": index, "unavailable": True, "error": f"no answer within {timeout_s * 1000:.0f} ms",
                        "response_time_ms": (time.perf_counter() - started) * 1000}
            except Exception as exc:  # api boundary: a dead shard is a health fact, not a crash
                return {"shard": index, "unavailable": True, "error": str(map_ray_errors(exc, f"shard {index}")),
                        "response_time_ms": (time.perf_counter() - started) * 1000}
        return list(await asyncio.gather(*(probe(index) for index in range(self.shard_count))))

    async def stats_all(self, timeout_s: float) -> list[dict[str, Any] | None]:
        async def stats(index: int) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(self.shards[index].stats.remote(), timeout=timeout_s)
            except Exception:  # api boundary: missing stats are reported as None
                return None
        return list(await asyncio.gather(*(stats(index) for index in range(self.shard_count))))


async def open_path(settings: Any, namespace: str, requested: int, explicit: bool, spare: int
                    ) -> tuple[PathBackend, int | None]:
    """Attach to `namespace`'s path through the runtime's router (opening it if needed): the
    bridge's backend and the router's pid. Raises the router's EngineError (ShardLocked,
    CONFIG_ERROR for a shard-count mismatch, CorruptRecord...)."""
    from actors import deploy  # imported late: importing api starts no Ray
    router = deploy.get_router(spare=spare)
    opened = await router.open_path.remote(namespace, engine_config_for(settings, 1), requested, explicit,
                                           settings.enable_compression)
    backend = PathBackend(opened["config"], namespace, router, opened["shards"], float(settings.request_timeout_s),
                          settings.enable_compression)
    return backend, opened.get("pid")


def engine_config_for(config: Any, shard_count: int) -> EngineConfig:
    """The root EngineConfig a bridge passes to its shard actors."""
    return EngineConfig(
        storage_path=os.path.abspath(config.storage_path), shard_count=shard_count,
        durability=config.resolved_durability(), max_message_bytes=config.max_message_bytes,
        cache_bytes_max=config.cache_size_mb * MB // shard_count,
        max_session_bytes=config.max_session_size_mb * MB,
        compress_sealed_segments=True,
        max_batch_messages=max(config.message_batch_size, 1000),
        embedder=config.embedder if config.enable_vector_search else None,
    )


__all__ = ["PathBackend", "ShardUnavailable", "engine_config_for", "open_path"]
