"""The runtime's pool of idle shard actors and where new ones go (node placement).

Idle actors are kept with the node they run on, so a path's shards can be spread over nodes
(Ray's SPREAD alone does not separate near-zero-CPU actors reliably).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable


def distinct(handles: list[Any]) -> list[Any]:
    """Each actor once, in order: a path's handle list repeats an actor that hosts several shards.
    (By equality, not hash: Ray handles of one actor unpickled twice are equal, not identical.)"""
    unique: list[Any] = []
    for handle in handles:
        if all(handle != seen for seen in unique):
            unique.append(handle)
    return unique


def least_used(alive_nodes: list[str], usage: dict[str | None, int]) -> str | None:
    """The alive node with the fewest actors in `usage` (ties by node id); None outside Ray."""
    return min(alive_nodes, key=lambda node: (usage.get(node, 0), node)) if alive_nodes else None


def spread(idle_nodes: list[str | None], alive_nodes: list[str], count: int) -> list[tuple[int | None, str | None]]:
    """Where `count` shard actors come from: (index into the idle list, or None to start one; node).

    Each pick goes to the alive node hosting the fewest of this path's actors so far (ties by node
    id), reusing an idle actor on that node when there is one. Without node facts (outside Ray)
    idle actors are reused in order.
    """
    usage: dict[str | None, int] = {}
    free = list(range(len(idle_nodes)))
    picks: list[tuple[int | None, str | None]] = []
    for _ in range(count):
        target = least_used(alive_nodes, usage)
        pick = next((i for i in free if idle_nodes[i] == target), None)
        if pick is None and target is None and free:
            pick = free[0]  # no node facts to go by: any idle actor will do
        if pick is not None:
            free.remove(pick)
        node = idle_nodes[pick] if pick is not None else target
        picks.append((pick, node))
        usage[node] = usage.get(node, 0) + 1
    return picks


class ActorPool:
    """Idle shard actors of one Ray runtime, started ahead of need and lent to paths.

    `spawn(name, node_id)` creates an actor (deploy.py supplies it); `alive_nodes()` lists the
    nodes that can host one. Actor names carry this pool's incarnation: after a router restart,
    new pool actors must never be confused with actors the previous incarnation lent to a path.
    """

    def __init__(self, spawn: Callable[[str, str | None], Any] | None, alive_nodes: Callable[[], list[str]],
                 kill: Callable[[Any], None], spare: int = 2, idle_max: int = 8) -> None:
        self._spawn = spawn
        self._alive_nodes = alive_nodes
        self._kill = kill
        self.spare = spare
        self.idle_max = idle_max
        self.idle: list[tuple[Any, str | None]] = []
        self._next_slot = 0
        self._incarnation = os.urandom(4).hex()
        self._refill: asyncio.Task[None] | None = None
        self._owed = 0  # replacements of released actors that could not give their memory back

    async def _start(self, node_id: str | None) -> tuple[Any, str | None]:
        assert self._spawn is not None, "no actor factory"
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        handle = self._spawn(f"{self._incarnation}-{slot}", node_id)
        facts = await handle.ping.remote()
        return handle, facts.get("node_id")

    async def _nodes(self) -> list[str]:
        return await asyncio.to_thread(self._alive_nodes)  # a GCS round trip: off the event loop

    async def take(self, count: int) -> list[Any]:
        """`count` actors for a path, on as many different nodes as possible."""
        picks = spread([node for _, node in self.idle], await self._nodes(), count)
        taken = {pick: self.idle[pick][0] for pick, _ in picks if pick is not None}
        self.idle = [item for i, item in enumerate(self.idle) if i not in taken]
        started = iter(await asyncio.gather(*(self._start(node) for pick, node in picks if pick is None)))
        handles = [taken[pick] if pick is not None else next(started)[0] for pick, _ in picks]
        self.schedule_refill()
        return handles

    def schedule_refill(self) -> None:
        if self._spawn is not None and (self._refill is None or self._refill.done()):
            self._refill = asyncio.ensure_future(self._keep_spare())

    async def _keep_spare(self) -> None:
        # One at a time, to leave the CPU to the traffic that is running now, spread over the nodes.
        while len(self.idle) < self.spare or (self._owed and len(self.idle) < self.idle_max):
            usage: dict[str | None, int] = {}
            for _, node in self.idle:
                usage[node] = usage.get(node, 0) + 1
            self.idle.append(await self._start(least_used(await self._nodes(), usage)))
            self._owed = max(0, self._owed - 1)
        self._owed = 0

    async def warm(self) -> int:
        """Start the spare actors now; returns how many are idle."""
        self.schedule_refill()
        if self._refill is not None:
            await self._refill
        return len(self.idle)

    async def give_back(self, handles: list[Any]) -> None:
        """Release each actor's shards and keep it idle (up to `idle_max`); stop the others. An actor
        listed more than once (it hosts several of the path's shards) is released and kept once."""
        handles = distinct(handles)
        results = await asyncio.gather(*(h.release.remote() for h in handles), return_exceptions=True)
        for handle, result in zip(handles, results):
            if result is True and len(self.idle) < self.idle_max:
                try:
                    node = (await handle.ping.remote()).get("node_id")
                except Exception:  # gone meanwhile
                    continue
                self.idle.append((handle, node))
            else:
                # Released but still holding the closed path's memory (False): a fresh process takes
                # its place in the pool, started in the background, so the next open finds one ready.
                self._owed += result is False
                self._kill(handle)
        if self._owed:
            self.schedule_refill()

    def stop(self, handle: Any) -> None:
        self._kill(handle)
