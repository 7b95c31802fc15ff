"""api.shard_client.ShardClient without Ray: batching, in-flight bound, log-order acks, deadlines, retries.

A `FakeShard` stands in for the actor: it records every batch it receives, can hold each batch until
the test releases it, and raises scripted failures. Operations are opaque strings; the client must
not look inside them.
"""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import pytest
from ray import exceptions as ray_exceptions  # exception classes only: they are built without ray.init

from api import retry
from api.shard_client import ShardClient
from engine.operations import Reply
from engine.errors import EngineError, InvalidInput, RequestTimeout, ShardUnassigned, ShardUnavailable

SLACK_S = 0.05  # how late a deadline may be observed on a busy machine


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch):
    """These tests never start Ray: any attempt fails loudly."""
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError("ShardClient tests must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)


# The only code that knows the call shape: `call(operation, deadline)` puts the operation on the wire.
def _call(client: ShardClient, operation: Any, deadline: float) -> Any:
    return client.call(operation, deadline)


def _sent(wire: Any) -> Any:
    return wire


def _in(seconds: float) -> float:
    return time.monotonic() + seconds


class FakeShard:
    """Records each batch; answers each operation with `(True, "done:<op>")` or a scripted failure.

    `hold=True` parks every batch until the test resolves `releases[i]`; `raises` lists exceptions
    the next sends raise, in order (`raise_always` raises on every send); `failing` maps an
    operation to the exception returned for it alone. `assigned=False` makes every send raise
    ShardUnassigned until `reassign` succeeds; `reassign_failures` is how many reassigns fail first.
    """

    def __init__(self, *, hold: bool = False, raises: tuple[BaseException, ...] = (),
                 raise_always: BaseException | None = None, assigned: bool = True,
                 reassign_failures: int | None = 0) -> None:
        self.hold = hold
        self.raises = list(raises)
        self.raise_always = raise_always
        self.assigned = assigned
        self.reassign_failures = reassign_failures  # None: reassign never succeeds
        self.batches: list[list[Any]] = []
        self.sent_at: list[float] = []
        self.releases: list[asyncio.Future[None]] = []
        self.failing: dict[Any, BaseException] = {}
        self.reassigned: list[int] = []

    async def send(self, operations: list[Any]) -> list[tuple[bool, Any]]:
        batch = [_sent(wire) for wire in operations]
        self.batches.append(batch)
        self.sent_at.append(time.monotonic())
        if not self.assigned:
            raise ShardUnassigned("actor serves no shard")
        if self.raises:
            raise self.raises.pop(0)
        if self.raise_always is not None:
            raise self.raise_always
        if self.hold:
            release = asyncio.get_running_loop().create_future()
            self.releases.append(release)
            await release
        return [Reply(False, self.failing[op]) if op in self.failing else Reply(True, f"done:{op}") for op in batch]

    async def reassign(self, index: int) -> None:
        self.reassigned.append(index)
        if self.reassign_failures is None or len(self.reassigned) <= self.reassign_failures:
            raise ray_exceptions.RayActorError()
        self.assigned = True


async def _turns(count: int = 5) -> None:
    """Let pending callbacks and tasks run for a few loop turns."""
    for _ in range(count):
        await asyncio.sleep(0)


async def _settle(*tasks: Any, timeout_s: float = 1.0) -> list[Any]:
    """Results (or exceptions) of `tasks`; fails instead of hanging."""
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)


# ---------------------------------------------------------------------------------------- batching
async def test_calls_issued_in_one_loop_turn_leave_as_one_batch():
    """Calls made in the same loop turn share one actor call, and each gets its own result."""
    shard = FakeShard()
    client = ShardClient(shard.send, 0)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in ("a", "b", "c")]
    assert await _settle(*tasks) == ["done:a", "done:b", "done:c"]
    assert shard.batches == [["a", "b", "c"]]
    assert (client.batches_sent, client.operations_sent, client.retries) == (1, 3, 0)


