"""Single-operation sections: bridge start-up, the latency of each data operation, and the cache."""

from __future__ import annotations

import time
from typing import Any

from api import FFChatAppBridge

from ..measure import Figure, stats
from ..targets import OursTarget, SqliteTarget, scratch_dir
from .context import Context, check


async def _timed(coro_factory, count: int) -> tuple[list[float], list[Any]]:
    samples, results = [], []
    for i in range(count):
        started = time.perf_counter()
        results.append(await coro_factory(i))
        samples.append((time.perf_counter() - started) * 1000)
    return samples, results


# --------------------------------------------------------------------------- 1. initialization
async def initialization(ctx: Context) -> None:
    count = ctx.scale(10, 3)
    scenarios = [("minimal_config", {"performance_mode": "balanced"}), ("development_preset", "development"),
                 ("production_preset", "production"), ("high_performance_preset", "high_performance")]
    everything = []
    for name, config in scenarios:
        times = []
        for i in range(count):
            path = scratch_dir(ctx.root, f"init-{name}-{i}")
            started = time.perf_counter()
            if isinstance(config, str):
                bridge = await FFChatAppBridge.create_from_preset(config, path)
            else:
                bridge = await FFChatAppBridge.create_for_chat_app(path, config)
            times.append((time.perf_counter() - started) * 1000)
            check(bridge.is_ready, f"{name}: bridge not initialised")
            await bridge.close()
        summary = stats(times)
        everything += times
        ctx.details[f"init_{name}"] = summary
        ctx.add(Figure("initialization", f"{name} avg", "ms", summary["avg_ms"], target=1000),
                Figure("initialization", f"{name} max", "ms", summary["max_ms"], target=2000))
    baseline = []
    for i in range(count):
        started = time.perf_counter()
        store = await SqliteTarget.open(scratch_dir(ctx.root, f"init-sqlite-{i}"))
        baseline.append((time.perf_counter() - started) * 1000)
        await store.close()
    ctx.add(Figure("initialization", "bridge creation p50 (runtime up)", "ms", stats(everything)["p50_ms"],
                   baseline=stats(baseline)["p50_ms"], target=300, note="issue goal <= 300 ms"))


# --------------------------------------------------------------------------- 2. message operations
async def message_operations(ctx: Context) -> None:
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for target_class in (OursTarget, SqliteTarget):
        target = await target_class.open(scratch_dir(ctx.root, f"ops-{target_class.name}"),
                                         {"performance_mode": "speed", "cache_size_mb": 200})
        rows[target.name] = await _operation_latencies(target)
        await target.close()
    ctx.details["message_operations"] = rows
    ctx.add(*_operation_figures(rows["ours"], rows["sqlite"]))


async def _operation_latencies(target: Any) -> dict[str, dict[str, float]]:
    """Store, history (hit and miss) and search on one session; on ours also stream and health check."""
    user_id = "perf_test_user"
    session_id = await target.create_session(user_id, "Performance Session")
    store, results = await _timed(lambda i: target.store(user_id, session_id, f"Performance test message {i}"), 100)
    check(all(r["success"] for r in results), "a store failed")
    history, results = await _timed(lambda i: target.history(user_id, session_id, 20), 50)
    check(all(len(r["data"]["messages"]) == 20 for r in results), "history returned the wrong page")
    miss, _ = await _timed(lambda i: target.history(user_id, session_id, 20, offset=i), 50)
    search, results = await _timed(lambda i: target.search(user_id, "test message", 10), 20)
    check(all(r["data"]["search_metadata"]["total_matches"] == 100 for r in results),
          "search did not find every stored message")
    row = {"store": stats(store), "history_hit": stats(history), "history_miss": stats(miss), "search": stats(search)}
    if isinstance(target, OursTarget):
        row["stream_chunk"] = await _stream_chunk_latencies(target, user_id, session_id)
        health, _ = await _timed(lambda i: target.bridge.health_check(), 20)
        row["health_check"] = stats(health)
    return row


