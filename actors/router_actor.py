"""RouterActor: one per Ray runtime. Registers storage paths, lends them pooled shard actors, and
answers user-level requests by fanning them out to a path's shards: the flows of engine/fan_out.py
(their partial-result policy is stated there) driven by `run_fan_out` below, which the in-process
path (actors/local.py) runs too."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, Awaitable, Callable

from engine import operations as ops
from engine.errors import PathNotOpen
from engine.fan_out import Answers, Plan, flow_for
from engine.routing import host_count

from . import wire
from .direct_server import CallServer, node_address
from .paths import OpenPath, PathRegistry
from .pool import ActorPool, distinct


ShardCall = Callable[[int, list[ops.ShardOperation]], Awaitable[list[ops.Reply]]]


async def gather_plan(plan: Plan, call: ShardCall, timeout_s: float) -> Answers:
    """Run every shard's batch of `plan` at once; shards that do not answer within `timeout_s` are
    `timed_out`, shards whose call failed are `unreachable` (their calls are cancelled, not awaited)."""
    tasks = {index: asyncio.ensure_future(call(index, batch)) for index, batch in plan.per_shard.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    answers = Answers({})
    for index, task in tasks.items():
        if task not in done:
            answers.timed_out.append(index)
        elif task.exception() is not None:
            answers.unreachable.append(index)
        else:
            answers.replies[index] = task.result()
    return answers


async def run_fan_out(request: ops.FanOutRequest, shard_count: int, call: ShardCall, phase_timeout_s: float,
                      total_timeout_s: float) -> Any:
    """Answer `request` by driving its flow: each plan it yields is sent, its answers sent back.
    Each phase waits at most `phase_timeout_s`, and all phases together `total_timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout_s
    flow = flow_for(request, shard_count)
    try:
        plan = next(flow)
        while True:
            timeout = max(0.0, min(phase_timeout_s, deadline - loop.time()))
            plan = flow.send(await gather_plan(plan, call, timeout))
    except StopIteration as finished:
        return finished.value


def _alive_nodes() -> list[str]:
    import ray
    return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))


def _node_id() -> str | None:
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _kill(handle: Any) -> None:
    import ray
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # an actor that is already gone needs no killing
        pass


class RouterActor:
    """The runtime's router (async actor): path registry, pool of idle shard actors, fan-out.

    `spawn(name, node_id)` creates one shard actor, preferably on that node (deploy.py supplies it,
    so this class needs no Ray decorators); tests pass `alive_nodes` and `kill` to run it without Ray.
    """

    def __init__(self, spawn: Callable[[str, str | None], Any] | None = None, spare: int = 2, idle_max: int = 8,
                 alive_nodes: Callable[[], list[str]] = _alive_nodes, kill: Callable[[Any], None] = _kill,
                 direct: bool = True) -> None:
        self.pool = ActorPool(spawn, alive_nodes, kill, spare, idle_max)
        self._direct = direct  # fan-outs over the shards' direct data plane (False in one process)
        self._server: CallServer | None = None
        self.registry = PathRegistry()
        self._lock = asyncio.Lock()

    async def warm(self) -> int:
        """Start the spare actors now; returns how many are idle."""
        return await self.pool.warm()

    async def open_path(self, request: ops.OpenPathRequest) -> ops.PathOpened:
        """Attach to a path, opening it first if needed. Raises ShardLocked (another runtime holds
        it), a PathConfigMismatch, or the error that kept a shard from opening (CorruptRecord...)."""
        async with self._lock:
            path = self.registry.paths.get(request.namespace)
            if path is None:
                path = self.registry.paths[request.namespace] = await self._open(request)
            else:
                self.registry.check_settings(request, path)
            path.bridges.add(request.bridge_id or uuid.uuid4().hex)  # tests attach without an id
            return ops.PathOpened(path.shards, path.config, len(path.bridges), os.getpid())

    async def _open(self, request: ops.OpenPathRequest) -> OpenPath:
        manifest, config = await PathRegistry.lock(request)
        fresh = request.shards is None
        handles: list[Any] = []
        try:
            if fresh:
                handles = await self._take(config.shard_count, request.cpu_count)
            else:  # re-registration: these actors serve the path, so none of them may stay in the pool
                handles = list(request.shards or [])
                self.pool.idle = [(h, node) for h, node in self.pool.idle if all(h != s for s in handles)]
            path = OpenPath(manifest, config, handles, request.compress_records, self._direct)
            outcomes = await asyncio.gather(*(path.assign(i, fresh) for i in range(len(handles))),
                                            return_exceptions=True)
        except BaseException:
            if fresh:
                await self.pool.give_back(handles)
            manifest.close()
            raise
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        # A fresh open must assign every shard. An actor whose open failed is stopped, never pooled;
        # the others go back to the pool. On re-registration after a router restart, a shard that
        # is itself restarting is re-assigned on first contact (OpenPath.call).
        if failures and fresh:
            await self._abandon(handles, outcomes)
            manifest.close()
            raise failures[0]
        return path

    async def _take(self, shard_count: int, cpu_count: int) -> list[Any]:
        """One handle per shard: a path with more shards than the runtime has CPUs takes one actor per
        CPU, shard i on actor i % CPUs (so the pool's spread over nodes still covers every node)."""
        hosts = await self.pool.take(host_count(shard_count, cpu_count))
        return [hosts[index % len(hosts)] for index in range(shard_count)]

    async def _abandon(self, handles: list[Any], outcomes: list[Any]) -> None:
        """After a failed fresh open: stop each actor that failed to open any of its shards (it may
        hold the others' locks in a bad state), give the others back to the pool (each actor once)."""
        failed = distinct([h for h, o in zip(handles, outcomes) if isinstance(o, BaseException)])
        await self.pool.give_back([h for h in distinct(handles) if all(h != f for f in failed)])
        for handle in failed:
            self.pool.stop(handle)

    async def close_path(self, namespace: str, bridge_id: str = "") -> int:
        """Detach one bridge; the last one releases the shards back to the pool. Returns bridges left."""
        async with self._lock:
            path = self.registry.paths.get(namespace)
            if path is None:
                return 0
            if bridge_id in path.bridges:
                path.bridges.discard(bridge_id)
            elif path.bridges:
                path.bridges.pop()  # a bridge without an id (tests): any one of them
            if path.bridges:
                return len(path.bridges)
            del self.registry.paths[namespace]
            await self.pool.give_back(path.shards)
            path.manifest.close()
            return 0

    async def reassign(self, namespace: str, index: int, bridge_id: str = "") -> None:
        """Give a restarted (unassigned) shard actor of the path its shard back."""
        await self.registry.get(namespace, bridge_id).assign(index)

    async def endpoint(self) -> wire.Endpoint:
        """Where and with which secret bridges reach `fan_out` directly (listening on this actor's
        own event loop, started on first use; handed out only through Ray)."""
        if self._server is None:
            server = CallServer(self.fan_out)
            await server.start(node_address(), _node_id())
            self._server = server
        return self._server.endpoint()

    def info(self) -> dict[str, Any]:
        return {"paths": self.registry.info(), "idle": len(self.pool.idle), "pid": os.getpid()}

    async def fan_out(self, namespace: str, request: ops.FanOutRequest, phase_timeout_s: float,
                      total_timeout_s: float, bridge_id: str = "", direct: bool = True) -> Any:
        """Answer a user-level request from every shard of the path (raises PathNotOpen after a
        router restart: the bridge re-registers the path and retries). `direct=False` sends the
        shard calls over Ray actor calls (the bench compares both)."""
        path = self.registry.get(namespace, bridge_id)

        async def call(index: int, operations: list[ops.ShardOperation]) -> list[ops.Reply]:
            return await path.call(index, operations, over_ray=not direct)
        return await run_fan_out(request, len(path.shards), call, phase_timeout_s, total_timeout_s)


__all__ = ["PathNotOpen", "RouterActor"]
