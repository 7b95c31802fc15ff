"""Driving a fan-out: send each shard its batch of a flow's plan, in parallel, within a timeout.

Used by the router (over Ray) and by the in-process path (over local shard hosts), so the
partial-result rules of engine/fan_out.py run the same way in both.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from engine import operations as ops
from engine.fan_out import Answers, Plan, flow_for

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
