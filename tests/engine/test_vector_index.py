"""Vector index: pending queue, cosine ranking, filters, deletion; RRF fusion; the hashing embedder."""

import math

from engine.embedders import hashing
from engine.search_index import fuse_rrf
from engine.vector_index import VectorIndex


def test_hashing_embedder_is_deterministic_and_similarity_follows_shared_words():
    """Texts sharing words are closer than unrelated ones; the same text gives the same vector."""
    a, b, c = hashing(["lisbon tram tour", "tram tour of lisbon", "quarterly tax report"])
    assert hashing(["lisbon tram tour"])[0] == a

    def cosine(x, y):
        return sum(i * j for i, j in zip(x, y)) / math.sqrt(sum(i * i for i in x) * sum(j * j for j in y))
    assert cosine(a, b) > cosine(a, c)


def test_vectors_are_pending_until_embedded_then_ranked_by_cosine():
    """Appended messages wait in the queue; after embedding, search ranks by cosine with filters."""
    index = VectorIndex(hashing)
    index.add("u", "s1", "m1", "lisbon tram tour", "user", 1.0)
    index.add("u", "s2", "m2", "quarterly tax report", "assistant", 2.0)
    index.add("v", "s1", "m3", "lisbon tram tour", "user", 3.0)
    assert index.pending("u") == 2 and index.search("u", hashing(["tram"])[0], 5)["total"] == 0
    assert index.embed_pending(user_id="u") == 2 and index.pending("u") == 0 and index.pending() == 1
    result = index.search("u", hashing(["lisbon trams"])[0], 5)
    assert [h[1] for h in result["hits"]] == ["m1", "m2"] and result["total"] == 2
    assert [h[1] for h in index.search("u", hashing(["x"])[0], 5, roles=["assistant"])["hits"]] == ["m2"]
    assert index.search("u", hashing(["lisbon tram"])[0], 5, threshold=0.5)["total"] == 1
    index.remove("u", "s1", "m1")
    assert [h[1] for h in index.search("u", hashing(["lisbon"])[0], 5)["hits"]] == ["m2"]


def test_reciprocal_rank_fusion_rewards_agreement():
    """A message ranked well by both lists beats one ranked first by only one."""
    def hit(m, t):
        return {"session_id": "s", "message_id": m, "timestamp_epoch": t, "relevance_score": 0.0}
    text = [hit("a", 1), hit("b", 2), hit("c", 3)]
    vector = [hit("b", 2), hit("d", 4), hit("a", 1)]
    fused = fuse_rrf([text, vector], 0, 10)
    assert [h["message_id"] for h in fused][:2] == ["b", "a"]
    assert math.isclose(fused[0]["relevance_score"], 1 / 62 + 1 / 61)