async def test_calls_made_while_all_slots_are_busy_leave_together_as_the_next_batch():
    """With max_in_flight batches outstanding, calls from later turns queue and leave as one batch."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0, max_in_flight=2)
    first = asyncio.create_task(_call(client, "a", _in(1)))
    await _turns()
    second = asyncio.create_task(_call(client, "b", _in(1)))
    await _turns()
    queued = []
    for op in ("c", "d"):
        queued.append(asyncio.create_task(_call(client, op, _in(1))))
        await _turns()
    assert shard.batches == [["a"], ["b"]]
    shard.releases[0].set_result(None)
    await _turns()
    assert shard.batches == [["a"], ["b"], ["c", "d"]]
    shard.releases[1].set_result(None)
    shard.releases[2].set_result(None)
    assert await _settle(first, second, *queued) == ["done:a", "done:b", "done:c", "done:d"]


async def test_max_batch_splits_one_turns_calls_into_several_batches():
    """A turn's calls leave in batches of at most max_batch operations, in submission order."""
    shard = FakeShard()
    client = ShardClient(shard.send, 0, max_batch=2)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in "abcde"]
    assert await _settle(*tasks) == [f"done:{op}" for op in "abcde"]
    assert shard.batches == [["a", "b"], ["c", "d"], ["e"]]
    assert (client.batches_sent, client.operations_sent) == (3, 5)


# ----------------------------------------------------------------------------------------- ordering
async def test_results_arrive_in_submission_order_when_a_later_batch_answers_first():
    """A later batch's answer is held back until every earlier batch has been acknowledged."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0, max_in_flight=2)
    acknowledged: list[str] = []
    first = asyncio.create_task(_call(client, "a", _in(1)))
    first.add_done_callback(lambda _: acknowledged.append("a"))
    await _turns()
    second = asyncio.create_task(_call(client, "b", _in(1)))
    second.add_done_callback(lambda _: acknowledged.append("b"))
    await _turns()
    assert shard.batches == [["a"], ["b"]]
    shard.releases[1].set_result(None)
    await _turns(20)
    assert acknowledged == []
    shard.releases[0].set_result(None)
    assert await _settle(first, second) == ["done:a", "done:b"]
    assert acknowledged == ["a", "b"]


async def test_a_failed_operation_fails_only_its_own_call():
    """An operation the shard answers with (False, exc) raises exc; its batch-mates succeed."""
    shard = FakeShard()
    error = InvalidInput("bad message", "INVALID_MESSAGE")
    shard.failing["b"] = error
    client = ShardClient(shard.send, 0)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in ("a", "b", "c")]
    assert await _settle(*tasks) == ["done:a", error, "done:c"]
    assert shard.batches == [["a", "b", "c"]]


# ---------------------------------------------------------------------------------------- deadlines
async def test_a_call_queued_past_its_deadline_times_out_without_being_sent():
    """A call waiting for a slot when its deadline passes ends with RequestTimeout and never reaches the shard."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0, max_in_flight=1)
    deadline = _in(0.03)
    first = asyncio.create_task(_call(client, "a", deadline))
    await _turns()
    queued = asyncio.create_task(_call(client, "b", deadline))
    results = await _settle(first, queued)
    assert [type(result) for result in results] == [RequestTimeout, RequestTimeout]
    assert shard.batches == [["a"]]
    assert client.operations_sent == 1


async def test_each_call_of_a_batch_in_flight_ends_at_its_own_deadline():
    """A batch the shard never answers: each call ends with RequestTimeout at its own deadline, so a
    call with time left is not failed early by a batch-mate whose deadline is nearly used up."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0)
    started = time.monotonic()
    ended: dict[str, float] = {}

    async def timed(operation: str, seconds: float) -> Any:
        try:
            return await _call(client, operation, _in(seconds))
        finally:
            ended[operation] = time.monotonic() - started
    results = await _settle(asyncio.create_task(timed("late", 0.2)), asyncio.create_task(timed("early", 0.03)))
    assert [type(result) for result in results] == [RequestTimeout, RequestTimeout]
    assert shard.batches == [["late", "early"]]
    assert 0.025 <= ended["early"] < 0.03 + SLACK_S and 0.195 <= ended["late"] < 0.2 + SLACK_S


async def test_a_queued_call_times_out_at_its_own_deadline_while_all_slots_are_busy():
    """a queued call with an earlier deadline than the batch in flight still ends at its own deadline."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0, max_in_flight=1)
    first = asyncio.create_task(_call(client, "a", _in(0.3)))
    await _turns()
    started = time.monotonic()
    queued = asyncio.create_task(_call(client, "b", _in(0.03)))
    try:
        done, _ = await asyncio.wait([queued], timeout=0.03 + SLACK_S)
        assert done == {queued}, f"still queued after {time.monotonic() - started:.3f} s (deadline 0.03 s)"
        assert type(queued.exception()) is RequestTimeout
        assert shard.batches == [["a"]]
    finally:
        await _settle(first, queued)


