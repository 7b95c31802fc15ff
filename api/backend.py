"""The one owner of the path to the shards: every actor handle, every `.remote()` call, and the typed
methods the rest of api uses (bridge, data layer, facade, health, transfer).

`PathBackend` routes a session's operations straight to the owning shard (one hop, coalesced by
`ShardClient`) and user-level requests to the router's fan-out. It talks to them through a
`Transport`: `ActorTransport` over Ray actor handles, or over in-process handles (actors/local.py)
that run the same router, shard actors and fan-out flows inside this process, so the api is
tested without Ray.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from typing import Any, Callable, Protocol

from engine import operations as ops
from engine.config import MB, EngineConfig
from engine.errors import BridgeClosed, EngineError, PathNotOpen, RequestTimeout, ShardUnassigned, Unavailable
from engine.metrics import path_tag
from engine.routing import shard_index_for, user_shard_index

from actors.exporter import EXPORTER, queue_sampler

from ._errors import is_retryable_ray_error, map_ray_errors
from .errors import ConfigurationError
from .retry import Retry
from .shard_client import ShardClient

_ROUTE_CACHE_ENTRIES = 100_000
CLEAR_CACHE_MAX_S = 2.0  # the sync clear_cache blocks its caller's event loop at most this long
SEARCH_PHASE_MAX_S = 5.0  # a silent shard delays a search at most this long per phase (partial results)


class Transport(Protocol):
    """How a PathBackend reaches one path's shards and router."""

    shard_count: int
    metrics_path: str | None  # the path tag of exported batch counts (None: not exported)

    async def execute(self, index: int, operations: list[ops.ShardOperation]) -> list[ops.Reply]: ...
    async def prepare(self, index: int) -> None: ...
    async def reassign(self, index: int) -> None: ...
    async def fan_out(self, request: ops.FanOutRequest, phase_timeout_s: float, total_timeout_s: float) -> Any: ...
    async def reregister(self) -> None: ...
    def transports(self) -> list[tuple[str, str | None]]: ...
    def router_transport(self) -> tuple[str, str | None]: ...
    async def probe(self, index: int) -> dict[str, Any]: ...
    async def stats(self, index: int) -> dict[str, Any]: ...
    def clear_caches(self, timeout_s: float) -> int: ...
    async def detach(self) -> None: ...


