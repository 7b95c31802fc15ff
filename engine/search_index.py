"""Incremental inverted index with BM25 ranking, one slice per shard, scoped per user.

Postings are append-only `array` buffers viewed as numpy arrays at query time (zero copy), so a
query scores whole posting lists in vectorised numpy, not in a Python loop. Corpus statistics are per
user; a multi-shard search first sums `stats()` over shards, then calls `search()` on each with
the global figures, so scores do not depend on the shard count. `merge_ranked` merges shard top-k.
"""

from __future__ import annotations

import math
import sys
from array import array
from typing import Any, Iterable

import numpy as np

from .text import query_terms, tokenize

K1 = 1.2
B = 0.75
ROLE_CODES = {"user": 0, "assistant": 1, "system": 2, "tool": 3}


__all__ = ["SearchIndex", "fuse_rrf", "idf", "merge_ranked", "merge_stats", "query_terms", "tokenize"]
RRF_K = 60


def idf(doc_count: int, doc_freq: int) -> float:
    return math.log(1.0 + (doc_count - doc_freq + 0.5) / (doc_freq + 0.5))


class _UserIndex:
    """Postings and per-document columns of one user's messages on one shard. A document names its
    message by session ordinal and position in the session (integers: no object per message)."""

    def __init__(self) -> None:
        self.postings: dict[str, tuple[array[int], array[int]]] = {}
        self.doc_freq: dict[str, int] = {}
        self.lengths = array("i")
        self.timestamps = array("d")
        self.roles = array("b")
        self.sessions = array("i")
        self.positions = array("i")
        self.alive = bytearray()
        self.session_ordinals: dict[str, int] = {}
        self.session_names: list[str] = []
        self.big_counts: dict[str, dict[int, int]] = {}  # term -> {doc: count} for counts above 255
        self.live_docs = 0
        self.live_length = 0

    def add(self, session_id: str, position: int, content: str, role: str, timestamp: float) -> None:
        tokens = tokenize(content)
        doc = len(self.lengths)
        ordinal = self.session_ordinals.get(session_id)
        if ordinal is None:
            ordinal = self.session_ordinals[session_id] = len(self.session_names)
            self.session_names.append(session_id)
        self.lengths.append(len(tokens))
        self.timestamps.append(timestamp)
        self.roles.append(ROLE_CODES[role])
        self.sessions.append(ordinal)
        self.positions.append(position)
        self.alive.append(1)
        self.live_docs += 1
        self.live_length += len(tokens)
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        postings, doc_freq = self.postings, self.doc_freq
        for term, count in counts.items():
            entry = postings.get(term)
            if entry is None:
                term = sys.intern(term)  # one string per term for every user, not one per user
                entry = postings[term] = (array("i"), array("B"))
                doc_freq[term] = 1
            else:
                doc_freq[term] = doc_freq.get(term, 0) + 1
            entry[0].append(doc)
            if count > 255:  # a byte per posting holds the count; the rare larger ones are kept aside
                self.big_counts.setdefault(term, {})[doc] = count
                count = 255
            entry[1].append(count)

    def kill(self, doc: int, content: str) -> None:
        if not self.alive[doc]:
            return
        self.alive[doc] = 0
        self.live_docs -= 1
        self.live_length -= self.lengths[doc]
        for term in set(tokenize(content)):
            self.doc_freq[term] -= 1
            if self.doc_freq[term] <= 0:
                del self.doc_freq[term]

    def session_docs(self, session_id: str) -> np.ndarray:
        """The live documents of a session, ascending."""
        ordinal = self.session_ordinals.get(session_id)
        if ordinal is None:
            return np.empty(0, np.int64)
        mask = np.frombuffer(self.sessions, dtype=np.int32) == ordinal
        mask &= np.frombuffer(self.alive, dtype=np.bool_)
        return np.flatnonzero(mask)

    @property
    def dead_docs(self) -> int:
        return len(self.lengths) - self.live_docs

    def nbytes(self) -> int:
        postings = sum(len(docs) * 5 for docs, _ in self.postings.values())
        columns = len(self.lengths) * (4 + 8 + 1 + 4 + 4 + 1)
        return postings + columns + len(self.postings) * 150 + len(self.session_names) * 120