async def test_an_expired_call_queued_behind_a_live_one_does_not_fail_the_live_one():
    """a queued call whose deadline passed is dropped alone; the live call queued before it is still sent."""
    shard = FakeShard(hold=True)
    client = ShardClient(shard.send, 0, max_in_flight=1)
    first = asyncio.create_task(_call(client, "a", _in(1)))
    await _turns()
    live = asyncio.create_task(_call(client, "b", _in(1)))
    expired = asyncio.create_task(_call(client, "c", _in(0.02)))
    await asyncio.sleep(0.04)
    shard.releases[0].set_result(None)
    await _turns()
    for release in shard.releases[1:]:
        release.set_result(None)
    results = await _settle(first, live, expired)
    assert results[:2] == ["done:a", "done:b"]
    assert type(results[2]) is RequestTimeout
    assert shard.batches == [["a"], ["b"]]


# ------------------------------------------------------------------------------------------ retries
RETRYABLE = [ray_exceptions.RayActorError(), ray_exceptions.ActorUnavailableError("restarting", None),
             ray_exceptions.ObjectLostError("ab" * 14, None, "")]


@pytest.mark.parametrize("error", RETRYABLE, ids=lambda error: type(error).__name__)
async def test_a_retryable_ray_error_is_retried_until_the_send_succeeds(error):
    """A dead, restarting or lost-object failure resends the same batch, which then succeeds."""
    shard = FakeShard(raises=(error, error))
    client = ShardClient(shard.send, 0)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in ("a", "b")]
    assert await _settle(*tasks) == ["done:a", "done:b"]
    assert shard.batches == [["a", "b"]] * 3
    assert (client.batches_sent, client.operations_sent, client.retries) == (3, 6, 2)


async def test_a_retryable_ray_error_until_the_deadline_ends_as_shard_unavailable(monkeypatch):
    """A shard that stays down is resent after 20 ms, then 40 ms, and reported ShardUnavailable before the deadline."""
    monkeypatch.setattr(retry, "random", types.SimpleNamespace(random=lambda: 0.5))  # jitter factor 1.0
    shard = FakeShard(raise_always=ray_exceptions.ActorUnavailableError("restarting", None))
    client = ShardClient(shard.send, 0)
    started = time.monotonic()
    [result] = await _settle(_call(client, "a", _in(0.1)))
    assert type(result) is ShardUnavailable
    assert time.monotonic() - started < 0.1
    # Sends at 0, 20 and 60 ms; after the third only 40 ms are left, less than the next 80 ms pause.
    gaps_s = [later - earlier for earlier, later in zip(shard.sent_at, shard.sent_at[1:])]
    assert len(gaps_s) == 2 and gaps_s[0] >= 0.02 and gaps_s[1] >= 0.04
    assert (client.batches_sent, client.retries) == (3, 3)


async def test_a_retryable_error_whose_backoff_crosses_the_deadline_is_still_shard_unavailable(monkeypatch):
    """when the jittered pause would pass the deadline, the call ends ShardUnavailable, not RequestTimeout."""
    monkeypatch.setattr(retry, "random", types.SimpleNamespace(random=lambda: 0.999))  # pause = 29.98 ms
    deadline = _in(0.5)

    async def send(operations: list[Any]) -> list[tuple[bool, Any]]:
        # Fail with 26 ms left: more than the 20 ms first delay, less than its 29.98 ms jittered pause.
        await asyncio.sleep(max(0.0, deadline - 0.026 - time.monotonic()))
        raise ray_exceptions.RayActorError()

    client = ShardClient(send, 0)
    [result] = await _settle(_call(client, "a", deadline))
    assert type(result) is ShardUnavailable


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("boom"), EngineError),
    (ray_exceptions.GetTimeoutError("late"), RequestTimeout),
    (InvalidInput("bad", "INVALID_ARGUMENT"), InvalidInput),
], ids=["other", "get_timeout", "engine_error"])
async def test_a_non_retryable_error_is_mapped_once_without_retrying(error, expected):
    """A non-retryable failure of the send is mapped (engine errors pass through) and not resent."""
    shard = FakeShard(raise_always=error)
    client = ShardClient(shard.send, 0)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in ("a", "b")]
    results = await _settle(*tasks)
    assert [type(result) for result in results] == [expected, expected]
    if expected is EngineError:
        assert results[0].code == "STORAGE_ERROR" and str(results[0]) == "shard 0 failed: RuntimeError: boom"
    if expected is InvalidInput:
        assert results[0] is error
    assert shard.batches == [["a", "b"]]
    assert client.retries == 0


