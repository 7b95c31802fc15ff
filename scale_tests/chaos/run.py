"""One durability mode's chaos run: writers store under K SIGKILLs, then a fresh bridge verifies."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from api import FFChatAppBridge

from ..measure import stats
from .killer import killer
from .result import ModeResult, Run
from .verify import verify
from .writers import create_sessions, start_writers


async def run_mode(mode: str, path: str, *, kills: int, writers: int = 16, shards: int = 2, seed: int = 1,
                   request_timeout_s: float = 1.0, rate: float = 2000.0, recovery_limit_s: float = 60.0,
                   progress: bool = False) -> ModeResult:
    """One durability mode: write under K SIGKILLs on `path` (which should be empty), then verify.

    `rate` caps the writers' total messages per second (0: as fast as they can). Without a cap the
    run feeds itself: a restart replays the whole log, so the longer the log the longer each
    recovery, and meanwhile the other shards' writers run at full speed: the logs, and with them
    the recovery times, grow without bound.
    """
    result = ModeResult(mode=mode, shards=shards, writers=writers, kills_requested=kills,
                        kills_per_shard=[0] * shards, path=path, rate_cap=rate, request_timeout_s=request_timeout_s)
    options = {"shard_count": shards, "durability": mode, "request_timeout_s": request_timeout_s,
               "performance_mode": "balanced"}
    run = Run(result)
    run.deadline_ms = request_timeout_s * 1000 + 100
    sessions = await _write_under_kills(run, path, options, seed, rate, recovery_limit_s, progress)
    _summarise(run)
    verify_started = time.monotonic()
    # The fresh bridge reads whole histories on a quiet runtime: a generous deadline, no chaos left.
    await verify(run, path, {**options, "request_timeout_s": 30.0}, sessions)
    result.verify_seconds = time.monotonic() - verify_started
    result.shards_back = not result.shards_not_back
    return result


async def _write_under_kills(run: Run, path: str, options: dict[str, Any], seed: int, rate: float,
                             recovery_limit_s: float, progress: bool) -> list[str]:
    """Writers store while the killer kills; returns the sessions written, with the bridge closed again."""
    result = run.result
    bridge = await FFChatAppBridge.create_for_chat_app(path, options)
    try:
        sessions, shard_sessions = await _prepare_sessions(run, bridge)
        rng = random.Random(f"{seed}-{result.mode}")
        started = time.monotonic()
        tasks = start_writers(run, bridge.get_data_layer(), sessions, seed, rate)
        try:
            await killer(run, bridge, shard_sessions, result.kills_requested, rng, recovery_limit_s, progress)
        finally:
            run.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.write_seconds = time.monotonic() - started
        health = await bridge.health_check()
        result.restarts_reported = [s["restarts"] for s in health["shards"]]
    finally:
        await bridge.close()
    return sessions


async def _prepare_sessions(run: Run, bridge: Any) -> tuple[list[str], dict[int, str]]:
    """Create the writers' sessions and register them in the run; see `create_sessions`."""
    sessions, shard_sessions = await create_sessions(bridge, run.result.writers, run.result.shards)
    for session_id in sessions:
        run.acked[session_id] = []
        run.batches[session_id] = []
    if run.result.mode == "none":
        # `none` writes to the OS at least every second: let the sessions reach the log, so a
        # kill can cost messages (allowed) but not a whole session's existence.
        await asyncio.sleep(1.5)
    return sessions, shard_sessions


def _summarise(run: Run) -> None:
    """Copy the writers' counts into the result and summarise the recovery times."""
    result = run.result
    result.acknowledged = run.acknowledged
    result.attempted = len(run.attempted)
    result.failures_by_code = dict(run.failures)
    result.messages_per_s = run.acknowledged / result.write_seconds if result.write_seconds else 0.0
    recoveries = [k.recovery_ms for k in result.kill_log if k.recovery_ms is not None]
    summary = stats(recoveries)
    result.recovery_ms = {"n": summary["n"], "p50": summary["p50_ms"], "p95": summary["p95_ms"],
                          "max": summary["max_ms"], "avg": summary["avg_ms"]}
