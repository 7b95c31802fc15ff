"""What a user-level request asks of each shard, and how the shards' replies merge into one answer.

Each `FanOutRequest` type has a flow: a generator that yields a `Plan` (operations per shard), is sent
the `Answers`, and may yield a second plan (search needs the user's global corpus statistics before
it can score) before it returns the merged reply. The router (actors/router_actor.py) drives the
flows, over Ray or in-process, so merging is written once and tested without any actor.

Partial-result policy: search uses the shards that answered (the silent ones are reported in
`shards_failed`; none answering is SHARD_UNAVAILABLE). Listings, analytics, deletes and purges need
every shard: a silent shard fails the call (TIMEOUT if it did not answer in time, SHARD_UNAVAILABLE
if it could not be reached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Generator

from . import operations as ops
from .errors import RequestTimeout, ShardUnavailable, UserNotFound
from .routing import shard_index_for
from .search_index import fuse_rrf, merge_ranked, merge_stats
from .session_store import merge_analytics

# Hybrid search fuses the top HYBRID_RANK_WINDOW of each ranking (like Elasticsearch's
# rank_window_size): the fused order and total_matches are then the same for every page up to it.
HYBRID_RANK_WINDOW = 1000


@dataclass
class Plan:
    """Operations to run on each shard (one batch per shard)."""

    per_shard: dict[int, list[ops.ShardOperation]]


@dataclass
class Answers:
    """Replies of the shards that answered; `timed_out` did not answer in time, `unreachable` failed."""

    replies: dict[int, list[ops.Reply]]
    timed_out: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)

    @property
    def failed(self) -> list[int]:
        return sorted(self.timed_out + self.unreachable)

    def require_all(self) -> None:
        """Raise unless every shard answered (exact answers need all of them)."""
        if self.unreachable:
            raise ShardUnavailable(f"Shards {sorted(self.unreachable)} are unavailable")
        if self.timed_out:
            raise RequestTimeout(f"Shards {sorted(self.timed_out)} did not answer in time")

    def value(self, shard: int, position: int = 0) -> Any:
        """The value of one operation's reply; raises its error."""
        return self.replies[shard][position].unwrap()

    def values(self, position: int = 0) -> dict[int, Any]:
        """{shard: value} of one operation on every shard that answered; raises the first error."""
        return {shard: self.value(shard, position) for shard in sorted(self.replies)}


Flow = Generator[Plan, Answers, Any]


def flow_for(request: ops.FanOutRequest, shard_count: int) -> Flow:
    """The flow answering `request` over `shard_count` shards."""
    return _FLOWS[type(request)](request, shard_count)


def _everywhere(shard_count: int, operation: ops.ShardOperation) -> dict[int, list[ops.ShardOperation]]:
    return {index: [operation] for index in range(shard_count)}


def _with_user_check(per_shard: dict[int, list[ops.ShardOperation]], user_id: str, user_shard: int
                     ) -> dict[int, list[ops.ShardOperation]]:
    """Ask the profile's shard whether the user exists, as the last operation of its batch."""
    per_shard[user_shard] = per_shard.get(user_shard, []) + [ops.UserExists(user_id)]
    return per_shard


def _check_user(answers: Answers, user_id: str, user_shard: int) -> None:
    """UserNotFound if the profile's shard answered that the user does not exist. With that shard
    silent the user's existence is unknown, and the other shards' results stand."""
    if user_shard in answers.replies and not answers.value(user_shard, -1):
        raise UserNotFound(f"User '{user_id}' not found")


# ---------------------------------------------------------------------- search
def _search(request: ops.SearchRequest, shard_count: int) -> Flow:
    """Text: corpus statistics, then BM25 scores; vector: cosine; hybrid: both, fused by RRF."""
    depth = max(request.window, HYBRID_RANK_WINDOW) if request.mode == "hybrid" else request.window
    first: list[ops.ShardOperation] = []
    if request.mode != "vector":
        first.append(ops.SearchStats(request.user_id, request.terms))
    if request.mode != "text":
        assert request.vector is not None, "vector and hybrid search need the query vector"
        sort = request.sort if request.mode == "vector" else "relevance"
        first.append(ops.VectorSearch(request.user_id, request.vector, depth, request.filters, request.threshold,
                                      request.include_metadata, sort))
    per_shard = _with_user_check({index: list(first) for index in range(shard_count)}, request.user_id,
                                 request.user_shard)
    answers = yield Plan(per_shard)
    _require_answers(request, shard_count, answers.failed)
    _check_user(answers, request.user_id, request.user_shard)
    vector_parts = answers.values(len(first) - 1) if request.mode != "text" else {}
    failed = set(answers.failed)
    if request.mode == "vector":
        text_parts: dict[int, ops.SearchPart] = {}
        cache_hit = False
    else:
        stats = merge_stats(answers.values(0).values(), request.terms)
        score = ops.Search(request.user_id, request.terms, stats, depth, request.filters,
                           request.sort if request.mode == "text" else "relevance", request.include_metadata)
        scored = yield Plan({index: [score] for index in sorted(answers.replies)})
        failed |= set(scored.failed)
        cached = scored.values()
        text_parts = {index: reply.value for index, reply in cached.items()}
        cache_hit = request.mode == "text" and bool(cached) and all(reply.cache_hit for reply in cached.values())
    _require_answers(request, shard_count, sorted(failed))
    return _merge_search(request, text_parts, vector_parts, sorted(failed), cache_hit)


