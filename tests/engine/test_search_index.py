"""BM25 search: hand-checked ranking, tokenisation, filters, isolation, top-k and merge."""

import math

import pytest

from engine.search_index import SearchIndex, idf, merge_ranked, merge_stats, query_terms, tokenize


def _index(docs, user="u"):
    index = SearchIndex()
    for i, (content, role) in enumerate(docs):
        index.add(user, "s1" if i % 2 == 0 else "s2", i, content, role, float(i))
    return index


def _names(hits):
    """The test documents' names (document i was added at position i)."""
    return [f"m{hit[1]}" for hit in hits]


def test_tokenize_is_unicode_casefolded_and_whole_word():
    """Tokens are NFKC casefolded runs of letters and digits; no substrings."""
    assert tokenize("Hello, WORLD! Straße ＡＢＣ 42x_y") == ["hello", "world", "strasse", "abc", "42x", "y"]
    assert "pyth" not in tokenize("Python")


def test_bm25_ranking_matches_hand_computation():
    """Scores equal the BM25 formula computed by hand on a tiny corpus."""
    docs = [("apple banana", "user"), ("apple apple apple", "user"), ("cherry", "user")]
    index = _index(docs)
    stats = index.stats("u", ["apple"])
    result = index.search("u", ["apple"], stats, 10)
    assert result["total"] == 2
    n, df, avgdl = 3, 2, (2 + 3 + 1) / 3

    def bm25(tf, dl):
        return idf(n, df) * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))
    expected = sorted([("m1", bm25(3, 3)), ("m0", bm25(1, 2))], key=lambda x: -x[1])
    assert [(f"m{h[1]}", round(h[2], 9)) for h in result["hits"]] == [(m, round(s, 9)) for m, s in expected]
    assert math.isclose(idf(n, df), math.log(1 + (3 - 2 + 0.5) / 2.5))


def test_filters_roles_sessions_and_time():
    """Session, role and time filters restrict matches; total counts matches before the limit."""
    docs = [("hello there", "user"), ("hello again", "assistant"), ("hello world", "user"), ("bye", "user")]
    index = _index(docs)
    stats = index.stats("u", ["hello"])
    assert index.search("u", ["hello"], stats, 1)["total"] == 3
    assert set(_names(index.search("u", ["hello"], stats, 10, roles=["user"])["hits"])) == {"m0", "m2"}
    assert set(_names(index.search("u", ["hello"], stats, 10, session_ids=["s2"])["hits"])) == {"m1"}
    assert index.search("u", ["hello"], stats, 10, session_ids=[])["total"] == 0
    assert set(_names(index.search("u", ["hello"], stats, 10, start_ts=1.0, end_ts=2.0)["hits"])) == {"m1"}
    recent = index.search("u", ["hello"], stats, 10, sort="recent")["hits"]
    assert _names(recent) == ["m2", "m1", "m0"]


def test_users_are_isolated():
    """One user's query never sees or counts another user's messages."""
    index = SearchIndex()
    index.add("alice", "s", 0, "secret plan", "user", 0.0)
    index.add("bob", "s", 1, "secret party", "user", 0.0)
    stats = index.stats("alice", ["secret"])
    assert stats["doc_count"] == 1
    assert [h[:2] for h in index.search("alice", ["secret"], stats, 10)["hits"]] == [("s", 0)]


def test_top_k_equals_full_sort_and_ties_go_newest_first():
    """Top-k selection returns the same order as sorting every hit; equal scores are newest first."""
    index = SearchIndex()
    for i in range(500):
        index.add("u", "s", i, "word " * (1 + i % 7), "user", float(i))
    stats = index.stats("u", ["word"])
    full = index.search("u", ["word"], stats, 500)["hits"]
    top = index.search("u", ["word"], stats, 25)["hits"]
    assert top == full[:25]
    assert all((a[2], a[3]) >= (b[2], b[3]) for a, b in zip(full, full[1:]))


