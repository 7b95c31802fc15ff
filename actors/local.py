"""Actors inside this process, without Ray: handles whose `.method.remote()` calls the undecorated
actor object directly and returns an awaitable, like a Ray actor handle does.

The api's in-process mode (tests of the api layer, tools) runs the real RouterActor and ShardActors
this way, so everything but Ray itself is exercised: typed operations, batching, fan-out flows,
fencing and recovery. Sync methods run at once (the caller's event loop waits, as a sync Ray actor
serialises calls); async methods run as tasks on the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import weakref
from typing import Any, Callable

from .router_actor import RouterActor
from .shard_actor import ShardActor


class _Method:
    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def options(self, **_: Any) -> "_Method":
        return self  # concurrency groups and the like mean nothing in one process

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """An awaitable of the call's result (an asyncio future; outside an event loop, a sync
        method's concurrent.futures future, which `wait_all` reads)."""
        if inspect.iscoroutinefunction(self._function):
            return asyncio.ensure_future(self._function(*args, **kwargs))
        try:
            future: Any = asyncio.get_running_loop().create_future()
        except RuntimeError:  # called from sync code with no running loop (e.g. clear_cache)
            future = concurrent.futures.Future()
        try:
            future.set_result(self._function(*args, **kwargs))
        except Exception as exc:  # delivered to the awaiting caller, as Ray delivers an actor's error
            future.set_exception(exc)
        return future


class LocalHandle:
    """An in-process stand-in for a Ray actor handle."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self.actor, name))


def _spawn(name: str, node_id: str | None) -> LocalHandle:
    return LocalHandle(ShardActor(name, tune_gc=False, exit_on_fatal=False))


def _release(handle: Any) -> None:
    handle.actor.release()


# One router per event loop: its lock and tasks belong to the loop that runs them (a second
# asyncio.run() in the same process gets a router of its own; the paths' file locks still keep
# two routers off one shard).
_ROUTERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LocalHandle]" = weakref.WeakKeyDictionary()


def local_router(spare: int = 0) -> LocalHandle:
    """The in-process router of the running event loop (created on first use, shared by every
    in-process bridge on that loop)."""
    loop = asyncio.get_running_loop()
    router = _ROUTERS.get(loop)
    if router is None:
        router = _ROUTERS[loop] = LocalHandle(RouterActor(_spawn, spare, max(2 * spare, 2), alive_nodes=list,
                                                          kill=_release, direct=False))
    return router


def wait_all(futures: list[Any], timeout_s: float) -> list[Any]:
    """The results of in-process calls to sync methods (they completed when they were made); a call
    still pending (a shard that never answers) is a TimeoutError, as ray.get's timeout is."""
    if not all(future.done() for future in futures):
        raise TimeoutError(f"an in-process call did not finish within {timeout_s} s")
    return [future.result() for future in futures]
