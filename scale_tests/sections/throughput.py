"""Load sections: throughput under concurrent, mixed and bulk workloads, and scalability as the load grows."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ..measure import Figure, stats
from ..targets import OursTarget, SqliteTarget, scratch_dir
from .context import Context, check


# --------------------------------------------------------------------------- 3. throughput
async def _users(target: Any, count: int, prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}_{i}", await target.create_session(f"{prefix}_{i}", f"Session {i}")) for i in range(count)]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def throughput_of(ctx: Context, target: Any) -> dict[str, Any]:
    """Each workload runs `repeats` times (fresh sessions each time) and reports its median run: a
    single run is too short to be one sample on a shared machine."""
    repeats = ctx.scale(5, 3)
    rng = random.Random(ctx.seed)
    runs: dict[str, list[float]] = {name: [] for name in ("concurrent_doc", "concurrent_all", "mixed", "bulk",
                                                          "bulk_batch_ms", "ops_1000", "ops_1000_p95")}
    for repeat in range(repeats):
        users = await _users(target, 10, f"throughput_user_r{repeat}")
        runs["concurrent_doc"].append(await _sequential_per_user(target, users))
        runs["concurrent_all"].append(await _all_at_once(target, users))
        runs["mixed"].append(await _mixed(target, users, rng))
        bulk, bulk_batch_ms = await _bulk(ctx, target, repeat)
        runs["bulk"].append(bulk)
        runs["bulk_batch_ms"].append(bulk_batch_ms)
        ops, ops_p95 = await _ops_1000(target, users)
        runs["ops_1000"].append(ops)
        runs["ops_1000_p95"].append(ops_p95)
    out: dict[str, Any] = {name: _median(values) for name, values in runs.items()}
    out.update(repeats=repeats, runs={name: runs[name] for name in ("concurrent_doc", "concurrent_all", "mixed", "bulk",
                                                                    "ops_1000")})
    return out


async def _sequential_per_user(target: Any, users: list[tuple[str, str]]) -> float:
    """The document's method: 10 users concurrently, each storing 50 messages one after another; msg/s."""
    async def sequential(user: tuple[str, str]) -> int:
        return sum([(await target.store(user[0], user[1], f"Throughput test {i}"))["success"]
                    for i in range(50)])
    started = time.perf_counter()
    stored = sum(await asyncio.gather(*(sequential(u) for u in users)))
    rate = stored / (time.perf_counter() - started)
    check(stored == 500, "concurrent stores lost messages")
    return rate


async def _all_at_once(target: Any, users: list[tuple[str, str]]) -> float:
    """All 500 stores started together; msg/s. Then every session must hold both workloads' 100."""
    started = time.perf_counter()
    results = await asyncio.gather(*(target.store(u, s, f"All at once {i}") for u, s in users for i in range(50)))
    rate = len(results) / (time.perf_counter() - started)
    check(all(r["success"] for r in results), "an all-at-once store failed")
    for user_id, session_id in users:
        check((await target.history(user_id, session_id, 1))["data"]["total_count"] == 100, "stores lost")
    return rate


async def _mixed(target: Any, users: list[tuple[str, str]], rng: random.Random) -> float:
    """70 stores, 20 history reads and 10 searches at once; op/s."""
    operations = [target.store(*rng.choice(users), "Mixed workload test") for _ in range(70)]
    operations += [target.history(*rng.choice(users), 10) for _ in range(20)]
    operations += [target.search(rng.choice(users)[0], "test", 5) for _ in range(10)]
    started = time.perf_counter()
    mixed = await asyncio.gather(*operations, return_exceptions=True)
    rate = len([r for r in mixed if not isinstance(r, Exception)]) / (time.perf_counter() - started)
    check(all(not isinstance(r, Exception) and r["success"] for r in mixed), "a mixed operation failed")
    return rate


async def _bulk(ctx: Context, target: Any, repeat: int) -> tuple[float, float]:
    """Batches of 200 into one fresh session, all at once; (msg/s, ms per batch)."""
    bulk_total = ctx.scale(10_000, 2_000)
    bulk_user = await _users(target, 1, f"bulk_user_r{repeat}")
    started = time.perf_counter()
    bulk = await asyncio.gather(*(target.store_batch(*bulk_user[0], [f"Bulk message {i + j}" for j in range(200)])
                                  for i in range(0, bulk_total, 200)))
    elapsed = time.perf_counter() - started
    check(all(r["success"] for r in bulk), "a bulk batch failed")
    check((await target.history(*bulk_user[0], 1))["data"]["total_count"] == bulk_total, "bulk insert lost")
    return bulk_total / elapsed, elapsed * 1000 / len(bulk)


async def _ops_1000(target: Any, users: list[tuple[str, str]]) -> tuple[float, float]:
    """1000 concurrent operations, 70% stores, 20% history reads, 10% searches; (op/s, p95 ms)."""
    latencies: list[float] = []

    async def one(i: int) -> Any:
        started = time.perf_counter()
        user, session = users[i % len(users)]
        if i % 10 < 7:
            result = await target.store(user, session, f"op {i}")
        elif i % 10 < 9:
            result = await target.history(user, session, 10)
        else:
            result = await target.search(user, "test", 5)
        latencies.append((time.perf_counter() - started) * 1000)
        return result["success"]
    started = time.perf_counter()
    ok = await asyncio.gather(*(one(i) for i in range(1000)))
    rate = 1000 / (time.perf_counter() - started)
    check(all(ok), "one of 1000 concurrent operations failed")
    return rate, stats(latencies)["p95_ms"]


