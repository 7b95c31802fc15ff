"""Shard state: order and totals across restarts, paging, idempotency, deletion, purge, analytics."""

import pytest

from engine.errors import InvalidInput, SessionNotFound
from tests.factories import message, open_shard


@pytest.fixture
def shard(tmp_path):
    shard = open_shard(tmp_path)
    shard.create_user("alice", {"name": "Alice"})
    shard.create_session("alice", "s1")
    shard.commit()
    yield shard
    shard.close()


def _ids(page):
    return [m["content"] for m in page["messages"]]


def test_append_after_restart_keeps_order_and_totals(tmp_path):
    """Messages keep acknowledgement order and exact totals across a restart."""
    shard = open_shard(tmp_path)
    shard.create_session("alice", "s1")
    for i in range(5):
        shard.append("alice", "s1", [message(f"m{i}")])
        shard.commit()
    shard.append("alice", "s1", [message("m5"), message("m6")])
    shard.close()
    shard = open_shard(tmp_path)
    page, _ = shard.history("alice", "s1", 100)
    assert _ids(page) == [f"m{i}" for i in range(7)] and page["total_count"] == 7
    shard.append("alice", "s1", [message("m7")])
    assert shard.history("alice", "s1", 100)[0]["total_count"] == 8
    shard.close()


def test_offset_and_latest_paging(shard):
    """Offset pages count from the oldest, `latest` pages from the newest; both are oldest-first."""
    shard.append("alice", "s1", [message(f"m{i}") for i in range(10)])
    page, _ = shard.history("alice", "s1", 3, offset=2)
    assert _ids(page) == ["m2", "m3", "m4"] and page["has_more"]
    page, _ = shard.history("alice", "s1", 3, offset=8)
    assert _ids(page) == ["m8", "m9"] and not page["has_more"]
    page, _ = shard.history("alice", "s1", 3, latest=True)
    assert _ids(page) == ["m7", "m8", "m9"] and page["has_more"]
    page, _ = shard.history("alice", "s1", 3, offset=8, latest=True)
    assert _ids(page) == ["m0", "m1"] and not page["has_more"]
    assert _ids(shard.history("alice", "s1", 0)[0]) == []


def test_cursor_paging_walks_both_directions(shard):
    """before/after cursors give the neighbouring pages and has_more in the paging direction."""
    result = shard.append("alice", "s1", [message(f"m{i}") for i in range(7)])
    ids = result["message_ids"]
    page, _ = shard.history("alice", "s1", 3, before=ids[5])
    assert _ids(page) == ["m2", "m3", "m4"] and page["has_more"]
    page, _ = shard.history("alice", "s1", 3, before=ids[2])
    assert _ids(page) == ["m0", "m1"] and not page["has_more"]
    page, _ = shard.history("alice", "s1", 3, after=ids[1])
    assert _ids(page) == ["m2", "m3", "m4"] and page["has_more"]
    page, _ = shard.history("alice", "s1", 3, after=ids[4])
    assert _ids(page) == ["m5", "m6"] and not page["has_more"]
    with pytest.raises(InvalidInput):
        shard.history("alice", "s1", 3, before="nope")


def test_append_is_idempotent_on_message_id(shard):
    """Re-appending a message_id with the same content is a duplicate; other content is refused."""
    first = shard.append("alice", "s1", [message("hello", message_id="m1")])
    again = shard.append("alice", "s1", [message("hello", message_id="m1")])
    assert first["count"] == 1 and again["count"] == 0 and again["duplicates"] == 1
    assert again["records"][0]["duplicate"] and again["records"][0]["timestamp"] == first["records"][0]["timestamp"]
    with pytest.raises(InvalidInput) as caught:
        shard.append("alice", "s1", [message("other", message_id="m1")])
    assert "already used with different content" in str(caught.value)
    with pytest.raises(InvalidInput):
        shard.append("alice", "s1", [message("a", message_id="x"), message("b", message_id="x")])
    assert shard.history("alice", "s1", 10)[0]["total_count"] == 1


