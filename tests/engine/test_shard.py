"""Shard state: order and totals across restarts, paging, idempotency, deletion, purge, analytics."""

import os
import time
from datetime import datetime, timezone

import pytest

from engine import operations as ops
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
    ids = result.message_ids
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
    assert first.count == 1 and again.count == 0 and again.duplicates == 1
    assert again.records[0]["duplicate"] and again.records[0]["timestamp"] == first.records[0]["timestamp"]
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
    assert shard.state.cache.hits == 1 and shard.state.cache.misses == 2


def test_delete_session_removes_messages_and_postings(shard, tmp_path):
    """Deleting a session removes it, its messages and its search postings, durably."""
    shard.append("alice", "s1", [message("findable words")])
    assert shard.delete_session("alice", "s1") == 1
    stats = shard.search_stats("alice", ["findable"])
    assert stats["doc_freq"]["findable"] == 0
    assert shard.search("alice", ["findable"], stats, 10).value.total == 0
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
    results = shard.execute([ops.Append("alice", "s1", [message(f"m{i}")]) for i in range(50)]
                            + [ops.Append("alice", "missing", [message("x")])])
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
    os.close(old.log._fence.lock_handle)
    old.log._fence.lock_handle = None
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


def test_compaction_removes_deleted_data_from_disk_and_keeps_live_data(tmp_path):
    """After deletes, compaction rewrites the log: deleted text is gone from the files, live data
    (order, ids, timestamps, profiles) replays identically."""
    shard = open_shard(tmp_path)
    shard.create_user("alice", {"plan": "pro"})
    shard.create_session("alice", "keep")
    shard.create_session("alice", "drop")
    shard.append("alice", "keep", [message(f"keep {i}") for i in range(50)])
    shard.append("alice", "drop", [message("secret-to-forget") for _ in range(50)])
    shard.delete_session("alice", "drop")
    shard.commit()
    before = [m for m in shard.read_range("alice", "keep", 0, 100)["messages"]]
    result = shard.compact()
    assert result["bytes_after"] < result["bytes_before"]
    shard.append("alice", "keep", [message("after compaction")])
    shard.close()
    for name in os.listdir(os.path.join(tmp_path, "shard-0000")):
        if name.startswith("seg-"):
            with open(os.path.join(tmp_path, "shard-0000", name), "rb") as handle:
                assert b"secret-to-forget" not in handle.read()
    reopened = open_shard(tmp_path)
    after = reopened.read_range("alice", "keep", 0, 100)["messages"]
    assert after[:50] == before and after[50]["content"] == "after compaction"
    assert reopened.get_session("alice", "drop") is None and reopened.get_user("alice")["plan"] == "pro"
    reopened.close()


def test_interrupted_compaction_is_discarded_or_finished_on_open(tmp_path):
    """A compaction cut before its commit point is discarded; one cut after it is completed."""
    shard = open_shard(tmp_path)
    shard.create_session("u", "s")
    shard.append("u", "s", [message(f"m{i}") for i in range(10)])
    shard.close()
    directory = os.path.join(tmp_path, "shard-0000")
    os.makedirs(os.path.join(directory, "compact.tmp"))
    with open(os.path.join(directory, "compact.tmp", "seg-000000000099.log"), "wb") as handle:
        handle.write(b"garbage that must never be replayed")
    shard = open_shard(tmp_path)
    assert shard.read_range("u", "s", 0, 100)["total_count"] == 10
    assert not os.path.exists(os.path.join(directory, "compact.tmp"))
    shard.compact()
    shard.close()
    shard = open_shard(tmp_path)
    assert [m["content"] for m in shard.read_range("u", "s", 0, 100)["messages"]] == [f"m{i}" for i in range(10)]
    shard.close()