async def throughput(ctx: Context) -> None:
    rows = {}
    for target_class in (OursTarget, SqliteTarget):
        target = await target_class.open(scratch_dir(ctx.root, f"tp-{target_class.name}"),
                                         {"performance_mode": "speed", "cache_size_mb": 300,
                                          "message_batch_size": 200})
        rows[target.name] = await throughput_of(ctx, target)
        await target.close()
    ours, base = rows["ours"], rows["sqlite"]
    ctx.details["throughput"] = rows
    ctx.add(Figure("throughput", "10 users x 50 stores (doc method)", "msg/s", ours["concurrent_doc"],
                   base["concurrent_doc"], 500, True),
            Figure("throughput", "500 stores all concurrent", "msg/s", ours["concurrent_all"],
                   base["concurrent_all"], 25_000, True, "issue goal"),
            Figure("throughput", "mixed 70/20/10", "op/s", ours["mixed"], base["mixed"], 300, True),
            Figure("throughput", "bulk insert (batches of 200)", "msg/s", ours["bulk"], base["bulk"], 50_000, True,
                   "issue goal; document: 2000"),
            Figure("throughput", "bulk per batch", "ms", ours["bulk_batch_ms"], base["bulk_batch_ms"], 50),
            Figure("throughput", "1000 concurrent ops", "op/s", ours["ops_1000"], base["ops_1000"], 1000, True),
            Figure("throughput", "1000 concurrent ops p95", "ms", ours["ops_1000_p95"], base["ops_1000_p95"], 200))


# --------------------------------------------------------------------------- 6. scalability
async def _scale_once(target, factor: int) -> dict[str, float]:
    users = await _users(target, factor * 10, f"scale_user_{factor}")
    latencies: list[float] = []

    async def store(user_id: str, session_id: str, j: int):
        started = time.perf_counter()
        result = await target.store(user_id, session_id, f"Scale test message {j}")
        latencies.append((time.perf_counter() - started) * 1000)
        return result["success"]
    started = time.perf_counter()
    ok = await asyncio.gather(*(store(u, s, j) for u, s in users for j in range(10)))
    duration = time.perf_counter() - started
    check(all(ok), f"{factor}x: a store failed")
    for user_id, session_id in users[:: max(1, len(users) // 10)]:
        check((await target.history(user_id, session_id, 20))["data"]["total_count"] == 10, f"{factor}x: lost")
    operations = len(ok)
    return {"throughput": operations / duration, "doc_latency_ms": duration / operations * 1000,
            **{k: v for k, v in stats(latencies).items() if k != "n"}, "operations": operations}


async def scalability(ctx: Context) -> None:
    rows: dict[str, dict[int, dict[str, float]]] = {"ours": {}, "sqlite": {}}
    repeats = ctx.scale(5, 3)
    for factor in ctx.factors:
        for target_class in (OursTarget, SqliteTarget):
            runs = []
            for repeat in range(repeats):  # the document's workload is small: report the median run
                target = await target_class.open(scratch_dir(ctx.root, f"scale-{factor}-{target_class.name}"),
                                                 {"performance_mode": "speed", "cache_size_mb": 200,
                                                  "message_batch_size": 100})
                runs.append(await _scale_once(target, factor))
                await target.close()
            runs.sort(key=lambda run: run["throughput"])
            rows[target_class.name][factor] = {**runs[len(runs) // 2], "runs": len(runs),
                                               "throughput_all_runs": [r["throughput"] for r in runs]}
    ctx.details["scalability"] = rows
    base = rows["ours"][ctx.factors[0]]
    limits = {2: (0.8, 0.2), 5: (0.6, 0.5), 10: (0.4, 1.0)}
    for factor in ctx.factors:
        ours, sqlite = rows["ours"][factor], rows["sqlite"][factor]
        ctx.add(Figure("scalability", f"{factor}x throughput", "msg/s", ours["throughput"], sqlite["throughput"],
                       higher_is_better=True),
                Figure("scalability", f"{factor}x real latency p50", "ms", ours["p50_ms"], sqlite["p50_ms"]),
                Figure("scalability", f"{factor}x real latency p95", "ms", ours["p95_ms"], sqlite["p95_ms"],
                       target=2 * base["p95_ms"] if factor != ctx.factors[0] else None,
                       note="issue goal: <= 2x the 1x p95" if factor != ctx.factors[0] else ""),
                Figure("scalability", f"{factor}x real latency p99", "ms", ours["p99_ms"], sqlite["p99_ms"]))
        if factor in limits and factor != ctx.factors[0]:
            min_ratio, max_increase = limits[factor]
            ctx.add(Figure("scalability", f"{factor}x throughput ratio vs 1x", "x",
                           ours["throughput"] / base["throughput"], target=max(min_ratio, 1.0 if factor == 10 else 0),
                           higher_is_better=True, note=f"document: > {min_ratio}"),
                    Figure("scalability", f"{factor}x doc 'latency' increase", "%",
                           100 * (ours["doc_latency_ms"] - base["doc_latency_ms"]) / base["doc_latency_ms"],
                           target=100 * max_increase, note="document's duration/operations"))
