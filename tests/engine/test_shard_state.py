"""Shard state: the search index is derived, built on demand and by upkeep, and answers exactly as an
index built while writing (same scores, ties, totals and pages) before and after a restart."""

import random
import shutil
from datetime import datetime

import pytest

from engine import shard_core
from engine.search_index import SearchIndex, query_terms
from engine.shard_state import ShardState
from tests.factories import open_shard

USERS = ["ann", "bob", "cy"]
SESSIONS = ["s0", "s1", "s2"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "alpha beta"]
TIMES = [f"2024-01-0{day}T00:00:00+00:00" for day in range(1, 6)]
QUERIES = ["alpha", "beta gamma", "omega delta alpha", "nothing"]
SEEDS = range(12)


def _operations(rng: random.Random, count: int) -> list[tuple]:
    """A random workload: appends (equal timestamps inside a batch, big batches so deletes can make a
    user's index compact), session and user deletes, purges and log compactions."""
    out: list[tuple] = []
    for _ in range(count):
        kind = rng.choices(["append", "delete_session", "delete_user", "purge", "compact"], [12, 2, 1, 1, 1])[0]
        user, session = rng.choice(USERS), rng.choice(SESSIONS)
        if kind == "append":
            size = rng.choice([1, 3, 40, 400])
            role, stamp = rng.choice(["user", "assistant"]), rng.choice(TIMES)
            out.append(("append", user, session, [
                {"role": role, "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 5))), "timestamp": stamp,
                 "message_id": f"m{rng.getrandbits(64):x}"} for _ in range(size)]))
        elif kind == "purge":
            out.append(("purge", rng.choice(TIMES[1:]), rng.choice([user, None])))
        else:
            out.append((kind, user, session))
    return out


def _run(shard, operations) -> None:
    for operation in operations:
        kind = operation[0]
        if kind == "append":
            _, user, session, batch = operation
            if shard.get_session(user, session) is None:
                shard.create_session(user, session, created_at=TIMES[0])
            shard.append(user, session, batch)
        elif kind == "delete_session":
            if shard.get_session(operation[1], operation[2]) is not None:
                shard.delete_session(operation[1], operation[2])
        elif kind == "delete_user":
            shard.delete_user_data(operation[1])
        elif kind == "purge":
            shard.purge(_epoch(operation[1]), operation[2])
        else:
            shard.compact()
        shard.commit()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _results(shard) -> list:
    """Every user's statistics and searches: several queries, both sorts, filters, pages by offset."""
    out = []
    for user in USERS:
        for query in QUERIES:
            terms = query_terms(query)
            stats = shard.search_stats(user, terms)
            out.append(stats)
            for sort in ("relevance", "recent"):
                for filters in ({}, {"session_ids": ["s1", "s2"]}, {"roles": ["user"]},
                                {"start_ts": _epoch(TIMES[1]), "end_ts": _epoch(TIMES[4])}):
                    for offset, limit in ((0, 1000), (0, 7), (7, 7), (20, 5)):
                        part = shard.search(user, terms, stats, offset + limit, filters, sort).value
                        out.append((query, sort, filters, part.total, part.hits[offset:offset + limit]))
    return out


