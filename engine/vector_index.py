"""Cosine-similarity index of one shard, scoped per user; vectors come from the configured embedder.

Embeddings are eventually consistent: appended messages wait in a pending queue until
`embed_pending()` runs (the bridge's background refresh and every vector search call it), and
`pending(user)` says how many are not searchable yet. Vectors live in memory only and are
re-embedded from the log after a restart.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .errors import EngineError
from .search_index import ROLE_CODES

Embedder = Callable[[list[str]], list[list[float]]]


def load_embedder(spec: str) -> Embedder:
    """Import `module:callable`; raises EngineError SEARCH_ERROR if it cannot be imported."""
    module_name, _, attribute = spec.partition(":")
    try:
        embed: Embedder = getattr(importlib.import_module(module_name), attribute)
        return embed
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"Cannot import embedder {spec}: {exc}", "SEARCH_ERROR") from None


def normalise(vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise EngineError("The embedder must return one vector per text", "SEARCH_ERROR")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: np.ndarray = matrix / norms
    return normalised


class _UserVectors:
    def __init__(self, dimension: int) -> None:
        self.matrix = np.zeros((0, dimension), dtype=np.float32)
        self.refs: list[tuple[str, str]] = []
        self.timestamps: list[float] = []
        self.roles: list[int] = []
        self.alive: list[bool] = []
        self.position: dict[tuple[str, str], int] = {}
        self.per_session: dict[str, int] = {}  # live vectors of each session

    def add(self, rows: np.ndarray, items: list[tuple[str, str, str, float]]) -> None:
        self.matrix = np.vstack([self.matrix, rows]) if len(self.refs) else rows.copy()
        for session_id, message_id, role, timestamp in items:
            self.position[(session_id, message_id)] = len(self.refs)
            self.refs.append((session_id, message_id))
            self.timestamps.append(timestamp)
            self.roles.append(ROLE_CODES[role])
            self.alive.append(True)
            self.per_session[session_id] = self.per_session.get(session_id, 0) + 1


class VectorIndex:
    """Vectors of one shard's messages, per user, with a queue of messages still to embed."""

    def __init__(self, embedder: Embedder | None) -> None:
        self._embed = embedder
        self._users: dict[str, _UserVectors] = {}
        self._pending: OrderedDict[tuple[str, str, str], tuple[str, str, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._embed is not None

    def add(self, user_id: str, session_id: str, message_id: str, content: str, role: str, timestamp: float) -> None:
        if self._embed is not None:
            self._pending[(user_id, session_id, message_id)] = (content, role, timestamp)

    def remove(self, user_id: str, session_id: str, message_id: str) -> None:
        self._pending.pop((user_id, session_id, message_id), None)
        vectors = self._users.get(user_id)
        if vectors is not None:
            position = vectors.position.pop((session_id, message_id), None)
            if position is not None:
                vectors.alive[position] = False
                vectors.per_session[session_id] -= 1
                if not vectors.per_session[session_id]:
                    del vectors.per_session[session_id]  # a deleted session leaves no entry behind

    def drop_user(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        for key in [k for k in self._pending if k[0] == user_id]:
            del self._pending[key]

    def count(self, user_id: str, session_id: str) -> int:
        """Embedded (searchable) vectors of one session."""
        vectors = self._users.get(user_id)
        return vectors.per_session.get(session_id, 0) if vectors is not None else 0

    def pending(self, user_id: str | None = None) -> int:
        if user_id is None:
            return len(self._pending)
        return sum(1 for key in self._pending if key[0] == user_id)

    def embed_pending(self, limit: int = 1000, user_id: str | None = None, batch: int = 128) -> int:
        """Embed up to `limit` queued messages (of one user, or any); returns how many were embedded."""
        if self._embed is None or not self._pending:
            return 0
        keys = [k for k in self._pending if user_id is None or k[0] == user_id][:limit]
        done = 0
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            texts = [self._pending[k][0] for k in chunk]
            try:
                rows = normalise(self._embed(texts))
            except EngineError:
                raise
            except Exception as exc:  # the embedder is user code: report, never crash the shard
                raise EngineError(f"The embedder failed: {type(exc).__name__}: {exc}", "SEARCH_ERROR") from None
            if rows.shape[0] != len(chunk):
                raise EngineError("The embedder returned a different number of vectors than texts", "SEARCH_ERROR")
            by_user: dict[str, list[int]] = {}
            for offset, key in enumerate(chunk):
                by_user.setdefault(key[0], []).append(offset)
            for user, offsets in by_user.items():
                vectors = self._users.get(user)
                if vectors is None:
                    vectors = self._users[user] = _UserVectors(rows.shape[1])
                items = []
                for offset in offsets:
                    _, session_id, message_id = chunk[offset]
                    _, role, timestamp = self._pending[chunk[offset]]
                    items.append((session_id, message_id, role, timestamp))
                vectors.add(rows[offsets], items)
            for key in chunk:
                del self._pending[key]
            done += len(chunk)
        return done

    def search(self, user_id: str, query_vector: list[float], limit: int, *, session_ids: list[str] | None = None,
               roles: list[str] | None = None, start_ts: float | None = None, end_ts: float | None = None,
               threshold: float | None = None, sort: str = "relevance") -> dict[str, Any]:
        """Top `limit` by cosine similarity: {"hits": [(session_id, message_id, score, ts)], "total"}."""
        vectors = self._users.get(user_id)
        if vectors is None or not vectors.refs:
            return {"hits": [], "total": 0}
        query = normalise([query_vector])[0]
        if query.shape[0] != vectors.matrix.shape[1]:
            raise EngineError("Query vector dimension differs from the stored vectors", "SEARCH_ERROR")
        scores = vectors.matrix @ query
        timestamps = np.asarray(vectors.timestamps)
        mask = np.asarray(vectors.alive)
        if session_ids is not None:
            wanted = set(session_ids)
            mask &= np.fromiter((ref[0] in wanted for ref in vectors.refs), bool, len(vectors.refs))
        if roles is not None:
            mask &= np.isin(np.asarray(vectors.roles), [ROLE_CODES[r] for r in roles])
        if start_ts is not None:
            mask &= timestamps >= start_ts
        if end_ts is not None:
            mask &= timestamps < end_ts
        if threshold is not None:
            mask &= scores >= threshold
        candidates = np.flatnonzero(mask)
        primary, secondary = (scores, timestamps) if sort == "relevance" else (timestamps, scores)
        order = candidates[np.lexsort((-secondary[candidates], -primary[candidates]))][:limit]
        return {"hits": [(*vectors.refs[i], float(scores[i]), float(timestamps[i])) for i in order],
                "total": int(candidates.size)}
