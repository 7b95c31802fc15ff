"""Engine-only benchmark (no Ray): append throughput per durability mode, history and search latency.

    python -m scale_tests.bench_engine [--messages 100000] [--sessions 100] [--json FILE]

Search runs over N messages of one user in S sessions, for a query matching every message and a
selective one, beside an embedded SQLite FTS5 baseline ranking the same corpus (bm25()).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from typing import Any

from engine.config import EngineConfig
from engine.metrics import nearest_rank
from engine.shard import Shard
from engine.text import query_terms

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": nearest_rank(ordered, 50), "p95_ms": nearest_rank(ordered, 95),
            "p99_ms": nearest_rank(ordered, 99), "mean_ms": sum(ordered) / len(ordered)}


def bench_appends(root: str, total: int = 4000) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in ("fsync", "flush", "none"):
        for batch in (1, 200):
            path = tempfile.mkdtemp(dir=root)
            shard = Shard(EngineConfig(storage_path=path, shard_count=1, durability=mode), 0)
            shard.open()
            shard.create_session("u", "s")
            shard.commit()
            count = total if batch == 200 or mode != "fsync" else total // 4
            started = time.perf_counter()
            for start in range(0, count, batch):
                shard.append("u", "s", [{"role": "user", "content": f"benchmark message {i} hello world",
                                         "message_id": f"m{i}"} for i in range(start, start + batch)])
                shard.commit()
            elapsed = time.perf_counter() - started
            shard.close()
            results[f"{mode}_batch{batch}"] = {"messages": count, "msgs_per_s": count / elapsed}
    return results


def _corpus(messages: int, sessions: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    corpus = []
    for i in range(messages):
        words = rng.choices(WORDS, k=rng.randint(6, 18))
        if i % 1000 == 0:
            words.append("needle")
        corpus.append((f"s{i % sessions}", "message " + " ".join(words)))
    return corpus


def bench_search(root: str, messages: int, sessions: int, seed: int, runs: int = 40) -> dict[str, Any]:
    corpus = _corpus(messages, sessions, seed)
    shard = Shard(EngineConfig(storage_path=tempfile.mkdtemp(dir=root), shard_count=1, durability="none",
                               cache_bytes_max=0), 0)
    shard.open()
    for session in range(sessions):
        shard.create_session("u", f"s{session}")
    started = time.perf_counter()
    by_session: dict[str, list[dict[str, Any]]] = {}
    for session_id, content in corpus:
        by_session.setdefault(session_id, []).append({"role": "user", "content": content})
    for session_id, items in by_session.items():
        for start in range(0, len(items), 1000):
            shard.append("u", session_id, items[start:start + 1000])
    shard.commit()
    load_s = time.perf_counter() - started
    out: dict[str, Any] = {"messages": messages, "sessions": sessions, "load_s": load_s,
                           "ram_bytes_per_message": shard.stats()["ram_bytes_per_message"]}
    for label, query in (("all_matching", "message"), ("selective", "needle")):
        terms = query_terms(query)
        samples = []
        total = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            stats = shard.search_stats("u", terms)
            result = shard.search("u", terms, stats, 20).value
            samples.append((time.perf_counter() - t0) * 1000)
            total = result.total
        out[label] = {"query": query, "total_matches": total, **_percentiles(samples)}
    history = []
    for i in range(200):
        t0 = time.perf_counter()
        shard.history("u", f"s{i % sessions}", 20, latest=True)
        history.append((time.perf_counter() - t0) * 1000)
    out["history_latest20_uncached"] = _percentiles(history)
    shard.close()
    out["sqlite_fts5"] = _sqlite_baseline(corpus, runs)
    return out


def _sqlite_baseline(corpus: list[tuple[str, str]], runs: int) -> dict[str, Any]:
    directory = tempfile.mkdtemp()
    db = sqlite3.connect(os.path.join(directory, "fts.db"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE VIRTUAL TABLE m USING fts5(user_id UNINDEXED, session_id UNINDEXED, content)")
    with db:
        db.executemany("INSERT INTO m VALUES ('u', ?, ?)", corpus)
    out = {}
    for label, query in (("all_matching", "message"), ("selective", "needle")):
        samples = []
        for _ in range(max(5, runs // 4)):
            t0 = time.perf_counter()
            db.execute("SELECT rowid, bm25(m) FROM m WHERE m MATCH ? AND user_id = 'u' ORDER BY bm25(m) LIMIT 20",
                       (query,)).fetchall()
            db.execute("SELECT count(*) FROM m WHERE m MATCH ? AND user_id = 'u'", (query,)).fetchone()
            samples.append((time.perf_counter() - t0) * 1000)
        out[label] = _percentiles(samples)
    db.close()
    shutil.rmtree(directory, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="ffchat-bench-engine-")
    try:
        appends = bench_appends(root)
        print("append throughput (one shard, msgs/s):")
        for name, row in appends.items():
            print(f"  {name:18s} {row['msgs_per_s']:>12,.0f}")
        search = bench_search(root, args.messages, args.sessions, args.seed)
        print(f"search over {search['messages']:,} messages of one user in {search['sessions']} sessions "
              f"(load {search['load_s']:.1f} s, {search['ram_bytes_per_message']:.0f} B RAM/message):")
        for label in ("all_matching", "selective"):
            ours, base = search[label], search["sqlite_fts5"][label]
            print(f"  {label:13s} matches={ours['total_matches']:>7,} p50={ours['p50_ms']:.2f} ms "
                  f"p95={ours['p95_ms']:.2f} ms | sqlite fts5 p50={base['p50_ms']:.2f} ms "
                  f"(ratio {base['p50_ms'] / ours['p50_ms']:.1f}x)")
        hist = search["history_latest20_uncached"]
        print(f"  history latest-20 page (uncached): p50={hist['p50_ms']:.3f} ms p95={hist['p95_ms']:.3f} ms")
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"appends": appends, "search": search}, handle, indent=2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
