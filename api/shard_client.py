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
                 max_in_flight: int = 4, max_batch: int = 1000,
                 connect: Callable[[], Awaitable[None]] | None = None) -> None:
        self._send_batch = send  # one call carrying a batch (api.backend owns the transport)
        self._connect = connect  # sets the transport's connection up, so a send right after it does not wait
        self._recovering: dict[int, asyncio.Future[None]] = {}  # batches (by number) that failed once, retrying
        self._batch_number = 0
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

    def queued(self) -> int:
        """Calls waiting for a free slot (not sent yet)."""
        return len(self._queue)

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
            self._batch_number += 1
            asyncio.ensure_future(self._send(batch, previous, done, self._batch_number))

    async def _send(self, batch: list[_Pending], previous: asyncio.Future[None] | None,
                    done: asyncio.Future[None], number: int) -> None:
        try:
            replies = await self._execute_with_retries(batch, _Turn(previous, done, number))
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

    async def _execute_with_retries(self, batch: list[_Pending], turn: "_Turn") -> list[Reply]:
        operations = [operation for operation, _, _ in batch]
        # The batch is retried until its latest deadline; each caller stops waiting at its own.
        outcome = await self._attempt(operations, Retry(max(item[2] for item in batch)), turn)
        return [failed(outcome)] * len(batch) if isinstance(outcome, Exception) else outcome

    async def _send_in_turn(self, operations: list[ShardOperation], turn: "_Turn") -> list[Reply]:
        """Keep log order equal to submission order across failures: a retry goes after the batch
        before it has finished; a first send waits while an earlier batch is being retried. The
        connection is set up before the check, and the send follows it without a pause."""
        while True:
            if self._connect is not None:
                await self._connect()
            if turn.retrying and turn.previous is not None and not turn.previous.done():
                await asyncio.shield(turn.previous)
                continue
            earlier = [future for number, future in self._recovering.items() if number < turn.number]
            if turn.retrying or not earlier:
                break
            await asyncio.wait(earlier)
        self.batches_sent += 1
        self.operations_sent += len(operations)
        return await self._send_batch(operations)

    def _failed_once(self, turn: "_Turn") -> None:
        turn.retrying = True
        self.retries += 1
        if turn.number not in self._recovering:
            self._recovering[turn.number] = turn.done
            turn.done.add_done_callback(lambda _: self._recovering.pop(turn.number, None))

    async def _attempt(self, operations: list[ShardOperation], retry: Retry, turn: "_Turn") -> list[Reply] | Exception:
        """Send until the shard answers (its replies) or a final error (returned, not raised)."""
        while True:
            remaining = retry.remaining()
            if remaining <= 0:
                return RequestTimeout(f"shard {self.index} did not answer before the request deadline")
            try:
                return await asyncio.wait_for(self._send_in_turn(operations, turn), timeout=remaining)
            except asyncio.TimeoutError:
                return RequestTimeout(f"shard {self.index} did not answer before the request deadline")
            except ShardUnassigned as exc:
                # The actor restarted and lost its assignment: give the shard back, then retry.
                self._failed_once(turn)
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
                self._failed_once(turn)
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


class _Turn:
    """A batch's place in its client's order: the batch before it, its own completion, its number."""

    __slots__ = ("previous", "done", "number", "retrying")

    def __init__(self, previous: "asyncio.Future[None] | None", done: "asyncio.Future[None]", number: int) -> None:
        self.previous, self.done, self.number, self.retrying = previous, done, number, False
