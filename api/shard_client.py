"""Bridge-side client of one shard actor: coalesces concurrent calls into batches, bounds calls in
flight, retries through shard restarts until each call's deadline, and acknowledges in log order."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Awaitable, Callable

from engine.errors import ShardUnassigned

from ._errors import RequestTimeout, ShardUnavailable, is_retryable_ray_error, map_ray_errors

_Pending = tuple[tuple[str, tuple, dict], "asyncio.Future[Any]", float]


class ShardClient:
    """Send operations to one shard actor with group commit.

    Calls issued while `max_in_flight` batches are outstanding wait in a queue and leave together as
    the next batch (one actor call, one commit). Results are delivered in submission order, so
    acknowledgement order equals log order. Waiting counts toward each call's deadline: a call
    still queued at its deadline ends with TIMEOUT, and a batch in flight ends at its earliest
    deadline (one timer per batch, not per call).
    """

    def __init__(self, send: Callable[[list[tuple[str, tuple, dict]]], Awaitable[Any]], index: int,
                 reassign: Callable[[int], Awaitable[None]] | None = None, max_in_flight: int = 4,
                 max_batch: int = 1000) -> None:
        self._call_actor = send  # one actor call carrying a batch (api.backend owns the handle)
        self.index = index
        self._reassign = reassign
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._previous: asyncio.Future[None] | None = None
        self._scheduled = False
        self.batches_sent = 0
        self.operations_sent = 0
        self.retries = 0

    async def call(self, name: str, args: tuple, deadline: float, kwargs: dict | None = None) -> Any:
        """Run one shard operation; raises its EngineError, ShardUnavailable or RequestTimeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((name, args, kwargs or {}), future, deadline))
        if not self._scheduled and self._in_flight < self.max_in_flight:
            # Defer to the next loop turn so calls issued in the same turn share one batch.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        ok, value = await future
        if ok:
            return value
        raise value

    def _dispatch(self) -> None:
        self._scheduled = False
        now = time.monotonic()
        if self._queue and self._queue[0][2] <= now:
            # Calls whose deadline passed while queued end now with TIMEOUT (they were never sent).
            expired = [item for item in self._queue if item[2] <= now]
            self._queue = [item for item in self._queue if item[2] > now]
            for _, future, _ in expired:
                if not future.done():
                    future.set_result((False, RequestTimeout(f"shard {self.index}: request deadline passed "
                                                             f"while waiting for a free slot")))
        while self._queue and self._in_flight < self.max_in_flight:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            previous = self._previous
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._previous = done
            self._in_flight += 1
            asyncio.ensure_future(self._send(batch, previous, done))

    async def _send(self, batch: list[_Pending], previous: asyncio.Future[None] | None,
                    done: asyncio.Future[None]) -> None:
        try:
            outcome = await self._execute_with_retries(batch)
            if previous is not None and not previous.done():
                await asyncio.shield(previous)  # deliver acks in submission order
            for (_, future, _), result in zip(batch, outcome):
                if not future.done():
                    future.set_result(result)
        finally:
            done.set_result(None)
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._dispatch()

    async def _execute_with_retries(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        operations = [operation for operation, _, _ in batch]
        # The batch ends at its earliest deadline: every call of a bridge has the same timeout, so
        # the others lose at most the few milliseconds they queued behind it, and none overruns.
        deadline = min(item[2] for item in batch)
        delay = 0.02
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [(False, RequestTimeout(f"shard {self.index} did not answer before the request deadline"))
                        ] * len(batch)
            try:
                self.batches_sent += 1
                self.operations_sent += len(operations)
                return await asyncio.wait_for(self._call_actor(operations), timeout=remaining)
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                return [(False, RequestTimeout(f"shard {self.index} did not answer before the request deadline"))
                        ] * len(batch)
            except ShardUnassigned:
                # The actor restarted and lost its assignment: give the shard back, then retry.
                self.retries += 1
                if self._reassign is None:
                    raise
                try:
                    await asyncio.wait_for(self._reassign(self.index), timeout=max(0.01, deadline - time.monotonic()))
                except asyncio.CancelledError:
                    raise
                except Exception:  # the reassignment itself may hit the restart; the loop retries
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                continue
            except Exception as exc:  # api boundary: every Ray failure is mapped, none escapes raw
                if not is_retryable_ray_error(exc):
                    error = map_ray_errors(exc, f"shard {self.index}")
                    return [(False, error)] * len(batch)
                self.retries += 1
                if deadline - time.monotonic() <= delay:
                    error = ShardUnavailable(f"shard {self.index} is unavailable and did not come back in time")
                    return [(False, error)] * len(batch)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.2)