def test_sessions_are_scoped_to_their_user(shard):
    """Another user's session with the same id is a different session; unknown is SessionNotFound."""
    shard.create_session("bob", "s1")
    shard.append("alice", "s1", [message("alice secret")])
    assert shard.history("bob", "s1", 10)[0]["messages"] == []
    with pytest.raises(SessionNotFound):
        shard.append("carol", "s1", [message("x")])


def test_cache_hits_are_real_and_writes_invalidate(shard):
    """An identical read misses then hits; a write to the session makes the next read miss."""
    shard.append("alice", "s1", [message("one")])
    assert shard.history("alice", "s1", 10)[1] is False
    assert shard.history("alice", "s1", 10)[1] is True
    shard.append("alice", "s1", [message("two")])
    page, hit = shard.history("alice", "s1", 10)
    assert hit is False and _ids(page) == ["one", "two"]
    assert shard.cache.hits == 1 and shard.cache.misses == 2


def test_delete_session_removes_messages_and_postings(shard, tmp_path):
    """Deleting a session removes it, its messages and its search postings, durably."""
    shard.append("alice", "s1", [message("findable words")])
    assert shard.delete_session("alice", "s1") == 1
    stats = shard.search_stats("alice", ["findable"])
    assert stats["doc_freq"]["findable"] == 0
    assert shard.search("alice", ["findable"], stats, 10)[0]["total"] == 0
    shard.close()
    reopened = open_shard(tmp_path)
    assert reopened.get_session("alice", "s1") is None
    reopened.close()


def test_purge_deletes_old_messages_and_empty_sessions(shard):
    """Purge removes messages older than the cutoff and replays the same way."""
    shard.append("alice", "s1", [message("old", timestamp="2020-01-01T00:00:00+00:00"), message("new")])
    result = shard.purge(1600000000.0)
    assert result["messages_deleted"] == 1
    assert _ids(shard.history("alice", "s1", 10)[0]) == ["new"]


def test_user_profile_create_update_delete(shard):
    """Profiles keep every key, merge preferences shallowly and bump updated_at."""
    assert shard.create_user("alice") is False
    assert shard.update_user("alice", {"preferences": {"theme": "dark"}, "name": "A2"})
    profile = shard.get_user("alice")
    assert profile["name"] == "A2" and profile["preferences"] == {"theme": "dark"}
    assert shard.delete_profile("alice") and shard.get_user("alice") is None


def test_execute_runs_a_batch_with_one_commit(shard):
    """execute() runs many operations and commits them as one log write; errors are per operation."""
    commits = shard.log.commits
    results = shard.execute([("append", ("alice", "s1", [message(f"m{i}")]), {}) for i in range(50)]
                            + [("append", ("alice", "missing", [message("x")]), {})])
    assert all(ok for ok, _ in results[:50]) and results[50][0] is False
    assert isinstance(results[50][1], SessionNotFound)
    assert shard.log.commits == commits + 1


def test_stats_report_ram_per_message(shard):
    """stats() reports the RAM held per stored message."""
    shard.append("alice", "s1", [message("some content here") for _ in range(100)])
    stats = shard.stats()
    assert stats["messages"] == 100 and 100 < stats["ram_bytes_per_message"] < 10_000


def test_superseded_shard_cannot_commit_after_successor_opened(tmp_path):
    """Fencing: when a successor opens the shard (new epoch), the old incarnation's next commit fails
    and nothing it tried to write reaches the log (simulates a node declared dead that still runs)."""
    from engine.errors import StaleEpoch
    old = open_shard(tmp_path)
    old.create_session("u", "s")
    old.append("u", "s", [message("acknowledged")])
    old.commit()
    # Across nodes the flock does not protect a shared filesystem; only the epoch does. Drop the
    # old holder's flock to model that, then let the successor open.
    import os
    os.close(old.log._lock_fd)
    old.log._lock_fd = None
    successor = open_shard(tmp_path)
    old.append("u", "s", [message("from the stale incarnation")])
    with pytest.raises(StaleEpoch):
        old.commit()
    successor.append("u", "s", [message("from the successor")])
    successor.close()
    reopened = open_shard(tmp_path)
    assert [m["content"] for m in reopened.read_range("u", "s", 0, 10)["messages"]] == [
        "acknowledged", "from the successor"]
    reopened.close()