class PathBackend:
    """The shards of one storage path as seen by one bridge, through typed calls.

    Example:
        >>> reply = await backend.session(ops.Append("alice", "s1", [message]))
        >>> found = await backend.fan_out(ops.ListSessionsRequest("alice", backend.user_shard("alice")))
    """

    def __init__(self, transport: Transport, namespace: str, request_timeout_s: float) -> None:
        self.transport = transport
        self.namespace = namespace
        self.shard_count = transport.shard_count
        self.request_timeout_s = request_timeout_s
        self.clients = [ShardClient(functools.partial(transport.execute, index), index, transport.reassign,
                                    connect=functools.partial(transport.prepare, index))
                        for index in range(self.shard_count)]
        self._routes: dict[tuple[str, str], int] = {}

    def export_metrics(self, storage_path: str) -> str | None:
        """Publish batch counts per shard and transport, and the queue depths, to Ray's metrics; the
        path's metric tag, or None without a Ray runtime in this process (nothing is exported)."""
        if not EXPORTER.start():
            return None
        path = self.transport.metrics_path = path_tag(storage_path)
        EXPORTER.add_sampler(queue_sampler(self, path))
        return path

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

    # ------------------------------------------------------------------ typed calls
    async def session(self, operation: ops.SessionOperation, deadline: float | None = None) -> Any:
        """Run a session operation (one with user_id and session_id) on the shard owning the session."""
        client = self.clients[self.session_shard(operation.user_id, operation.session_id)]
        return await client.call(operation, deadline or self.deadline())

    async def user(self, operation: ops.UserOperation, deadline: float | None = None) -> Any:
        """Run a user operation on the shard holding the user's profile."""
        return await self.clients[self.user_shard(operation.user_id)].call(operation, deadline or self.deadline())

    async def fan_out(self, request: ops.FanOutRequest, phase_timeout_s: float | None = None,
                      deadline: float | None = None) -> Any:
        """Answer a user-level request from every shard through the router, within the deadline;
        retries while the router restarts (re-registering the path with a new router).

        The router gets 90% of the remaining time (so it answers before the caller gives up);
        `phase_timeout_s` bounds each phase so a silent shard yields partial search results.
        """
        retry = Retry(deadline or self.deadline())
        what = f"router ({type(request).__name__})"
        while True:
            remaining = retry.remaining()
            if remaining <= 0:
                raise RequestTimeout(f"{what} did not finish before the request deadline")
            try:
                total = remaining * 0.9
                call = self.transport.fan_out(request, min(phase_timeout_s or total, total), total)
                return await asyncio.wait_for(call, timeout=remaining)
            except asyncio.TimeoutError:
                raise RequestTimeout(f"{what} did not finish before the request deadline") from None
            except PathNotOpen:
                await self._reregister(retry, what)
            except Unavailable as exc:
                # A shard is restarting (exact reads need every shard): retried like any restart.
                if not await retry.pause():
                    raise exc from None
            except EngineError:
                raise
            except Exception as exc:  # api boundary: transport failures are mapped here
                if not is_retryable_ray_error(exc) or not await retry.pause():
                    raise map_ray_errors(exc, what) from exc

    async def _reregister(self, retry: Retry, what: str) -> None:
        try:
            await asyncio.wait_for(self.transport.reregister(), timeout=max(0.01, retry.remaining()))
        except BridgeClosed:
            raise
        except Exception as exc:  # the router may be restarting again: retry until the deadline
            if not await retry.pause():
                raise map_ray_errors(exc, what) from exc

    def transports(self) -> list[tuple[str, str | None]]:
        """How each shard is reached now: ("unix" | "tcp" | "ray", why not direct or None)."""
        return self.transport.transports()

    def router_transport(self) -> tuple[str, str | None]:
        """How the router's fan-out is reached now, as `transports()` says it for shards."""
        return self.transport.router_transport()

    def search_phase_timeout(self) -> float:
        """How long each search phase waits for a silent shard before answering with the others."""
        return min(SEARCH_PHASE_MAX_S, self.request_timeout_s / 2.5)

    # ------------------------------------------------------------------ whole-path calls
    def clear_caches(self) -> int:
        """Empty every shard's result cache and wait until each has (sync, as the contract's
        clear_cache is: the event loop waits, at most CLEAR_CACHE_MAX_S); returns entries dropped.
        Raises RequestTimeout or the error of a shard that could not be cleared."""
        return self.transport.clear_caches(min(self.request_timeout_s, CLEAR_CACHE_MAX_S))

    async def compact_all(self) -> list[dict[str, int]]:
        """Rewrite every shard's log without deleted data, all shards at once (each blocks its own
        shard for its rewrite); one {bytes_before, bytes_after} per shard."""
        deadline = self.deadline()
        return list(await asyncio.gather(*(client.call(ops.Compact(), deadline) for client in self.clients)))

    async def embed_pending(self) -> int:
        return int(await self.fan_out(ops.EmbedPendingRequest()))

    async def probe_all(self, timeout_s: float) -> list[dict[str, Any]]:
        """Probe every shard in parallel (health concurrency group); one entry per shard."""
        async def probe(index: int) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                facts = await asyncio.wait_for(self.transport.probe(index), timeout=timeout_s)
                facts["error"] = facts.get("error")
                facts.setdefault("shard", index)
            except asyncio.TimeoutError:
                facts = {"shard": index, "unavailable": True, "error": f"no answer within {timeout_s * 1000:.0f} ms"}
            except Exception as exc:  # api boundary: a dead shard is a health fact, not a crash
                facts = {"shard": index, "unavailable": True, "error": str(map_ray_errors(exc, f"shard {index}"))}
            facts["response_time_ms"] = (time.perf_counter() - started) * 1000
            return facts
        return list(await asyncio.gather(*(probe(index) for index in range(self.shard_count))))

    async def stats_all(self, timeout_s: float) -> list[dict[str, Any] | None]:
        async def stats(index: int) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(self.transport.stats(index), timeout=timeout_s)
            except Exception:  # api boundary: missing stats are reported as None
                return None
        return list(await asyncio.gather(*(stats(index) for index in range(self.shard_count))))

    async def detach(self, timeout_s: float = 10.0) -> None:
        """Tell the router this bridge is gone (the last one releases the path's shards)."""
        await asyncio.wait_for(self.transport.detach(), timeout=timeout_s)

    async def flush_and_detach(self, timeout_s: float = 10.0) -> None:
        """Write every shard's buffered (`none`-mode) records, then detach."""
        flushes = [self.transport.execute(index, [ops.Flush()]) for index in range(self.shard_count)]
        await asyncio.wait_for(asyncio.gather(*flushes, return_exceptions=True), timeout=timeout_s)
        await self.detach(timeout_s)