def test_merge_of_shard_results_equals_single_shard_ranking():
    """Splitting a corpus over shards with summed statistics ranks exactly like one shard."""
    contents = [f"alpha {'beta ' * (i % 3)} gamma{i % 5}" for i in range(60)]
    single = SearchIndex()
    shards = [SearchIndex(), SearchIndex(), SearchIndex()]
    for i, text in enumerate(contents):
        single.add("u", "s", i, text, "user", float(i))
        shards[i % 3].add("u", "s", i, text, "user", float(i))
    terms = query_terms("beta gamma1")
    stats = merge_stats([s.stats("u", terms) for s in shards], terms)
    assert stats == single.stats("u", terms)

    def as_dicts(hits):
        return [{"message_id": h[1], "relevance_score": h[2], "timestamp_epoch": h[3]} for h in hits]
    parts = [as_dicts(s.search("u", terms, stats, 15)["hits"]) for s in shards]
    merged = merge_ranked(parts, 5, 10)
    expected = as_dicts(single.search("u", terms, stats, 15)["hits"])[5:15]
    assert [h["message_id"] for h in merged] == [h["message_id"] for h in expected]


@pytest.mark.parametrize("seed", range(20))
def test_top_k_equals_a_full_sort_when_many_candidates_tie(seed):
    """The linear-time selection returns exactly what sorting every candidate by (primary desc,
    secondary desc, doc desc) would, with ties on one, two or all keys at the cut."""
    import numpy as np
    from engine.search_index import _top_k
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 3000))
    candidates = np.sort(rng.choice(10 * size, size=size, replace=False)).astype(np.int64)
    scores = rng.choice([0.5, 1.0, 1.25], size=size) if seed % 2 else rng.random(size).round(1)
    timestamps = rng.choice([1.7e9, 1.7e9 + 1, 1.7e9 + 2], size=size)
    for sort in ("relevance", "recent"):
        for k in (1, 3, 10, 50, size, size + 5):
            primary, secondary = (scores, timestamps) if sort == "relevance" else (timestamps, scores)
            expected = [int(candidates[i]) for i in np.lexsort((-candidates, -secondary, -primary))[:k]]
            assert _top_k(candidates, scores, timestamps, k, sort) == expected, (sort, k)


def test_removals_by_position_move_the_positions_of_what_stays():
    """Removing messages of a session (a purge) kills their documents and moves the positions of the
    session's other messages down, so hits still name the right messages; other sessions keep theirs."""
    index = SearchIndex()
    for i in range(6):
        index.add("u", "s1", i, f"tram {i}", "user", float(i))
    index.add("u", "s2", 0, "tram other", "user", 9.0)
    index.remove_positions("u", "s1", {1: "tram 1", 3: "tram 3"})  # s1 keeps 0, 2, 4, 5 -> 0, 1, 2, 3
    stats = index.stats("u", ["tram"])
    assert stats["doc_count"] == 5 and stats["doc_freq"]["tram"] == 5
    found = index.search("u", ["tram"], stats, limit=10, sort="recent")["hits"]
    assert [h[:2] for h in found] == [("s2", 0), ("s1", 3), ("s1", 2), ("s1", 1), ("s1", 0)]
    index.add("u", "s1", 4, "tram again", "user", 7.0)  # appended after the purge, at the new end
    index.remove_positions("u", "s1", {0: "tram 0"})
    found = index.search("u", ["tram"], index.stats("u", ["tram"]), limit=10, sort="recent")["hits"]
    assert [h[:2] for h in found] == [("s2", 0), ("s1", 3), ("s1", 2), ("s1", 1), ("s1", 0)]
    assert index.search("u", ["3"], index.stats("u", ["3"]), limit=10)["total"] == 0
    index.remove_session("u", "s1", ["tram 2", "tram 4", "tram 5", "tram again"])
    assert index.stats("u", ["tram"])["doc_freq"]["tram"] == 1


def test_a_term_repeated_more_than_255_times_scores_with_its_exact_count():
    """Counts are kept in a byte per posting; larger ones are kept aside and score exactly."""
    index = SearchIndex()
    index.add("u", "s", 0, "spam " * 300 + "ham", "user", 0.0)
    index.add("u", "s", 1, "spam " * 255 + "ham " * 45, "user", 1.0)
    index.add("u", "s", 2, "ham", "user", 2.0)
    stats = index.stats("u", ["spam"])
    n, df, avgdl = 3, 2, (301 + 300 + 1) / 3

    def bm25(tf, dl):
        return idf(n, df) * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))
    hits = index.search("u", ["spam"], stats, 10)["hits"]
    assert [(h[1], round(h[2], 12)) for h in hits] == [(0, round(bm25(300, 301), 12)), (1, round(bm25(255, 300), 12))]
