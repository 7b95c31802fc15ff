"""Capacity: a store of many messages (1,000,000 by default; `--capacity-messages N`), 100 users x 10
sessions on 2 shards: load rate, RAM per stored message (USS of the shard and router processes), disk
per message, reopen after a clean close and after a SIGKILL of a shard process, history on hot and
cold sessions, search for a heavy user and a light one, and what the pooled processes keep after the
path is closed. Ours only: the figures describe our memory and recovery, which SQLite has no twin of.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psutil

from engine.config import MB

from ..measure import Figure, stats
from ..targets import OursTarget, scratch_dir
from .context import Context, check

USERS, SESSIONS_PER_USER, BATCH = 100, 10, 1000
WORDS = ("tram", "lisbon", "seafood", "ticket", "harbour", "museum", "sunset", "castle", "bakery", "river")


def _uss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in set(pids):
        try:
            total += psutil.Process(pid).memory_full_info().uss / MB
        except (psutil.Error, OSError):
            continue
    return total


async def _pids(target: OursTarget) -> list[int]:
    stats = await target.bridge.backend.stats_all(10.0)
    router = target.bridge._router_pid  # the bench may read the bridge's internals
    return [s["pid"] for s in stats if s and s.get("pid")] + ([router] if router else [])


def _text(number: int) -> str:
    return (f"message {number} about the {WORDS[number % 10]} and the {WORDS[(number // 10) % 10]} "
            f"near the {WORDS[(number // 100) % 10]}")


async def _load(target: OursTarget, total: int) -> tuple[list[tuple[str, str]], float]:
    """Store `total` messages over USERS x SESSIONS_PER_USER sessions (user 0 gets a tenth of them:
    the heavy user); returns the sessions and the load rate in messages/s."""
    sessions = [(f"cap_user{u}", await target.create_session(f"cap_user{u}", f"s{s}"))
                for u in range(USERS) for s in range(SESSIONS_PER_USER)]
    heavy = [pair for pair in sessions if pair[0] == "cap_user0"]
    plan = [(heavy[i % len(heavy)] if i % 10 == 0 else sessions[i % len(sessions)]) for i in range(total // BATCH)]
    started = time.perf_counter()
    for start in range(0, len(plan), 8):  # eight batches in flight: every shard busy
        results = await asyncio.gather(*(target.store_batch(user, session, [_text(n) for n in range(BATCH)])
                                         for user, session in plan[start:start + 8]))
        failed = [r["error"] for r in results if not r["success"]]
        check(not failed, f"capacity: a batch failed: {failed[:1]}")
    return sessions, total / (time.perf_counter() - started)


async def _timed(calls: list[Any]) -> list[float]:
    latencies = []
    for call in calls:
        started = time.perf_counter()
        result = await call()
        latencies.append((time.perf_counter() - started) * 1000)
        check(result["success"], f"capacity: {result.get('error')}")
    return latencies


async def _reads(ctx: Context, target: OursTarget, sessions: list[tuple[str, str]]) -> None:
    hot_user, hot_session = sessions[1]
    hot = await _timed([lambda: target.history(hot_user, hot_session, 50)] * 200)
    cold_pairs = sessions[-200:]
    target.bridge.get_data_layer().clear_cache()  # cold: nothing of these sessions is cached
    cold = await _timed([lambda pair=pair: target.history(pair[0], pair[1], 50, offset=5) for pair in cold_pairs])
    # A new query each time (an extra term nothing contains), so the shards' result cache never answers.
    heavy = await _timed([lambda i=i: target.search("cap_user0", f"message zq{i}", 10) for i in range(50)])
    light = await _timed([lambda i=i: target.search("cap_user99", f"tram castle zq{i}", 10) for i in range(50)])
    for name, values in (("history {}, hot session", hot), ("history {}, cold sessions", cold),
                         ("search {}, heavy user (all-matching)", heavy), ("search {}, light user", light)):
        figures = stats(values)
        ctx.add(Figure("capacity", name.format("p50"), "ms", figures["p50_ms"]),
                Figure("capacity", name.format("p95"), "ms", figures["p95_ms"]))


async def _reopen_after_kill(target: OursTarget, pair: tuple[str, str]) -> float:
    """SIGKILL shard 0's process; seconds until a history call on one of its sessions succeeds."""
    stats = await target.bridge.backend.stats_all(10.0)
    os.kill(stats[0]["pid"], signal.SIGKILL)
    started = time.perf_counter()
    for _ in range(600):
        result = await target.history(pair[0], pair[1], 1)
        if result["success"]:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise AssertionError("capacity: the killed shard did not come back in 30 s")


async def capacity(ctx: Context) -> None:
    total = ctx.capacity_messages or ctx.scale(1_000_000, 50_000)
    path = scratch_dir(ctx.root, "capacity")
    options = {"shard_count": 2, "durability": "flush", "cache_size_mb": 50, "message_batch_size": BATCH}
    target = await OursTarget.open(path, options)
    before = _uss_mb(await _pids(target))
    sessions, rate = await _load(target, total)
    stats = await target.bridge.backend.stats_all(10.0)
    stored = sum(s["messages"] for s in stats if s)
    check(stored == total, f"capacity: {stored} messages stored of {total}")
    loaded = _uss_mb(await _pids(target))
    disk = sum(s["log_bytes"] for s in stats if s)
    await _reads(ctx, target, sessions)
    pids = await _pids(target)
    await target.close()
    await asyncio.sleep(2.0)  # the pool stops an actor that could not give its memory back: let it go
    closed = _uss_mb(pids)
    started = time.perf_counter()
    target = await OursTarget.open(path, options)
    reopen_s = time.perf_counter() - started
    shard0 = next(pair for pair in sessions if target.bridge.backend.session_shard(*pair) == 0)
    killed_s = await _reopen_after_kill(target, shard0)
    await target.close()
    per_million = 1_000_000 / total
    ctx.details["capacity"] = {"messages": total, "uss_mb": {"before": before, "loaded": loaded, "closed": closed},
                               "disk_bytes": disk, "reopen_s": reopen_s, "after_kill_s": killed_s}
    ctx.add(Figure("capacity", f"load, batches of {BATCH}", "msg/s", rate, note=f"{total:,} messages, 2 shards"),
            Figure("capacity", "RAM per stored message", "bytes", (loaded - before) * MB / stored,
                   target=100, note="USS growth of shard + router processes; issue goal <= 100"),
            Figure("capacity", "disk per stored message", "bytes", disk / total),
            Figure("capacity", "path processes 2 s after close, USS", "MB", closed,
                   note=f"{before:.0f} MB before the load, {loaded:.0f} loaded; replaced ones count 0"),
            Figure("capacity", "reopen after a clean close", "s", reopen_s,
                   target=0.3 / per_million, note="issue goal <= 0.3 s per million messages"),
            Figure("capacity", "shard back after SIGKILL", "s", killed_s, target=2.0,
                   note="kill to first successful history call"))