# ------------------------------------------------------------------------------------------ restarts
async def test_an_unassigned_shard_is_reassigned_then_the_batch_is_resent():
    """ShardUnassigned from the send calls reassign(index) once, then the same batch succeeds."""
    shard = FakeShard(assigned=False)
    client = ShardClient(shard.send, 3, reassign=shard.reassign)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in ("a", "b")]
    assert await _settle(*tasks) == ["done:a", "done:b"]
    assert shard.reassigned == [3]
    assert shard.batches == [["a", "b"]] * 2
    assert (client.batches_sent, client.operations_sent, client.retries) == (2, 4, 1)


async def test_a_failing_reassign_is_retried_until_it_succeeds():
    """A reassign that fails (the actor restarting again) is retried with the send until one succeeds."""
    shard = FakeShard(assigned=False, reassign_failures=2)
    client = ShardClient(shard.send, 1, reassign=shard.reassign)
    [result] = await _settle(_call(client, "a", _in(1)))
    assert result == "done:a"
    assert shard.reassigned == [1, 1, 1]
    assert shard.batches == [["a"]] * 4
    assert client.retries == 3


async def test_a_reassign_failing_until_the_deadline_ends_by_the_deadline():
    """when reassign keeps failing, the call fails at its deadline, not a backoff pause after it."""
    shard = FakeShard(assigned=False, reassign_failures=None)
    client = ShardClient(shard.send, 0, reassign=shard.reassign)
    started = time.monotonic()
    [result] = await _settle(_call(client, "a", _in(0.1)))
    elapsed_s = time.monotonic() - started
    assert isinstance(result, EngineError)
    assert len(shard.reassigned) >= 2
    assert elapsed_s < 0.1 + 0.02, f"ended {elapsed_s - 0.1:.3f} s after its deadline"


async def test_shard_unassigned_without_reassign_fails_the_call_instead_of_hanging():
    """with no reassign coroutine, ShardUnassigned fails the batch's calls (SHARD_UNAVAILABLE) and nothing hangs."""
    shard = FakeShard(assigned=False)
    client = ShardClient(shard.send, 0)
    [result] = await _settle(_call(client, "a", _in(0.05)), timeout_s=0.5)
    assert isinstance(result, EngineError) and result.code == "SHARD_UNAVAILABLE"
    assert shard.batches == [["a"]]


async def test_counters_count_every_actor_call_including_resends():
    """batches_sent and operations_sent count each send attempt; retries counts each resend."""
    shard = FakeShard(assigned=False, raises=(ray_exceptions.RayActorError(),))
    client = ShardClient(shard.send, 0, reassign=shard.reassign)
    tasks = [asyncio.create_task(_call(client, op, _in(1))) for op in "abc"]
    assert await _settle(*tasks) == ["done:a", "done:b", "done:c"]
    # ShardUnassigned (reassign, resend), then RayActorError (back off, resend), then success.
    assert shard.batches == [["a", "b", "c"]] * 3
    assert (client.batches_sent, client.operations_sent, client.retries) == (3, 9, 2)


# ---------------------------------------------------------------------------------------- order
async def test_a_failed_batch_is_committed_before_any_later_one():
    """Batch A fails (its connection broke) while B is in flight behind it: A's retry is committed
    before B, and a batch C submitted meanwhile waits for A; the shard's commit order is A, B, C."""
    from engine.errors import ConnectionLost
    committed: list[Any] = []
    first_attempt = {"a": True}
    b_sent = asyncio.Event()

    async def send(operations):
        if operations == ["a"] and first_attempt.pop("a", False):
            await b_sent.wait()  # B is on the wire when A's connection breaks
            raise ConnectionLost("connection broke")
        if operations == ["b"]:
            b_sent.set()
            if not committed:  # B must not commit before A: fail it too, as the same break would
                raise ConnectionLost("connection broke")
        committed.append(operations[0])
        return [Reply(True, f"done:{operations[0]}")]
    client = ShardClient(send, 0)
    first = asyncio.create_task(_call(client, "a", _in(2)))
    await _turns()
    second = asyncio.create_task(_call(client, "b", _in(2)))
    await _turns()
    third = asyncio.create_task(_call(client, "c", _in(2)))
    assert await _settle(first, second, third, timeout_s=3) == ["done:a", "done:b", "done:c"]
    assert committed == ["a", "b", "c"]