def _require_answers(request: ops.SearchRequest, shard_count: int, failed: list[int]) -> None:
    """SHARD_UNAVAILABLE when no shard answered, or when every session the search is limited to
    lives on a shard that did not: a partial answer would then be an empty one."""
    if len(failed) == shard_count:
        raise ShardUnavailable(f"No shard answered the search (shards {failed})")
    wanted = request.filters.get("session_ids")
    if failed and wanted:
        needed = {shard_index_for(request.user_id, session_id, shard_count) for session_id in wanted}
        if needed <= set(failed):
            raise ShardUnavailable(f"Every requested session is on a failed shard ({sorted(needed)})")


def _merge_search(request: ops.SearchRequest, text_parts: dict[int, ops.SearchPart],
                  vector_parts: dict[int, ops.SearchPart], failed: list[int], cache_hit: bool) -> ops.SearchResult:
    pending = sum(part.pending for part in vector_parts.values())
    if request.mode != "hybrid":
        parts = text_parts or vector_parts
        merged = merge_ranked([part.hits for part in parts.values()], request.offset, request.limit, request.sort)
        return ops.SearchResult(merged, sum(part.total for part in parts.values()), failed, cache_hit, pending)
    rankings = [merge_ranked([part.hits for part in parts.values()], 0, max(request.window, HYBRID_RANK_WINDOW))
                for parts in (text_parts, vector_parts)]
    fused = fuse_rrf(rankings, 0, sum(len(ranking) for ranking in rankings))
    if request.sort == "recent":
        fused.sort(key=lambda hit: (-hit["timestamp_epoch"], -hit["relevance_score"]))
    page = fused[request.offset:request.offset + request.limit]
    return ops.SearchResult(page, len(fused), failed, False, pending)


# ---------------------------------------------------------------------- exact user-level reads and deletes
def _list_sessions(request: ops.ListSessionsRequest, shard_count: int) -> Flow:
    per_shard = _with_user_check(_everywhere(shard_count, ops.ListUserSessions(request.user_id)), request.user_id,
                                 request.user_shard)
    answers = yield Plan(per_shard)
    answers.require_all()
    listed = answers.values()
    sessions = [session for reply in listed.values() for session in reply.value]
    sessions.sort(key=lambda s: (s["created_at"], s["session_id"]), reverse=True)
    return ops.SessionListing(sessions, bool(answers.value(request.user_shard, -1)),
                              all(reply.cache_hit for reply in listed.values()))


def _analytics(request: ops.AnalyticsRequest, shard_count: int) -> Flow:
    operation = ops.Analytics(request.user_id, request.days, request.now)
    answers = yield Plan(_with_user_check(_everywhere(shard_count, operation), request.user_id, request.user_shard))
    answers.require_all()
    _check_user(answers, request.user_id, request.user_shard)
    partials = answers.values()
    analytics = merge_analytics([reply.value for reply in partials.values()], request.days,
                                datetime.fromtimestamp(request.now, timezone.utc))
    return ops.Cached(analytics, all(reply.cache_hit for reply in partials.values()))


def _delete_user(request: ops.DeleteUserRequest, shard_count: int) -> Flow:
    checked = yield Plan({request.user_shard: [ops.UserExists(request.user_id)]})
    checked.require_all()
    _check_user(checked, request.user_id, request.user_shard)
    answers = yield Plan(_everywhere(shard_count, ops.DeleteUserData(request.user_id)))
    return _totals(answers, ("sessions_deleted", "messages_deleted"))


def _purge(request: ops.PurgeRequest, shard_count: int) -> Flow:
    answers = yield Plan(_everywhere(shard_count, ops.Purge(request.cutoff_epoch, request.user_id)))
    return _totals(answers, ("messages_deleted", "sessions_deleted"))


def _totals(answers: Answers, keys: tuple[str, ...]) -> dict[str, int]:
    answers.require_all()
    parts = answers.values().values()
    return {key: sum(part[key] for part in parts) for key in keys}


def _list_users(request: ops.ListUsersRequest, shard_count: int) -> Flow:
    answers = yield Plan(_everywhere(shard_count, ops.ListUsers()))
    answers.require_all()
    return sorted({user for users in answers.values().values() for user in users})


def _summed(operation: ops.ShardOperation) -> Callable[[Any, int], Flow]:
    def flow(request: Any, shard_count: int) -> Flow:
        answers = yield Plan(_everywhere(shard_count, operation))
        answers.require_all()
        return sum(answers.values().values())
    return flow


_FLOWS: dict[type, Callable[[Any, int], Flow]] = {
    ops.SearchRequest: _search,
    ops.ListSessionsRequest: _list_sessions,
    ops.AnalyticsRequest: _analytics,
    ops.DeleteUserRequest: _delete_user,
    ops.PurgeRequest: _purge,
    ops.ListUsersRequest: _list_users,
    ops.ClearCacheRequest: _summed(ops.ClearCache()),
    ops.EmbedPendingRequest: _summed(ops.EmbedPending()),
}
