"""Search at scale: a seeded corpus loaded in batches, then all-matching and selective queries."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ..measure import Figure, stats
from ..targets import OursTarget, SqliteTarget, scratch_dir
from .context import Context, check

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
SESSIONS = 100


# --------------------------------------------------------------------------- 7. search at scale
async def search_at_scale(ctx: Context) -> None:
    messages = ctx.scale(100_000, 20_000)
    contents = _corpus(random.Random(ctx.seed), messages)
    rows = {}
    for target_class in (OursTarget, SqliteTarget):
        target = await target_class.open(scratch_dir(ctx.root, f"search-{target_class.name}"),
                                         {"performance_mode": "speed", "message_batch_size": 1000,
                                          "cache_size_mb": 100})
        row: dict[str, Any] = {"load_msgs_per_s": await _load(target, contents)}
        for label, query, expected in (("all_matching", "message", messages), ("selective", "needle",
                                                                                messages // 1000)):
            row[label] = await _query_latencies(ctx, target, query, expected)
        rows[target.name] = row
        await target.close()
    ctx.details["search_at_scale"] = {"messages": messages, **rows}
    ctx.add(*_search_figures(rows, f"{messages // 1000}k"))


def _corpus(rng: random.Random, messages: int) -> list[str]:
    """Random word messages; one in a thousand also holds the word "needle"."""
    contents = []
    for i in range(messages):
        words = rng.choices(WORDS, k=rng.randint(6, 18))
        if i % 1000 == 0:
            words.append("needle")
        contents.append("message " + " ".join(words))
    return contents


async def _load(target: Any, contents: list[str]) -> float:
    """The corpus spread over SESSIONS sessions, two batches each, all at once; msg/s."""
    session_ids = [await target.create_session("searcher", f"s{i}") for i in range(SESSIONS)]
    started = time.perf_counter()
    per_session = len(contents) // SESSIONS
    loads = []
    for index, session_id in enumerate(session_ids):
        chunk = contents[index * per_session:(index + 1) * per_session]
        loads.append(target.store_batch("searcher", session_id, chunk[:len(chunk) // 2]))
        loads.append(target.store_batch("searcher", session_id, chunk[len(chunk) // 2:]))
    loaded = await asyncio.gather(*loads)
    load_rate = len(contents) / (time.perf_counter() - started)
    check(all(r["success"] for r in loaded), "search corpus load failed")
    return load_rate


async def _query_latencies(ctx: Context, target: Any, query: str, expected: int) -> dict[str, float]:
    """Latency of the top 10 for `query`, which must count `expected` matches."""
    samples = []
    for i in range(ctx.scale(30, 10)):
        if isinstance(target, OursTarget):
            target.data.clear_cache()  # measure ranking, not the result cache
        started = time.perf_counter()
        result = await target.search("searcher", query, 10)
        samples.append((time.perf_counter() - started) * 1000)
        check(result["data"]["search_metadata"]["total_matches"] == expected,
              f"search '{query}' found {result['data']['search_metadata']['total_matches']}, not {expected}")
    return stats(samples)


def _search_figures(rows: dict[str, dict[str, Any]], label: str) -> list[Figure]:
    ours, sqlite = rows["ours"], rows["sqlite"]
    return [Figure("search", f"all-matching over {label} p50", "ms", ours["all_matching"]["p50_ms"],
                   sqlite["all_matching"]["p50_ms"]),
            Figure("search", f"all-matching over {label} p95", "ms", ours["all_matching"]["p95_ms"],
                   sqlite["all_matching"]["p95_ms"], 30, note="issue goal"),
            Figure("search", f"selective over {label} p50", "ms", ours["selective"]["p50_ms"],
                   sqlite["selective"]["p50_ms"]),
            Figure("search", f"selective over {label} p95", "ms", ours["selective"]["p95_ms"],
                   sqlite["selective"]["p95_ms"]),
            Figure("search", f"corpus load ({label} in batches)", "msg/s", ours["load_msgs_per_s"],
                   sqlite["load_msgs_per_s"], higher_is_better=True)]
