"""engine.fan_out without any actor: each flow's plans and how it merges the shards' replies."""

from __future__ import annotations

import pytest

from engine import operations as ops
from engine.errors import RequestTimeout, SessionNotFound, ShardUnavailable, UserNotFound
from engine.fan_out import Answers, flow_for


def _drive(request, shard_count, answer):
    """Run a flow with `answer(plan) -> Answers`; returns (plans seen, result)."""
    flow = flow_for(request, shard_count)
    plans = []
    try:
        plan = next(flow)
        while True:
            plans.append(plan)
            plan = flow.send(answer(plan))
    except StopIteration as finished:
        return plans, finished.value


def _all_answer(values):
    """Every shard answers each operation with values[type name](shard, op)."""
    def answer(plan):
        return Answers({shard: [ops.Reply(True, values[type(op).__name__](shard, op)) for op in batch]
                        for shard, batch in plan.per_shard.items()})
    return answer


def _hit(content, score, epoch, session="s"):
    return {"content": content, "relevance_score": score, "timestamp_epoch": epoch, "session_id": session,
            "message_id": content}


STATS = {"doc_count": 1, "total_length": 3, "doc_freq": {"x": 1}}


def test_text_search_sums_statistics_then_merges_top_k_across_shards():
    """Phase 1 asks every shard for statistics (and the user's shard whether the user exists); phase 2
    scores with the summed statistics; hits merge by score, totals add up."""
    parts = {0: ops.SearchPart([_hit("a", 3.0, 1), _hit("c", 1.0, 3)], 2), 1: ops.SearchPart([_hit("b", 2.0, 2)], 1)}
    plans, result = _drive(ops.SearchRequest("u", 1, "text", ["x"], 0, 2), 2, _all_answer({
        "SearchStats": lambda shard, op: STATS, "UserExists": lambda shard, op: True,
        "Search": lambda shard, op: ops.Cached(parts[shard], shard == 0)}))
    assert [type(op).__name__ for op in plans[0].per_shard[1]] == ["SearchStats", "UserExists"]
    assert plans[1].per_shard[0][0].global_stats["doc_count"] == 2
    assert [hit["content"] for hit in result.results] == ["a", "b"] and result.total == 3
    assert result.shards_failed == [] and result.cache_hit is False


def test_search_with_a_silent_shard_is_partial_and_with_none_is_unavailable():
    """A shard that does not answer is listed in shards_failed; when none answers the call fails."""
    def answer(plan):
        answers = _all_answer({"SearchStats": lambda s, op: STATS, "UserExists": lambda s, op: True,
                               "Search": lambda s, op: ops.Cached(ops.SearchPart([_hit("a", 1.0, 1)], 1), False)})(plan)
        answers.replies.pop(1, None)
        answers.timed_out.append(1)
        return answers
    _, result = _drive(ops.SearchRequest("u", 0, "text", ["x"], 0, 5), 2, answer)
    assert result.shards_failed == [1] and result.total == 1
    with pytest.raises(ShardUnavailable):
        _drive(ops.SearchRequest("u", 0, "text", ["x"], 0, 5), 2, lambda plan: Answers({}, timed_out=[0, 1]))


def test_search_for_an_unknown_user_is_user_not_found():
    """The profile's shard answering that the user does not exist ends the search with UserNotFound."""
    with pytest.raises(UserNotFound):
        _drive(ops.SearchRequest("ghost", 0, "text", ["x"], 0, 5), 2, _all_answer({
            "SearchStats": lambda s, op: STATS, "UserExists": lambda s, op: False}))


def test_hybrid_fuses_both_rankings_sorts_by_recent_and_counts_the_fused_set():
    """Hybrid asks for vector hits in phase 1 and text hits in phase 2, fuses them by RRF, counts the
    union, and sort=recent orders the fused hits newest first."""
    text = ops.SearchPart([_hit("t1", 2.0, 10), _hit("both", 1.0, 30)], 2)
    vector = ops.SearchPart([_hit("both", 0.9, 30), _hit("v1", 0.8, 20)], 2, pending=4)
    request = ops.SearchRequest("u", 0, "hybrid", ["x"], 0, 10, sort="recent", vector=[1.0])
    plans, result = _drive(request, 1, _all_answer({
        "SearchStats": lambda s, op: STATS, "VectorSearch": lambda s, op: vector, "UserExists": lambda s, op: True,
        "Search": lambda s, op: ops.Cached(text, False)}))
    assert [type(op).__name__ for op in plans[0].per_shard[0]] == ["SearchStats", "VectorSearch", "UserExists"]
    assert result.total == 3 and result.pending == 4
    assert [hit["content"] for hit in result.results] == ["both", "v1", "t1"]