async def _stream_chunk_latencies(target: OursTarget, user_id: str, session_id: str) -> dict[str, float]:
    """The wait for each chunk of ten streamed messages, over ten streams of the session."""
    chunks: list[float] = []
    for _ in range(10):
        started = time.perf_counter()
        async for chunk in target.data.stream_conversation(user_id, session_id, chunk_size=10):
            chunks.append((time.perf_counter() - started) * 1000)
            check(chunk["success"], "a stream chunk failed")
            started = time.perf_counter()
    return stats(chunks)


def _operation_figures(ours: dict[str, dict[str, float]], base: dict[str, dict[str, float]]) -> list[Figure]:
    return [Figure("operations", "store avg", "ms", ours["store"]["avg_ms"], base["store"]["avg_ms"], 30),
            Figure("operations", "store p50", "ms", ours["store"]["p50_ms"], base["store"]["p50_ms"], 2.5,
                   note="issue goal"),
            Figure("operations", "store p95", "ms", ours["store"]["p95_ms"], base["store"]["p95_ms"], 50),
            Figure("operations", "store p99", "ms", ours["store"]["p99_ms"], base["store"]["p99_ms"]),
            Figure("operations", "history (hit) avg", "ms", ours["history_hit"]["avg_ms"],
                   base["history_hit"]["avg_ms"], 50),
            Figure("operations", "history (hit) p50", "ms", ours["history_hit"]["p50_ms"],
                   base["history_hit"]["p50_ms"], 2.0, note="issue goal"),
            Figure("operations", "history (hit) p95", "ms", ours["history_hit"]["p95_ms"],
                   base["history_hit"]["p95_ms"], 75),
            Figure("operations", "history (miss) p50", "ms", ours["history_miss"]["p50_ms"],
                   base["history_miss"]["p50_ms"]),
            Figure("operations", "history (miss) p95", "ms", ours["history_miss"]["p95_ms"],
                   base["history_miss"]["p95_ms"], 75),
            Figure("operations", "search avg", "ms", ours["search"]["avg_ms"], base["search"]["avg_ms"], 100),
            Figure("operations", "search p95", "ms", ours["search"]["p95_ms"], base["search"]["p95_ms"], 150),
            Figure("operations", "stream per chunk avg", "ms", ours["stream_chunk"]["avg_ms"], target=20),
            Figure("operations", "stream per chunk p95", "ms", ours["stream_chunk"]["p95_ms"], target=40),
            Figure("operations", "health check avg", "ms", ours["health_check"]["avg_ms"], target=10)]


# --------------------------------------------------------------------------- 5. cache
async def cache(ctx: Context) -> None:
    target = await OursTarget.open(scratch_dir(ctx.root, "cache"), {"cache_size_mb": 100,
                                                                      "performance_mode": "balanced"})
    user_id = "cache_test_user"
    session_id = await target.create_session(user_id, "Cache Session")
    for i in range(50):
        await target.store(user_id, session_id, f"Cache test message {i}")
    hits = 0
    for _ in range(100):
        result = await target.history(user_id, session_id, 10)
        hits += result["metadata"]["performance_metrics"]["cache_hit"]
    hit_times, miss_times = [], []
    for i in range(40):
        started = time.perf_counter()
        result = await target.history(user_id, session_id, 10, offset=0 if i % 2 else 1 + i)
        (hit_times if result["metadata"]["cache_hit"] else miss_times).append((time.perf_counter() - started) * 1000)
    metrics = await target.data.fetch_performance_metrics()
    await target.close()
    ctx.details["cache"] = {"hit_rate": hits / 100, "hit": stats(hit_times), "miss": stats(miss_times),
                            "cache_stats": metrics["cache_stats"]}
    ctx.add(Figure("cache", "hit rate (100 identical reads)", "%", hits, target=70, higher_is_better=True),
            Figure("cache", "hit latency avg", "ms", stats(hit_times)["avg_ms"], target=5),
            Figure("cache", "miss penalty (miss p50 - hit p50)", "ms",
                   stats(miss_times)["p50_ms"] - stats(hit_times)["p50_ms"], target=200))
