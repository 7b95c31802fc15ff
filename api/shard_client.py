"""Bridge-side client of one shard: coalesces concurrent calls into batches, bounds calls in flight,
retries through shard restarts until each call's deadline, and acknowledges in log order."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from engine.errors import BridgeClosed, RequestTimeout, ShardUnassigned, ShardUnavailable
from engine.operations import Reply, ShardOperation, failed

from ._errors import is_retryable_ray_error, map_ray_errors
from .retry import Retry

_Pending = tuple[ShardOperation, "asyncio.Future[Reply]", float]
Send = Callable[[list[ShardOperation]], Awaitable[list[Reply]]]


class ShardClient:
    """Send typed operations to one shard with group commit.

    Calls issued while `max_in_flight` batches are outstanding wait in a queue and leave together as
    the next batch (one actor call, one commit). Results are delivered in submission order, so
    acknowledgement order equals log order. Waiting counts toward each call's deadline: a call
    still queued at its deadline ends with TIMEOUT and is never sent; a call in flight ends with
    TIMEOUT at its own deadline while its batch goes on for the others. A shard that answers
    ShardUnassigned (its actor restarted) is given its shard back through `reassign`, and the batch
    is retried.
    """

    def __init__(self, send: Send, index: int, reassign: Callable[[int], Awaitable[None]] | None = None,
                 max_in_flight: int = 4, max_batch: int = 1000) -> None:
        self._send_batch = send  # one call carrying a batch (api.backend owns the transport)
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

    async def call(self, operation: ShardOperation, deadline: float) -> Any:
        """Run one shard operation; returns its value or raises its EngineError, ShardUnavailable or
        RequestTimeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._queue.append((operation, future, deadline))
        if self._in_flight < self.max_in_flight and not self._scheduled:
            # Defer to the next loop turn so calls issued in the same turn share one batch.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        # Each call ends at its own deadline, queued or in flight, whatever its batch-mates have left
        # (one timer per call; the batch's answer is ignored for a call that already ended).
        timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._end_late_call, future)
        try:
            return (await future).unwrap()
        finally:
            timer.cancel()

    def _end_late_call(self, future: "asyncio.Future[Reply]") -> None:
        if not future.done():
            future.set_result(failed(RequestTimeout(f"shard {self.index} did not answer before the request deadline")))

    def _expire_queued(self) -> None:
        """Calls whose deadline passed while queued end now with TIMEOUT (they were never sent)."""
        now = time.monotonic()
        if not any(item[2] <= now for item in self._queue):
            return
        expired = [item for item in self._queue if item[2] <= now]
        self._queue = [item for item in self._queue if item[2] > now]
        for _, future, _ in expired:
            if not future.done():
                future.set_result(failed(RequestTimeout(f"shard {self.index}: request deadline passed "
                                                        f"while waiting for a free slot")))

    def _dispatch(self) -> None:
        self._scheduled = False
        self._expire_queued()
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
            replies = await self._execute_with_retries(batch)
            if previous is not None and not previous.done():
                await asyncio.shield(previous)  # deliver acks in submission order
            for (_, future, _), reply in zip(batch, replies):
                if not future.done():
                    future.set_result(reply)
        finally:
            done.set_result(None)
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._dispatch()

    async def _execute_with_retries(self, batch: list[_Pending]) -> list[Reply]:
        operations = [operation for operation, _, _ in batch]
        # The batch is retried until its latest deadline; each caller stops waiting at its own.
        outcome = await self._attempt(operations, Retry(max(item[2] for item in batch)))
        return [failed(outcome)] * len(batch) if isinstance(outcome, Exception) else outcome

    async def _attempt(self, operations: list[ShardOperation], retry: Retry) -> list[Reply] | Exception:
        """Send until the shard answers (its replies) or a final error (returned, not raised)."""
        while True:
            remaining = retry.remaining()
            if remaining <= 0:
                return RequestTimeout(f"shard {self.index} did not answer before the request deadline")
            try:
                self.batches_sent += 1
                self.operations_sent += len(operations)
                replies: list[Reply] = await asyncio.wait_for(self._send_batch(operations), timeout=remaining)
                return replies
            except asyncio.TimeoutError:
                return RequestTimeout(f"shard {self.index} did not answer before the request deadline")
            except ShardUnassigned as exc:
                # The actor restarted and lost its assignment: give the shard back, then retry.
                self.retries += 1
                if self._reassign is None:
                    return exc
                given_back = await self._give_back(retry)
                if isinstance(given_back, Exception):
                    return given_back
                if not given_back:
                    return ShardUnavailable(f"shard {self.index} restarted and could not be re-assigned in time")
            except Exception as exc:  # api boundary: every transport failure is mapped, none escapes raw
                if not is_retryable_ray_error(exc):
                    return map_ray_errors(exc, f"shard {self.index}")
                self.retries += 1
                if not await retry.pause():
                    return ShardUnavailable(f"shard {self.index} is unavailable and did not come back in time")

    async def _give_back(self, retry: Retry) -> bool | Exception:
        """Re-assign the shard; False if the deadline passed (a failed attempt is retried by the
        caller), BridgeClosed if the bridge closed meanwhile (a closed bridge re-opens nothing)."""
        assert self._reassign is not None
        try:
            await asyncio.wait_for(self._reassign(self.index), timeout=max(0.01, retry.remaining()))
            return True
        except BridgeClosed as closed:
            return closed
        except Exception:  # the reassignment itself may hit the restart; the caller's loop retries
            return await retry.pause()