def test_exact_reads_need_every_shard():
    """Listings fail with TIMEOUT when a shard is silent and SHARD_UNAVAILABLE when one is unreachable."""
    request = ops.ListSessionsRequest("u", 0)
    with pytest.raises(RequestTimeout):
        _drive(request, 2, lambda plan: Answers({0: [ops.Reply(True, ops.Cached([], False))] * 2}, timed_out=[1]))
    with pytest.raises(ShardUnavailable):
        _drive(request, 2, lambda plan: Answers({0: [ops.Reply(True, ops.Cached([], False))] * 2}, unreachable=[1]))


def test_list_sessions_merges_newest_first_and_reports_the_user():
    """Sessions of every shard merge newest first; the cache hit holds only if every shard hit."""
    sessions = {0: [{"created_at": "2026-01-01", "session_id": "a"}], 1: [{"created_at": "2026-02-01", "session_id": "b"}]}
    _, result = _drive(ops.ListSessionsRequest("u", 1), 2, _all_answer({
        "ListUserSessions": lambda shard, op: ops.Cached(sessions[shard], True), "UserExists": lambda s, op: True}))
    assert [s["session_id"] for s in result.sessions] == ["b", "a"] and result.user_exists and result.cache_hit


def test_an_operation_error_on_a_shard_is_raised():
    """An EngineError a shard answered is raised by the merge (it is not silently dropped)."""
    def answer(plan):
        return Answers({shard: [ops.Reply(False, SessionNotFound("gone"))] for shard in plan.per_shard})
    with pytest.raises(SessionNotFound):
        _drive(ops.PurgeRequest(1.0), 2, answer)


def test_delete_user_checks_the_profile_shard_first_and_sums_totals():
    """delete_user asks the profile's shard first (UserNotFound stops it) and then deletes everywhere."""
    plans, totals = _drive(ops.DeleteUserRequest("u", 1), 3, _all_answer({
        "UserExists": lambda s, op: True,
        "DeleteUserData": lambda shard, op: {"sessions_deleted": 1, "messages_deleted": shard, "profile_deleted": 0}}))
    assert list(plans[0].per_shard) == [1] and totals == {"sessions_deleted": 3, "messages_deleted": 3}
    with pytest.raises(UserNotFound):
        _drive(ops.DeleteUserRequest("u", 1), 3, _all_answer({"UserExists": lambda s, op: False}))


def test_analytics_merge_the_partials_over_the_requests_window_and_hit_only_when_every_shard_hit():
    """Analytics merge every shard's partial; the window ends at the request's `now`."""
    partial = {"sessions": 1, "messages": 2, "by_role": {"user": 2, "assistant": 0, "system": 0, "tool": 0},
               "days": ["2026-01-01"], "last_activity": 100.0, "first_half": 1, "second_half": 1}
    _, result = _drive(ops.AnalyticsRequest("u", 0, 30, 1_000_600.0), 2, _all_answer({
        "Analytics": lambda shard, op: ops.Cached(partial, shard == 0), "UserExists": lambda s, op: True}))
    assert result.value["total_messages"] == 4 and result.value["window_end"].startswith("1970-01-12T13:56:40")
    assert result.cache_hit is False


def test_search_limited_to_sessions_on_silent_shards_is_unavailable_not_empty():
    """When every session a search is limited to lives on a shard that did not answer, the search is
    SHARD_UNAVAILABLE rather than an empty partial result."""
    from engine.routing import shard_index_for
    session = next(s for s in (f"s{i}" for i in range(50)) if shard_index_for("u", s, 2) == 1)

    def answer(plan):
        answers = _all_answer({"SearchStats": lambda s, op: STATS, "UserExists": lambda s, op: True,
                               "Search": lambda s, op: ops.Cached(ops.SearchPart([], 0), False)})(plan)
        answers.replies.pop(1, None)
        answers.timed_out.append(1)
        return answers
    with pytest.raises(ShardUnavailable):
        _drive(ops.SearchRequest("u", 0, "text", ["x"], 0, 5, {"session_ids": [session]}), 2, answer)
    _, result = _drive(ops.SearchRequest("u", 0, "text", ["x"], 0, 5), 2, answer)
    assert result.shards_failed == [1]