def test_compaction_that_fails_after_its_commit_point_keeps_serving_and_finishes_later(tmp_path, monkeypatch):
    """Finishing a committed compaction fails (EIO): the shard keeps taking writes, reports the
    compaction as pending, and a crash then leaves a log that the next open finishes intact."""
    from engine import compaction
    shard = open_shard(tmp_path)
    shard.create_session("u", "s")
    shard.append("u", "s", [message(f"m{i}") for i in range(10)])
    shard.commit()
    real = compaction.finish
    calls = []

    def fail_once(fs, directory):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "simulated EIO after the commit point")
        return real(fs, directory)
    monkeypatch.setattr(compaction, "finish", fail_once)
    shard.compact()
    assert shard.probe()["degraded"] and shard.probe()["pending_steps"] == ["compaction"]
    shard.append("u", "s", [message("after the failed finish")])
    shard.commit()
    os.close(shard.log._fence.lock_handle)  # the process dies: its lock dies with it
    shard.log._fence.lock_handle = None
    monkeypatch.setattr(compaction, "finish", real)
    assert os.path.isdir(os.path.join(tmp_path, "shard-0000", "compact.ready"))
    reopened = open_shard(tmp_path)
    assert [m["content"] for m in reopened.read_range("u", "s", 0, 100)["messages"]] == [
        f"m{i}" for i in range(10)] + ["after the failed finish"]
    assert not os.path.exists(os.path.join(tmp_path, "shard-0000", "compact.ready"))
    reopened.close()


def test_compaction_runs_by_itself_once_deleted_data_dominates(tmp_path):
    """When deleted messages exceed both 10,000 and the live count, the next batch compacts."""
    shard = open_shard(tmp_path)
    shard.create_session("u", "big")
    shard.create_session("u", "small")
    for start in range(0, 12_000, 1000):
        shard.append("u", "big", [message(f"m{start + i}") for i in range(1000)])
    shard.append("u", "small", [message("kept")])
    shard.commit()
    shard.execute([ops.DeleteSession("u", "big")])
    assert shard.compactions == 1 and shard.state.dead_messages == 0
    assert shard.stats()["log_bytes"] < 10_000
    shard.close()


def test_analytics_are_cached_until_the_users_next_write_and_exact_for_any_window(shard):
    """The analytics digest is cached per user (no per-minute buckets): asked ten minutes later it is a
    hit, and the window is still computed for the new time (a message that left it is not counted);
    the user's next write makes it a miss."""
    shard.create_session("alice", "s1")
    now = time.time()
    edge = datetime.fromtimestamp(now - 86400 + 300, timezone.utc).isoformat()
    shard.append("alice", "s1", [message("old", timestamp=edge), message("new")])
    first = shard.analytics("alice", 1, now)
    later = shard.analytics("alice", 1, now + 600)
    assert not first.cache_hit and first.value["messages"] == 2
    assert later.cache_hit and later.value["messages"] == 1
    shard.append("alice", "s1", [message("two")])
    fresh = shard.analytics("alice", 1, now + 600)
    assert not fresh.cache_hit and fresh.value["messages"] == 2


def test_tails_of_quiet_sessions_are_sealed_and_a_reopen_seals_every_tail(tmp_path):
    """The newest messages of a session stay objects while it is written to; upkeep compresses the
    tails of sessions that went quiet between two of its passes, and a reopen leaves no tail."""
    from engine.shard import Shard
    from tests.factories import engine_config
    now = [0.0]
    shard = Shard(engine_config(tmp_path), 0, monotonic=lambda: now[0])
    shard.open()
    for session in ("busy", "quiet"):
        shard.create_session("alice", session)
        shard.append("alice", session, [message(f"{session} {i}") for i in range(10)])
        shard.commit()
    tables = {s: shard.state.sessions[("alice", s)].messages for s in ("busy", "quiet")}
    shard.maintain()  # the first pass: both were written since the previous one
    assert {s: t.sealed for s, t in tables.items()} == {"busy": 0, "quiet": 0}
    shard.append("alice", "busy", [message("busy 10")])
    shard.commit()
    now[0] += 10.0
    shard.maintain()
    assert {s: t.sealed for s, t in tables.items()} == {"busy": 0, "quiet": 10}
    page, _ = shard.history("alice", "quiet", 3, latest=True)
    assert _ids(page) == ["quiet 7", "quiet 8", "quiet 9"]
    shard.close()
    shard = open_shard(tmp_path)
    table = shard.state.sessions[("alice", "busy")].messages
    assert table.sealed == len(table) == 11
    assert _ids(shard.history("alice", "busy", 2, latest=True)[0]) == ["busy 9", "busy 10"]
    shard.close()
