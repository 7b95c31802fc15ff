"""The reads a shard answers: users, sessions, history pages, ranges, search and analytics partials.

Each handler is registered for its operation type with `@handles`; the shard dispatches by type
(engine/shard_core.py). Cached reads answer `Cached(value, cache_hit)` from the shard's result cache.
"""

from __future__ import annotations

from typing import Any

from . import operations as ops
from .operations import Cached, SearchPart
from .session_store import (SessionDigest, analytics_digest, digest_bytes, history_page, page_bytes,
                            partial_from_digest)
from .shard_core import ShardCore, handles


class ReadHandlers(ShardCore):
    """Read operations of a shard."""

    @handles(ops.GetUser)
    def get_user(self, user_id: str) -> dict[str, Any] | None:
        profile = self.state.users.get(user_id)
        return dict(profile) if profile is not None else None

    @handles(ops.UserExists)
    def user_exists(self, user_id: str) -> bool:
        return user_id in self.state.users

    @handles(ops.ListUsers)
    def list_users(self) -> list[str]:
        return sorted(self.state.users)

    @handles(ops.GetSession)
    def get_session(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        state = self.state.sessions.get((user_id, session_id))
        return state.to_dict() if state is not None else None

    @handles(ops.ListUserSessions)
    def list_user_sessions(self, user_id: str) -> Cached:
        """This shard's sessions of a user (a list of session dicts, cached)."""
        key = ("l", user_id)
        cached = self.state.cache.get(key)
        if cached is not None:
            return Cached(cached, True)
        sessions = [self.state.sessions[(user_id, s)].to_dict() for s in self.state.user_sessions.get(user_id, ())]
        self.state.cache.put(key, sessions, 128 + 400 * len(sessions), [("u", user_id)])
        return Cached(sessions, False)

    @handles(ops.SessionStats)
    def session_stats(self, user_id: str, session_id: str) -> dict[str, Any]:
        state = self._session(user_id, session_id)
        count = len(state.messages)
        return {"message_count": count, "total_size_bytes": state.content_bytes,
                "average_message_size": state.content_bytes / count if count else 0.0,
                "created_at": state.record["created_at"], "updated_at": state.record["updated_at"],
                "last_activity": state.messages[-1].timestamp if count else state.record["updated_at"],
                "vector_count": self.state.vectors.count(user_id, session_id)}

    @handles(ops.History)
    def history(self, user_id: str, session_id: str, limit: int, offset: int = 0, before: str | None = None,
                after: str | None = None, latest: bool = False) -> Cached:
        """A history page {messages, total_count, has_more}, cached per exact request."""
        state = self._session(user_id, session_id)
        key = ("h", user_id, session_id, limit, offset, before, after, latest)
        cached = self.state.cache.get(key)
        if cached is not None:
            return Cached(cached, True)
        page = history_page(state, limit, offset, before, after, latest)
        self.state.cache.put(key, page, page_bytes(page), [("s", user_id, session_id)])
        return Cached(page, False)

    @handles(ops.ReadRange)
    def read_range(self, user_id: str, session_id: str, start: int, count: int, end: int | None = None) -> dict[str, Any]:
        """Messages [start, min(start+count, end)) uncached, for streaming and export."""
        state = self._session(user_id, session_id)
        stop = min(start + count, len(state.messages) if end is None else end)
        return {"messages": [m.to_dict() for m in state.messages[start:stop]], "total_count": len(state.messages)}

    @handles(ops.ExportSession)
    def export_session(self, user_id: str, session_id: str) -> dict[str, Any]:
        state = self._session(user_id, session_id)
        return {"session": state.to_dict(), "messages": [m.to_dict() for m in state.messages]}

    @handles(ops.SearchStats)
    def search_stats(self, user_id: str, terms: list[str]) -> dict[str, Any]:
        return self.state.searchable(user_id).stats(user_id, terms)

    @handles(ops.Search)
    def search(self, user_id: str, terms: list[str], global_stats: dict[str, Any], limit: int,
               filters: dict[str, Any] | None = None, sort: str = "relevance",
               include_metadata: bool = True) -> Cached:
        """Top `limit` matches of this shard scored with the user's global BM25 statistics: a cached SearchPart."""
        filters = filters or {}
        key = ("q", user_id, tuple(terms), global_stats["doc_count"], global_stats["total_length"],
               tuple(sorted(global_stats["doc_freq"].items())), limit, sort, include_metadata,
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in filters.items())))
        cached = self.state.cache.get(key)
        if cached is not None:
            return Cached(cached, True)
        found = self.state.searchable(user_id).search(user_id, terms, global_stats, limit, sort=sort, **filters)
        hits = self._hit_dicts(user_id, found["hits"], include_metadata)
        result = SearchPart(hits, found["total"])
        self.state.cache.put(key, result, 256 + sum(len(h["content"]) + 300 for h in hits), [("u", user_id)])
        return Cached(result, False)

    @handles(ops.VectorSearch)
    def vector_search(self, user_id: str, query_vector: list[float], limit: int,
                      filters: dict[str, Any] | None = None, threshold: float | None = None,
                      include_metadata: bool = True, sort: str = "relevance") -> SearchPart:
        """Top `limit` of the user's messages on this shard by cosine similarity (embeds the user's
        queued messages first, up to 2,000)."""
        self.state.vectors.embed_pending(2000, user_id)
        found = self.state.vectors.search(user_id, query_vector, limit, threshold=threshold, sort=sort, **(filters or {}))
        return SearchPart(self._hit_dicts(user_id, found["hits"], include_metadata), found["total"],
                          self.state.vectors.pending(user_id))

    @handles(ops.EmbedPending)
    def embed_pending(self, limit: int = 1000) -> int:
        """Embed queued messages of any user (the bridge's background refresh calls this)."""
        return self.state.vectors.embed_pending(limit)

    def _hit_dicts(self, user_id: str, hits: list[tuple[str, int | str, float, float]],
                   include_metadata: bool) -> list[dict[str, Any]]:
        """Hits as result dicts: the text index names a message by its position in the session, the
        vector index by its id."""
        out = []
        for session_id, ref, score, epoch in hits:
            messages = self.state.sessions[(user_id, session_id)].messages
            position = ref if isinstance(ref, int) else messages.position_of(ref)
            assert position is not None, "the indexes name only stored messages"
            message = messages[position].to_dict(include_metadata)
            message.update(session_id=session_id, relevance_score=score, result_type="message", timestamp_epoch=epoch)
            out.append(message)
        return out

    @handles(ops.Analytics)
    def analytics(self, user_id: str, days: int, now: float) -> Cached:
        """This shard's analytics partial for the user over [now - days, now) (epoch seconds).

        What it is computed from (per session: creation time, sorted message times and roles) is
        cached until the user's next write (contract 4.6); the window itself is computed exactly
        on every call, so a cached answer is never stale in time.
        """
        key = ("a", user_id)
        cached: list[SessionDigest] | None = self.state.cache.get(key)
        digests = cached
        if digests is None:
            sessions = [self.state.sessions[(user_id, s)] for s in self.state.user_sessions.get(user_id, ())]
            digests = analytics_digest(sessions)
            self.state.cache.put(key, digests, digest_bytes(digests), [("u", user_id)])
        return Cached(partial_from_digest(digests, now - days * 86400, now), cached is not None)