class ActorTransport:
    """A path's shard actors and the router, reached through actor handles: Ray's, or in-process
    ones (actors/local.py) whose `.remote()` calls the actor object in this process.
    `wait_all(refs, timeout_s)` waits for calls synchronously (ray.get for Ray)."""

    def __init__(self, router: Any, opened: ops.PathOpened, request: ops.OpenPathRequest,
                 wait_all: Callable[[list[Any], float], list[Any]], links: list[Any], router_link: Any,
                 direct: bool) -> None:
        self.router = router
        self.router_link = router_link  # actors.direct_link.RouterLink
        self.shards = opened.shards
        self.links = links  # one actors.direct_link.ShardLink per shard
        self.shard_count = len(opened.shards)
        self.direct = direct
        self._request = request
        self._wait_all = wait_all
        self._detached = False
        self.metrics_path: str | None = None

    async def execute(self, index: int, operations: list[ops.ShardOperation]) -> list[ops.Reply]:
        # The shard the batch is for travels with it: an actor that serves another shard refuses it.
        link = self.links[index]
        if self.metrics_path is not None:
            EXPORTER.count("ffchat_shard_batches_total", (self.metrics_path, str(index), link.transport))
        replies: list[ops.Reply] = await link.execute(operations)
        return replies

    async def prepare(self, index: int) -> None:
        """Set shard `index`'s direct connection up if it is down (a failure is left to the send)."""
        await self.links[index].prepare()

    def transports(self) -> list[tuple[str, str | None]]:
        """(transport, why not direct) of each shard: "unix", "tcp" or "ray"."""
        return [(link.transport, link.fallback_reason) for link in self.links]

    def router_transport(self) -> tuple[str, str | None]:
        return self.router_link.transport, self.router_link.fallback_reason

    async def reassign(self, index: int) -> None:
        """Ask the router to give a restarted shard actor its shard back (re-registering the path
        first if the router restarted too)."""
        namespace, bridge_id = self._request.namespace, self._request.bridge_id
        try:
            await self.router.reassign.remote(namespace, index, bridge_id)
        except PathNotOpen:
            await self.reregister()
            await self.router.reassign.remote(namespace, index, bridge_id)

    async def fan_out(self, request: ops.FanOutRequest, phase_timeout_s: float, total_timeout_s: float) -> Any:
        return await self.router_link.fan_out(self._request.namespace, request, phase_timeout_s, total_timeout_s,
                                              self._request.bridge_id, self.direct)

    async def reregister(self) -> None:
        """Attach this bridge again to a router that restarted (or that forgot it): with its existing
        shard actors. Never after detach: a closed bridge must not re-open its path."""
        if self._detached:
            raise BridgeClosed("Bridge is closed")
        request = ops.OpenPathRequest(self._request.namespace, self._request.template, self.shard_count, True,
                                      self._request.compress_records, self.shards, self._request.bridge_id)
        await self.router.open_path.remote(request)

    def shard_key(self, index: int) -> tuple[str, int]:
        """(storage_path, index): which shard a call means (an actor may host several of the path)."""
        return self._request.template.storage_path, index

    async def probe(self, index: int) -> dict[str, Any]:
        probe = self.shards[index].probe.options(concurrency_group="health")
        facts: dict[str, Any] = await probe.remote(self.shard_key(index))
        return facts

    async def stats(self, index: int) -> dict[str, Any]:
        facts: dict[str, Any] = await self.shards[index].stats.remote(self.shard_key(index))
        return facts

    def clear_caches(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        refs = [handle.execute.remote([ops.ClearCache()], self.shard_key(i)) for i, handle in enumerate(self.shards)]
        dropped = 0
        for index, ref in enumerate(refs):
            try:
                replies = self._wait_all([ref], max(0.0, deadline - time.monotonic()))[0]
            except ShardUnassigned:
                continue  # a restarted actor serves no shard yet: its cache starts cold anyway
            except Exception as exc:  # api boundary: mapped to SHARD_UNAVAILABLE / TIMEOUT
                if is_retryable_ray_error(exc):
                    continue  # the actor died or is restarting: it comes back with a cold cache
                raise map_ray_errors(exc, f"clear_cache on shard {index}") from exc
            dropped += int(replies[0].unwrap())
        return dropped

    async def detach(self) -> None:
        self._detached = True
        self.metrics_path = None  # a detached path's queues are no longer sampled
        await self.router.close_path.remote(self._request.namespace, self._request.bridge_id)


async def open_path(settings: Any, namespace: str, requested: int, explicit: bool, spare: int,
                    in_process: bool = False, direct: bool = True, cpu_count: int = 0
                    ) -> tuple[PathBackend, int | None]:
    """Attach to `namespace`'s path through the runtime's router (opening it if needed): the
    bridge's backend and the router's pid. `in_process` runs router and shards inside this process
    without Ray; `direct` sends session calls over the shards' direct data plane (else over Ray
    actor calls); `cpu_count` (the runtime's CPUs) lets one actor host several shards of a path that
    has more (0: one actor per shard). Raises the router's EngineError (ShardLocked, CorruptRecord...)."""
    # Imported late: importing api starts no Ray.
    from actors.direct_link import RouterLink, ShardLink
    if in_process:
        from actors.local import local_router, wait_all
        router, direct = local_router(), False
    else:
        from actors import deploy
        router, wait_all = deploy.get_router(spare=spare, cpu_count=cpu_count or None), _ray_wait_all
    request = ops.OpenPathRequest(namespace, engine_config_for(settings), requested, explicit,
                                  settings.enable_compression, bridge_id=uuid.uuid4().hex, cpu_count=cpu_count)
    opened: ops.PathOpened = await router.open_path.remote(request)
    storage_path = request.template.storage_path
    links = [ShardLink(handle, (storage_path, index), direct) for index, handle in enumerate(opened.shards)]
    router_link = RouterLink(router, direct)
    await asyncio.gather(router_link.prepare(), *(link.prepare() for link in links))
    transport = ActorTransport(router, opened, request, wait_all, links, router_link, direct)
    return PathBackend(transport, namespace, float(settings.request_timeout_s)), opened.router_pid


def _ray_wait_all(refs: list[Any], timeout_s: float) -> list[Any]:
    import ray
    return list(ray.get(refs, timeout=timeout_s))


DATA_PLANES = ("direct", "ray")
DATA_PLANE_VARIABLE = "FFCHAT_DATA_PLANE"


def data_plane_choice(choice: str | None) -> str:
    """"direct" or "ray": the bridge's `data_plane` argument, else FFCHAT_DATA_PLANE, else "direct"."""
    value = choice if choice is not None else os.environ.get(DATA_PLANE_VARIABLE, "direct").strip().lower() or "direct"
    if value not in DATA_PLANES:
        source = "data_plane" if choice is not None else DATA_PLANE_VARIABLE
        raise ConfigurationError(f"{source} must be one of {', '.join(DATA_PLANES)}, got {value!r}",
                                 config_field="data_plane")
    return value


def engine_config_for(config: Any) -> EngineConfig:
    """The EngineConfig of a whole path (the router divides the cache over the stored shard count)."""
    return EngineConfig(
        storage_path=os.path.abspath(config.storage_path), shard_count=1,
        durability=config.resolved_durability(), max_message_bytes=config.max_message_bytes,
        cache_bytes_max=config.cache_size_mb * MB,
        max_session_bytes=config.max_session_size_mb * MB,
        compress_sealed_segments=config.enable_compression,
        max_batch_messages=max(config.message_batch_size, 1000),
        embedder=config.embedder if config.enable_vector_search else None,
    )


__all__ = ["ActorTransport", "PathBackend", "Transport", "data_plane_choice", "engine_config_for", "open_path"]
