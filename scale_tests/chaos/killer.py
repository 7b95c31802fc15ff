"""The chaos killer: K times it picks a shard (seeded), reads the worker pid from the shard actor's
`probe()`, sends SIGKILL, and measures the time from the kill until a history read on that shard
succeeds and the probe answers from a new pid with the log open."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from typing import Any

from .result import KillRecord, Run
from .writers import USER


async def killer(run: Run, bridge: Any, shard_sessions: dict[int, str], kills: int, rng: random.Random,
                 recovery_limit_s: float, progress: bool) -> None:
    """Once the writers are storing, kill `kills` times; stop at a shard that is not serving or not
    back within `recovery_limit_s` (noted in the result's shards_not_back)."""
    result = run.result
    if not await _writers_started(run, recovery_limit_s):
        return
    for number in range(kills):
        await asyncio.sleep(rng.uniform(0.05, 0.3))  # let writes flow between kills
        index = rng.randrange(bridge.backend.shard_count)
        record = await _kill_and_recover(run, bridge, index, shard_sessions[index], number, recovery_limit_s)
        if record is None or record.new_pid is None:
            return
        result.pid_changes += 1
        if progress and (number + 1) % 10 == 0:
            print(f"   {result.mode}: {number + 1}/{kills} kills, {run.acknowledged} acknowledged, "
                  f"last recovery {record.recovery_ms:.0f} ms", file=sys.stderr, flush=True)


async def _writers_started(run: Run, limit_s: float) -> bool:
    """Wait until the writers have acknowledged a few messages each, so writes flow before the first kill."""
    ends = time.monotonic() + limit_s
    while run.acknowledged < 4 * run.result.writers:
        if time.monotonic() > ends:
            run.result.shards_not_back.append(f"writers acknowledged only {run.acknowledged} messages before any kill")
            return False
        await asyncio.sleep(0.01)
    return True


async def _kill_and_recover(run: Run, bridge: Any, index: int, session_id: str, number: int,
                            limit_s: float) -> KillRecord | None:
    """SIGKILL shard `index`'s worker and wait for a new one; None: the shard was not serving to begin with."""
    result = run.result
    old_pid = await serving_pid(bridge.backend.transport.shards[index], limit_s)
    if old_pid is None:
        result.shards_not_back.append(f"shard {index}: not serving before kill {number + 1}")
        return None
    acknowledged_before = run.acknowledged
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    result.kills += 1
    result.kills_per_shard[index] += 1
    new_pid, recovery_ms = await _recovery(bridge, index, session_id, old_pid, killed_at, limit_s)
    record = KillRecord(index, old_pid, new_pid, recovery_ms, acknowledged_before)
    result.kill_log.append(record)
    if new_pid is None:
        result.shards_not_back.append(f"shard {index}: not back {limit_s:.0f} s after kill {number + 1}")
    return record


async def _recovery(bridge: Any, index: int, session_id: str, old_pid: int, killed_at: float,
                    limit_s: float) -> tuple[int | None, float | None]:
    """(new pid, ms from the kill until a read of `session_id` succeeded with a new worker serving);
    (None, None) if that did not happen within `limit_s`."""
    data = bridge.get_data_layer()
    while time.monotonic() - killed_at < limit_s:
        page = await data.get_chat_history(USER, session_id, limit=1, latest=True)
        if page["success"]:
            served_at = time.monotonic()
            facts = await _probe(bridge.backend.transport.shards[index])
            if facts and facts.get("log_open") and facts.get("pid") not in (None, old_pid):
                return int(facts["pid"]), (served_at - killed_at) * 1000
        await asyncio.sleep(0.01)
    return None, None


async def _probe(handle: Any, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(handle.probe.options(concurrency_group="health").remote(), timeout=timeout_s)
    except Exception:  # a dead or restarting actor: the caller polls again
        return None


async def serving_pid(handle: Any, limit_s: float) -> int | None:
    """The pid of the shard's worker once it serves (log open), or None after `limit_s`."""
    ends = time.monotonic() + limit_s
    while time.monotonic() < ends:
        facts = await _probe(handle)
        if facts and facts.get("log_open") and facts.get("pid"):
            return int(facts["pid"])
        await asyncio.sleep(0.02)
    return None