def _open_eager(path, monkeypatch):
    """Open as before this change: replay indexes every message as it goes (today's reference), and
    replays the whole log (the checkpoint is removed)."""
    for checkpoint in path.glob("shard-*/checkpoint.ffc"):
        checkpoint.unlink()
    original = ShardState.__init__

    def eager(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.defer_indexing = False
    with monkeypatch.context() as patch:
        patch.setattr(ShardState, "__init__", eager)
        shard = open_shard(path)
    assert shard.state.unindexed_messages == 0
    return shard


@pytest.mark.parametrize("seed", SEEDS)
def test_lazy_index_answers_exactly_as_incremental_indexing(tmp_path, seed, monkeypatch):
    """Random workloads: a reopened shard (lazy index) answers every search byte for byte as a shard
    that never restarted, whether its index is built by searches, partly or fully by upkeep, and after
    live writes, deletes and purges of users whose index was not built yet; from its checkpoint
    exactly, and from the whole log exactly as the same log replayed with incremental indexing."""
    rng = random.Random(seed)
    first, second = _operations(rng, 30), _operations(rng, 30)
    reference = open_shard(tmp_path / "r")  # never restarts
    _run(reference, first)
    expected_first = _results(reference)
    _run(reference, second)
    expected_second = _results(reference)
    reference.close()
    live = open_shard(tmp_path / "a")
    _run(live, first)
    live.close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for budget in (None, 97, 10**9):  # built by searches only, partly by upkeep, fully by upkeep
        lazy = open_shard(tmp_path / "b")  # from the checkpoint the live shard's close wrote
        assert any("resumed after a checkpoint" in note for note in lazy.log.report.notes)
        assert lazy.state.unindexed_messages <= lazy.state.message_count, f"seed {seed}"  # deletes build
        if budget is not None:
            lazy.state.index_some(budget)
        assert _results(lazy) == expected_first, f"seed {seed}, upkeep budget {budget}"
        lazy.close()
    _same_from_the_whole_log(tmp_path / "a", expected_first, monkeypatch, f"seed {seed}")
    lazy = open_shard(tmp_path / "b")
    _run(lazy, second)  # live writes and removals while users' indexes are still pending
    assert _results(lazy) == expected_second, f"seed {seed}, live writes after a lazy open"
    lazy.close()
    lazy = open_shard(tmp_path / "b")
    assert any("resumed after a checkpoint" in note for note in lazy.log.report.notes)
    assert _results(lazy) == expected_second, f"seed {seed}, reopened after live writes"
    lazy.close()
    _same_from_the_whole_log(tmp_path / "b", expected_second, monkeypatch, f"seed {seed}, after live writes")


def _same_from_the_whole_log(path, expected, monkeypatch, label) -> None:
    """Without a checkpoint: lazy and incremental indexing of the whole log answer alike, and as a
    shard that never restarted except for the order of exact ties (same score and time) across
    sessions, which follows the log there and the live index (rebuilt by session) otherwise."""
    eager = _open_eager(path, monkeypatch)
    replayed = _results(eager)
    eager.close()
    assert _untied(replayed) == _untied(expected), label
    for checkpoint in path.glob("shard-*/checkpoint.ffc"):
        checkpoint.unlink()
    lazy = open_shard(path)
    assert not any("resumed after a checkpoint" in note for note in lazy.log.report.notes)
    assert _results(lazy) == replayed, f"{label}, lazy over the whole log"
    lazy.close()


def _untied(results: list) -> list:
    """Statistics, totals and complete result lists with each run of exact ties (score and time) in
    one fixed order (a page cut inside a tie may hold other members of it: only totals of those)."""
    def key(hit):
        return (-hit["relevance_score"], -hit["timestamp_epoch"], hit["session_id"], hit["message_id"])
    return [item if isinstance(item, dict) else
            (*item[:4], sorted(item[4], key=key) if len(item[4]) == item[3] else None) for item in results]


def test_workloads_exercise_index_compaction(tmp_path, monkeypatch):
    """The random workloads above make some user's index compact (so that path is compared too)."""
    rebuilds = []
    original = SearchIndex.rebuild_user
    monkeypatch.setattr(SearchIndex, "rebuild_user",
                        lambda self, user_id, documents: (rebuilds.append(user_id), original(self, user_id, documents)))
    for seed in SEEDS:
        rng = random.Random(seed)
        shard = open_shard(tmp_path / str(seed))
        _run(shard, _operations(rng, 30) + _operations(rng, 30))
        shard.close()
    assert rebuilds


def test_open_does_not_index_and_upkeep_finishes_in_bounded_steps(tmp_path, monkeypatch):
    """Replay leaves every message unindexed; each upkeep step indexes at most its budget, and the
    index then holds exactly what a searched user's index holds."""
    shard = open_shard(tmp_path)
    for user in USERS:
        shard.create_session(user, "s0")
        shard.append(user, "s0", [{"role": "user", "content": f"alpha {i}"} for i in range(50)])
    shard.commit()
    shard.close()
    monkeypatch.setattr(shard_core, "INDEX_STEP_MESSAGES", 40)
    shard = open_shard(tmp_path)
    assert shard.state.unindexed_messages == 150 and shard.state.search_index.nbytes() == 0
    steps = []
    while shard.state.unindexed_messages:
        before = shard.state.unindexed_messages
        shard.maintain()
        steps.append(before - shard.state.unindexed_messages)
    assert steps == [40, 40, 40, 30]
    stats = shard.search_stats("ann", ["alpha"])
    assert stats["doc_count"] == 50 and stats["doc_freq"]["alpha"] == 50
    assert shard.stats()["ram_bytes"] > sum(s.ram_bytes for s in shard.state.sessions.values())
    shard.close()


def test_search_builds_only_the_searched_user(tmp_path):
    """A first search builds that user's index only; a live write of a user whose index is complete
    is indexed at once, one of a pending user waits for its build."""
    shard = open_shard(tmp_path)
    for user in ("ann", "bob"):
        shard.create_session(user, "s0")
        shard.append(user, "s0", [{"role": "user", "content": "alpha"}] * 1)
    shard.commit()
    shard.close()
    shard = open_shard(tmp_path)
    assert shard.search_stats("ann", ["alpha"])["doc_count"] == 1
    assert shard.state.unindexed_messages == 1
    shard.append("ann", "s0", [{"role": "user", "content": "alpha again"}])
    shard.append("bob", "s0", [{"role": "user", "content": "alpha again"}])
    assert shard.state.unindexed_messages == 2
    assert shard.search_stats("bob", ["alpha"])["doc_count"] == 2
    assert shard.state.unindexed_messages == 0
    shard.close()