class SearchIndex:
    """The search slice of one shard.

    Example:
        >>> index = SearchIndex()
        >>> index.add("alice", "s1", 0, "Hello world", "user", 0.0)
        >>> stats = index.stats("alice", ["hello"])
        >>> index.search("alice", ["hello"], stats, limit=10)["hits"][0][:2]
        ('s1', 0)
    """

    def __init__(self) -> None:
        self._users: dict[str, _UserIndex] = {}

    def add(self, user_id: str, session_id: str, position: int, content: str, role: str, timestamp: float) -> None:
        index = self._users.get(user_id)
        if index is None:
            index = self._users[user_id] = _UserIndex()
        index.add(session_id, position, content, role, timestamp)

    def add_many(self, user_id: str, session_id: str, documents: Iterable[tuple[int, str, str, float]]) -> None:
        """`add` for (position, content, role, timestamp) documents of one session, in order."""
        index = self._users.get(user_id)
        if index is None:
            index = self._users[user_id] = _UserIndex()
        for position, content, role, timestamp in documents:
            index.add(session_id, position, content, role, timestamp)

    def remove_positions(self, user_id: str, session_id: str, removed: dict[int, str]) -> None:
        """Remove the messages at these positions of a session (position -> content) and move the
        positions of its other messages down to where they are once those are gone."""
        index = self._users.get(user_id)
        if index is None or not removed:
            return
        docs = index.session_docs(session_id)
        positions = np.frombuffer(index.positions, dtype=np.int32)
        for doc in docs.tolist():
            content = removed.get(int(positions[doc]))
            if content is not None:
                index.kill(doc, content)
        gone = np.fromiter(sorted(removed), np.int64, len(removed))
        kept = docs[np.frombuffer(index.alive, dtype=np.bool_)[docs]]
        shifts = np.searchsorted(gone, positions[kept]).tolist()
        del positions  # a view of the array would stop it from growing
        for doc, shift in zip(kept.tolist(), shifts):
            index.positions[doc] -= shift

    def remove_session(self, user_id: str, session_id: str, contents: list[str]) -> None:
        """Remove a session's postings; `contents` holds its messages' contents by position."""
        index = self._users.get(user_id)
        if index is None:
            return
        for doc in index.session_docs(session_id).tolist():
            index.kill(doc, contents[index.positions[doc]])

    def needs_compaction(self, user_id: str) -> bool:
        index = self._users.get(user_id)
        return index is not None and index.dead_docs > 1000 and index.dead_docs > index.live_docs

    def rebuild_user(self, user_id: str, documents: Iterable[tuple[str, int, str, str, float]]) -> None:
        """Drop a user's slice and re-add live documents (session, position, content, role, ts)."""
        self._users.pop(user_id, None)
        for session_id, position, content, role, timestamp in documents:
            self.add(user_id, session_id, position, content, role, timestamp)
        if user_id in self._users and self._users[user_id].live_docs == 0:
            del self._users[user_id]

    def users(self) -> list[str]:
        return list(self._users)

    def doc_runs(self, user_id: str) -> list[list[Any]]:
        """The user's live documents in doc-id order as [session_id, first position, count] runs of
        consecutive positions of one session (what rebuilding them in this order needs)."""
        index = self._users.get(user_id)
        if index is None or index.live_docs == 0:
            return []
        docs = np.flatnonzero(np.frombuffer(index.alive, dtype=np.bool_))
        sessions = np.frombuffer(index.sessions, dtype=np.int32)[docs]
        positions = np.frombuffer(index.positions, dtype=np.int32)[docs]
        breaks = np.flatnonzero((sessions[1:] != sessions[:-1]) | (positions[1:] != positions[:-1] + 1)) + 1
        starts = np.concatenate(([0], breaks))
        counts = np.diff(np.concatenate((starts, [len(docs)])))
        return [[index.session_names[sessions[start]], int(positions[start]), int(count)]
                for start, count in zip(starts.tolist(), counts.tolist())]

    def drop_user(self, user_id: str) -> None:
        self._users.pop(user_id, None)

    def stats(self, user_id: str, terms: list[str]) -> dict[str, Any]:
        """This shard's share of the user's corpus statistics for `terms`."""
        index = self._users.get(user_id)
        if index is None:
            return {"doc_count": 0, "total_length": 0, "doc_freq": {term: 0 for term in terms}}
        return {"doc_count": index.live_docs, "total_length": index.live_length,
                "doc_freq": {term: index.doc_freq.get(term, 0) for term in terms}}

    def search(self, user_id: str, terms: list[str], global_stats: dict[str, Any], limit: int, *,
               session_ids: list[str] | None = None, roles: list[str] | None = None,
               start_ts: float | None = None, end_ts: float | None = None,
               sort: str = "relevance") -> dict[str, Any]:
        """Rank the user's matching documents with BM25 using `global_stats`; return the top `limit`.

        Returns {"hits": [(session_id, position, score, timestamp)], "total": matches}: a hit names
        the message by its position in the session. Ties in relevance go newest first;
        `sort="recent"` orders by timestamp desc, then score.
        """
        index = self._users.get(user_id)
        if index is None or not terms or index.live_docs == 0:
            return {"hits": [], "total": 0}
        scores = self._score(index, terms, global_stats)
        mask = scores > 0
        mask &= np.frombuffer(index.alive, dtype=np.bool_)  # bytes of 0 or 1: a view, no copy
        mask = self._apply_filters(index, mask, session_ids, roles, start_ts, end_ts)
        candidates = np.flatnonzero(mask)
        total = int(candidates.size)
        if total == 0 or limit <= 0:
            return {"hits": [], "total": total}
        timestamps = np.frombuffer(index.timestamps, dtype=np.float64)
        top = _top_k(candidates, scores[candidates], timestamps[candidates], limit, sort)
        hits = [(index.session_names[index.sessions[doc]], index.positions[doc], float(scores[doc]),
                 float(timestamps[doc])) for doc in top]
        return {"hits": hits, "total": total}

    @staticmethod
    def _score(index: _UserIndex, terms: list[str], global_stats: dict[str, Any]) -> np.ndarray:
        doc_count = max(int(global_stats["doc_count"]), 1)
        average_length = max(global_stats["total_length"] / doc_count, 1e-9)
        lengths = np.frombuffer(index.lengths, dtype=np.int32)
        scores = np.zeros(len(index.lengths), dtype=np.float64)
        # BM25 per posting: w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), computed over the
        # term's postings only (not a norm for every document first): one gather, few temporaries.
        constant, slope = K1 * (1.0 - B), K1 * B / average_length
        for term in terms:
            entry = index.postings.get(term)
            if entry is None:
                continue
            weight = idf(doc_count, int(global_stats["doc_freq"].get(term, 0))) * (K1 + 1.0)
            docs = np.frombuffer(entry[0], dtype=np.int32)
            tf = np.frombuffer(entry[1], dtype=np.uint8).astype(np.float64)
            for doc, count in index.big_counts.get(term, {}).items():
                tf[np.searchsorted(docs, doc)] = count  # a term's postings ascend by doc
            denominator = lengths[docs] * slope
            denominator += constant
            denominator += tf
            tf *= weight
            tf /= denominator
            scores[docs] += tf
        return scores

    @staticmethod
    def _apply_filters(index: _UserIndex, mask: np.ndarray, session_ids: list[str] | None,
                       roles: list[str] | None, start_ts: float | None, end_ts: float | None) -> np.ndarray:
        if session_ids is not None:
            ordinals = [index.session_ordinals[s] for s in session_ids if s in index.session_ordinals]
            mask &= np.isin(np.frombuffer(index.sessions, dtype=np.int32), ordinals)
        if roles is not None:
            mask &= np.isin(np.frombuffer(index.roles, dtype=np.int8), [ROLE_CODES[r] for r in roles])
        if start_ts is not None or end_ts is not None:
            timestamps = np.frombuffer(index.timestamps, dtype=np.float64)
            if start_ts is not None:
                mask &= timestamps >= start_ts
            if end_ts is not None:
                mask &= timestamps < end_ts
        return mask

    def nbytes(self) -> int:
        return sum(index.nbytes() for index in self._users.values())


def _top_k(candidates: np.ndarray, scores: np.ndarray, timestamps: np.ndarray, k: int, sort: str) -> list[int]:
    """The best k of `candidates` (ascending doc ids) in order: by (primary desc, secondary desc, doc
    desc), primary being the score for `relevance` and the timestamp for `recent`. Selected in linear
    time without sorting the candidates, also when thousands tie at the cut (short chat messages often
    score alike)."""
    primary, secondary = (scores, timestamps) if sort == "relevance" else (timestamps, scores)
    chosen = _select([primary, secondary], k)
    order = np.lexsort((-candidates[chosen], -secondary[chosen], -primary[chosen]))
    return [int(doc) for doc in candidates[chosen][order]]


def _select(keys: list[np.ndarray], k: int) -> np.ndarray:
    """Positions of the k largest by the keys compared in turn, then by position (the candidates'
    doc ids ascend, so the last positions are the newest). Each step keeps what is above the k-th
    value and resolves the tie there with the next key."""
    picked: np.ndarray | None = None  # None: every position (no copy for the first key)
    count = keys[0].size
    taken: list[np.ndarray] = []
    for key in keys:
        if count <= k:
            break
        values = key if picked is None else key[picked]
        cut = np.partition(values, count - k)[count - k]
        above = np.flatnonzero(values > cut) if picked is None else picked[values > cut]
        taken.append(above)
        k -= above.size
        picked = np.flatnonzero(values == cut) if picked is None else picked[values == cut]
        count = picked.size
    rest = np.arange(count) if picked is None else picked
    taken.append(rest[max(0, rest.size - k):])  # ties on every key: the newest documents
    return np.concatenate(taken)


def merge_stats(parts: Iterable[dict[str, Any]], terms: list[str]) -> dict[str, Any]:
    """Sum per-shard corpus statistics into the user's global statistics."""
    doc_freq: dict[str, int] = {term: 0 for term in terms}
    doc_count = total_length = 0
    for part in parts:
        doc_count += part["doc_count"]
        total_length += part["total_length"]
        for term, count in part["doc_freq"].items():
            doc_freq[term] = doc_freq.get(term, 0) + count
    return {"doc_count": doc_count, "total_length": total_length, "doc_freq": doc_freq}


def merge_ranked(parts: Iterable[list[dict[str, Any]]], offset: int, limit: int, sort: str = "relevance") -> list[dict[str, Any]]:
    """Merge per-shard ranked results (dicts with relevance_score and timestamp_epoch) and page them.

    The sort is stable, so full ties keep each shard's own order (newest first within a shard).
    """
    everything = [hit for part in parts for hit in part]
    if sort == "relevance":
        everything.sort(key=lambda hit: (-hit["relevance_score"], -hit["timestamp_epoch"]))
    else:
        everything.sort(key=lambda hit: (-hit["timestamp_epoch"], -hit["relevance_score"]))
    return everything[offset:offset + limit]


def fuse_rrf(rankings: list[list[dict[str, Any]]], offset: int, limit: int, k: int = RRF_K) -> list[dict[str, Any]]:
    """Reciprocal rank fusion: score = sum over rankings of 1 / (k + rank), rank from 1; ties newest first.

    Each hit is keyed by (session_id, message_id); the fused hit keeps the first ranking's fields
    with `relevance_score` replaced by the fused score.
    """
    fused: dict[tuple[str, str], dict[str, Any]] = {}
    scores: dict[tuple[str, str], float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            key = (hit["session_id"], hit["message_id"])
            fused.setdefault(key, hit)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    ordered = sorted(fused, key=lambda key: (-scores[key], -fused[key]["timestamp_epoch"]))
    return [{**fused[key], "relevance_score": scores[key]} for key in ordered[offset:offset + limit]]
