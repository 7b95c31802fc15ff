"""FFChatDataLayer end to end on local Ray: behaviour, envelope shape and bad input of every data call."""

import asyncio
import json


from tests.factories import message

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray

METADATA_KEYS = {"operation", "operation_time_ms", "records_affected", "performance_metrics", "cache_hit",
                 "optimization_applied", "error_code"}


def assert_envelope(result, operation, success=True, code=None):
    assert set(result) == {"success", "data", "metadata", "error", "warnings"}
    assert set(result["metadata"]) == METADATA_KEYS
    assert result["metadata"]["operation"] == operation
    assert result["success"] is success, result
    if success:
        assert result["error"] is None and result["metadata"]["error_code"] is None
        assert result["metadata"]["optimization_applied"] is True
    else:
        assert result["data"] is None and result["metadata"]["records_affected"] == 0
        assert result["metadata"]["error_code"] == code, result
        assert isinstance(result["error"], str) and result["error"]


async def test_store_returns_ids_and_history_reads_back(data, session):
    """A stored message comes back in history with its id, role, content and UTC timestamp."""
    user_id, session_id = session
    result = await data.store_chat_message(user_id, session_id, message("Hello there", metadata={"k": [1]}))
    assert_envelope(result, "store_chat_message")
    assert result["metadata"]["records_affected"] == 1
    assert result["data"]["message_id"].startswith("msg_") and result["data"]["duplicate"] is False
    history = await data.get_chat_history(user_id, session_id)
    assert_envelope(history, "get_chat_history")
    stored = history["data"]["messages"][0]
    assert set(stored) == {"role", "content", "message_id", "timestamp", "attachments", "metadata"}
    assert stored["content"] == "Hello there" and stored["metadata"] == {"k": [1]}
    assert stored["timestamp"].endswith("+00:00")


async def test_store_with_message_id_is_idempotent(data, session):
    """A replayed message_id is a duplicate (nothing written); other content is INVALID_ARGUMENT."""
    user_id, session_id = session
    first = await data.store_chat_message(user_id, session_id, message("once", message_id="fixed-1"))
    again = await data.store_chat_message(user_id, session_id, message("once", message_id="fixed-1"))
    assert again["success"] and again["data"]["duplicate"] and again["metadata"]["records_affected"] == 0
    assert again["data"]["timestamp"] == first["data"]["timestamp"]
    clash = await data.store_chat_message(user_id, session_id, message("different", message_id="fixed-1"))
    assert_envelope(clash, "store_chat_message", False, "INVALID_ARGUMENT")
    assert (await data.get_chat_history(user_id, session_id))["data"]["total_count"] == 1


async def test_store_bad_inputs_get_codes_and_write_nothing(data, session):
    """Hostile inputs get a clear error code and leave the session untouched."""
    user_id, session_id = session
    cases = [
        (("", session_id, message("x")), "INVALID_ID"),
        ((None, session_id, message("x")), "INVALID_ID"),
        ((user_id, "../../etc/passwd", message("x")), "INVALID_ID"),
        ((user_id, "a" * 129, message("x")), "INVALID_ID"),
        ((123, session_id, message("x")), "INVALID_ID"),
        ((user_id, session_id, "not a dict"), "INVALID_MESSAGE"),
        ((user_id, session_id, {"role": "user", "content": "   "}), "INVALID_MESSAGE"),
        ((user_id, session_id, {"content": "no role"}), "INVALID_MESSAGE"),
        ((user_id, session_id, {"role": "admin", "content": "x"}), "INVALID_MESSAGE"),
        ((user_id, session_id, {"role": "user", "content": ["list"]}), "INVALID_MESSAGE"),
        ((user_id, session_id, message("x" * (1024 * 1024 + 1))), "MESSAGE_TOO_LARGE"),
        ((user_id, session_id, message("x", metadata={"big": "y" * 70000})), "MESSAGE_TOO_LARGE"),
        ((user_id, session_id, message("x", metadata={1: "int key"})), "INVALID_MESSAGE"),
        ((user_id, session_id, message("x", attachments="nope")), "INVALID_MESSAGE"),
        ((user_id, session_id, message("x", timestamp="not a time")), "INVALID_MESSAGE"),
        ((user_id, "no-such-session", message("x")), "SESSION_NOT_FOUND"),
        (("someone-else", session_id, message("x")), "SESSION_NOT_FOUND"),
    ]
    for args, code in cases:
        result = await data.store_chat_message(*args)
        assert_envelope(result, "store_chat_message", False, code)
    empty = await data.store_chat_message("", session_id, message("x"))
    assert empty["error"] == "User ID cannot be empty"
    assert (await data.get_chat_history(user_id, session_id))["data"]["total_count"] == 0


async def test_unknown_message_keys_are_dropped_with_a_warning(data, session):
    """Unknown keys are ignored and reported; caller metadata is not mutated."""
    user_id, session_id = session
    metadata = {"a": {"b": 1}}
    result = await data.store_chat_message(user_id, session_id, message("x", metadata=metadata, mood="happy"))
    assert result["success"] and result["warnings"] == ["Ignored unknown message keys: ['mood']"]
    assert metadata == {"a": {"b": 1}}


async def test_batch_store_is_all_or_nothing_and_contiguous(data, session):
    """A batch validates everything first; the first failure names its index; [] succeeds."""
    user_id, session_id = session
    bad = await data.store_chat_messages(user_id, session_id, [message("ok"), message("ok2"), {"role": "user"}])
    assert_envelope(bad, "store_chat_messages", False, "INVALID_MESSAGE")
    assert bad["error"].startswith("messages[2]: ")
    repeated = await data.store_chat_messages(user_id, session_id, [message("a", message_id="x1"),
                                                                    message("b", message_id="x1")])
    assert_envelope(repeated, "store_chat_messages", False, "INVALID_ARGUMENT")
    too_many = await data.store_chat_messages(user_id, session_id, [message("m")] * 101)
    assert_envelope(too_many, "store_chat_messages", False, "INVALID_ARGUMENT")
    assert (await data.get_chat_history(user_id, session_id))["data"]["total_count"] == 0
    good = await data.store_chat_messages(user_id, session_id, [message(f"b{i}") for i in range(5)])
    assert_envelope(good, "store_chat_messages")
    assert good["data"]["count"] == 5 and good["metadata"]["records_affected"] == 5
    empty = await data.store_chat_messages(user_id, session_id, [])
    assert empty["success"] and empty["data"]["count"] == 0
    replay = await data.store_chat_messages(user_id, session_id, [
        message("b0", message_id=good["data"]["message_ids"][0]), message("new")])
    assert replay["data"]["count"] == 1 and replay["data"]["duplicates"] == 1


async def test_concurrent_stores_keep_acknowledgement_order(data, session):
    """Concurrent stores to one session land in the order they were acknowledged."""
    user_id, session_id = session
    acknowledged = []

    async def store(i):
        result = await data.store_chat_message(user_id, session_id, message(f"c{i}"))
        assert result["success"]
        acknowledged.append(result["data"]["message_id"])
    await asyncio.gather(*(store(i) for i in range(300)))
    history = await data.get_chat_history(user_id, session_id, limit=1000)
    assert [m["message_id"] for m in history["data"]["messages"]] == acknowledged


async def test_history_paging_by_offset_latest_and_cursor(data, session):
    """Offset, latest and cursor pages are oldest-first with true totals and has_more."""
    user_id, session_id = session
    stored = await data.store_chat_messages(user_id, session_id, [message(f"h{i}") for i in range(12)])
    ids = stored["data"]["message_ids"]

    async def contents(**kwargs):
        result = await data.get_chat_history(user_id, session_id, **kwargs)
        assert result["success"], result
        return [m["content"] for m in result["data"]["messages"]], result["data"]
    page, body = await contents(limit=5, offset=10)
    assert page == ["h10", "h11"] and not body["has_more"] and body["total_count"] == 12
    assert body["pagination"] == {"limit": 5, "offset": 10, "returned_count": 2, "has_next_page": False,
                                  "before": None, "after": None, "latest": False}
    page, body = await contents(limit=3, latest=True)
    assert page == ["h9", "h10", "h11"] and body["has_more"]
    page, body = await contents(limit=3, before=ids[9])
    assert page == ["h6", "h7", "h8"] and body["has_more"]
    page, body = await contents(limit=3, after=ids[9])
    assert page == ["h10", "h11"] and not body["has_more"]
    page, body = await contents(limit=0)
    assert page == [] and body["total_count"] == 12
    default, _ = await contents()
    assert len(default) == 12


async def test_history_bad_arguments(data, session):
    """Negative, non-int or conflicting paging arguments are INVALID_ARGUMENT; unknown session is not found."""
    user_id, session_id = session
    await data.store_chat_message(user_id, session_id, message("x", message_id="cur"))
    for kwargs in [{"limit": -1}, {"limit": 10001}, {"limit": "5"}, {"limit": True}, {"offset": -1},
                   {"offset": 1.5}, {"before": "cur", "after": "cur"}, {"before": "cur", "offset": 1},
                   {"before": "cur", "latest": True}, {"before": "missing"}, {"after": "bad/id"}]:
        result = await data.get_chat_history(user_id, session_id, **kwargs)
        assert_envelope(result, "get_chat_history", False, "INVALID_ARGUMENT")
    missing = await data.get_chat_history(user_id, "nope")
    assert_envelope(missing, "get_chat_history", False, "SESSION_NOT_FOUND")


async def test_history_cache_miss_hit_and_invalidation(data, session):
    """Identical history calls miss then hit; a store or clear_cache makes the next one miss."""
    user_id, session_id = session
    await data.store_chat_message(user_id, session_id, message("cache me"))
    first = await data.get_chat_history(user_id, session_id, limit=10)
    second = await data.get_chat_history(user_id, session_id, limit=10)
    assert first["metadata"]["cache_hit"] is False and second["metadata"]["cache_hit"] is True
    assert second["metadata"]["performance_metrics"]["cache_hit"] is True
    await data.store_chat_message(user_id, session_id, message("new"))
    third = await data.get_chat_history(user_id, session_id, limit=10)
    assert third["metadata"]["cache_hit"] is False and third["data"]["total_count"] == 2
    assert (await data.get_chat_history(user_id, session_id, limit=10))["metadata"]["cache_hit"] is True
    data.clear_cache()
    assert (await data.get_chat_history(user_id, session_id, limit=10))["metadata"]["cache_hit"] is False
    third["data"]["messages"].clear()
    assert len((await data.get_chat_history(user_id, session_id, limit=10))["data"]["messages"]) == 2


async def test_stream_chunks_cover_acknowledged_messages(data, session):
    """8 messages at chunk size 3 stream as (0,3,T,3) (3,3,T,6) (6,2,F,8); an empty session yields one []."""
    user_id, session_id = session
    await data.store_chat_messages(user_id, session_id, [message(f"s{i}") for i in range(8)])
    infos = []
    async for chunk in data.stream_conversation(user_id, session_id, chunk_size=3):
        assert_envelope(chunk, "stream_conversation")
        info = chunk["data"]["chunk_info"]
        infos.append((info["offset"], info["size"], info["has_more"], info["total_streamed"]))
    assert infos == [(0, 3, True, 3), (3, 3, True, 6), (6, 2, False, 8)]
    empty_session = await data.storage.create_session(user_id, "empty")
    chunks = [c async for c in data.stream_conversation(user_id, empty_session)]
    assert len(chunks) == 1 and chunks[0]["data"]["chunk"] == []
    assert chunks[0]["data"]["chunk_info"] == {"offset": 0, "size": 0, "has_more": False, "total_streamed": 0}
    for kwargs, code in [({"chunk_size": 0}, "INVALID_ARGUMENT"), ({"chunk_size": "3"}, "INVALID_ARGUMENT")]:
        failures = [c async for c in data.stream_conversation(user_id, session_id, **kwargs)]
        assert len(failures) == 1
        assert_envelope(failures[0], "stream_conversation", False, code)
    missing = [c async for c in data.stream_conversation(user_id, "missing")]
    assert_envelope(missing[0], "stream_conversation", False, "SESSION_NOT_FOUND")


async def test_search_ranks_filters_and_pages(data, session):
    """Search ranks real matches (BM25), filters by role/session/time, sorts, pages and counts totals."""
    user_id, session_id = session
    other = await data.storage.create_session(user_id, "other")
    await data.store_chat_messages(user_id, session_id, [
        message("python python python tips"), message("java tips", role="assistant"),
        message("python", role="assistant"), message("nothing relevant", timestamp="2020-01-01T00:00:00Z")])
    await data.store_chat_message(user_id, other, message("python elsewhere"))
    result = await data.search_conversations(user_id, "Python")
    assert_envelope(result, "search_conversations")
    results = result["data"]["results"]
    assert result["data"]["search_metadata"]["total_matches"] == 3
    assert all("python" in r["content"] for r in results)
    assert results[0]["relevance_score"] >= results[1]["relevance_score"] >= results[2]["relevance_score"]
    assert {"session_id", "relevance_score", "result_type", "message_id"} <= set(results[0])
    assert "pyth" not in [r["content"] for r in (await data.search_conversations(user_id, "pyth"))["data"]["results"]]
    roles = await data.search_conversations(user_id, "python tips", {"roles": ["assistant"]})
    assert {r["role"] for r in roles["data"]["results"]} == {"assistant"}
    scoped = await data.search_conversations(user_id, "python", {"session_ids": [other]})
    assert [r["session_id"] for r in scoped["data"]["results"]] == [other]
    assert (await data.search_conversations(user_id, "python", {"session_ids": []}))["data"]["results"] == []
    timed = await data.search_conversations(user_id, "relevant", {"end_time": "2021-01-01T00:00:00"})
    assert len(timed["data"]["results"]) == 1
    paged = await data.search_conversations(user_id, "python", {"limit": 1, "offset": 1})
    assert paged["data"]["results"][0]["message_id"] == results[1]["message_id"]
    assert paged["data"]["search_metadata"]["total_matches"] == 3
    recent = await data.search_conversations(user_id, "python", {"sort": "recent"})
    assert recent["data"]["results"][0]["content"] == "python elsewhere"
    nothing = await data.search_conversations(user_id, "!!!")
    assert nothing["success"] and nothing["warnings"] == ["Query has no searchable terms"]
    unknown = await data.search_conversations(user_id, "python", {"bogus": 1})
    assert unknown["warnings"] == ["Ignored unknown search options: ['bogus']"]


async def test_search_bad_inputs(data, session):
    """Blank or huge queries, bad options and unknown users fail with their codes."""
    user_id, _ = session
    cases = [(("",), "INVALID_ARGUMENT"), ((None,), "INVALID_ARGUMENT"), (("x" * 1025,), "INVALID_ARGUMENT"),
             (("q", {"search_type": "fuzzy"}), "INVALID_ARGUMENT"), (("q", {"limit": -1}), "INVALID_ARGUMENT"),
             (("q", {"roles": ["boss"]}), "INVALID_ARGUMENT"), (("q", {"sort": "best"}), "INVALID_ARGUMENT"),
             (("q", {"start_time": "soon"}), "INVALID_ARGUMENT"), (("q", "options"), "INVALID_ARGUMENT"),
             (("q", {"search_type": "vector"}), "VECTOR_SEARCH_UNAVAILABLE")]
    for args, code in cases:
        assert_envelope(await data.search_conversations(user_id, *args), "search_conversations", False, code)
    blank = await data.search_conversations(user_id, "   ")
    assert blank["error"] == "Search query cannot be empty"
    assert_envelope(await data.search_conversations("ghost-user", "q"), "search_conversations", False,
                    "USER_NOT_FOUND")


async def test_users_never_see_each_other(data):
    """Two users with the same session id never see each other's messages in history, search or analytics."""
    for user in ("iso-a", "iso-b"):
        await data.storage.create_session(user, "shared", session_id="same-id")
        await data.store_chat_message(user, "same-id", message(f"secret of {user}"))
    for user, other in (("iso-a", "iso-b"), ("iso-b", "iso-a")):
        history = await data.get_chat_history(user, "same-id")
        assert [m["content"] for m in history["data"]["messages"]] == [f"secret of {user}"]
        found = await data.search_conversations(user, "secret")
        assert [r["content"] for r in found["data"]["results"]] == [f"secret of {user}"]
        assert found["data"]["search_metadata"]["total_matches"] == 1
        analytics = await data.get_analytics_summary(user)
        assert analytics["data"]["analytics"]["total_messages"] == 1


async def test_analytics_counts_window_roles_and_days(data, session):
    """Analytics counts every message in the window, by role, with distinct active days."""
    user_id, session_id = session
    await data.store_chat_messages(user_id, session_id, [message("a"), message("b", role="assistant"),
                                                         message("old", timestamp="2001-01-01T00:00:00Z")])
    result = await data.get_analytics_summary(user_id, time_range_days=7)
    assert_envelope(result, "get_analytics_summary")
    analytics = result["data"]["analytics"]
    assert analytics["total_messages"] == 2 and analytics["total_sessions"] == 1
    assert analytics["messages_by_role"] == {"user": 1, "assistant": 1, "system": 0, "tool": 0}
    assert analytics["usage_patterns"]["active_days"] == 1 and analytics["time_range_days"] == 7
    assert result["metadata"]["records_affected"] == 2
    for bad in (0, 3651, "7", 1.5):
        assert_envelope(await data.get_analytics_summary(user_id, bad), "get_analytics_summary", False,
                        "INVALID_ARGUMENT")
    assert_envelope(await data.get_analytics_summary("nobody-here"), "get_analytics_summary", False,
                    "USER_NOT_FOUND")


async def test_list_sessions_newest_first_with_exact_counts(data):
    """list_sessions pages the user's sessions newest first with exact message counts."""
    user_id = "lister"
    ids = [await data.storage.create_session(user_id, f"t{i}") for i in range(3)]
    await data.store_chat_messages(user_id, ids[0], [message("x"), message("y")])
    result = await data.list_sessions(user_id, limit=2)
    assert_envelope(result, "list_sessions")
    body = result["data"]
    assert body["total_count"] == 3 and body["has_more"] and len(body["sessions"]) == 2
    assert [s["session_id"] for s in body["sessions"]] == [ids[2], ids[1]]
    everything = (await data.list_sessions(user_id))["data"]["sessions"]
    assert {s["session_id"]: s["message_count"] for s in everything}[ids[0]] == 2
    assert_envelope(await data.list_sessions(user_id, limit=-1), "list_sessions", False, "INVALID_ARGUMENT")
    assert_envelope(await data.list_sessions("nobody-x"), "list_sessions", False, "USER_NOT_FOUND")


async def test_delete_session_and_user_cascade(data):
    """Deleting a session or a user removes messages from history and search."""
    user_id = "deleter"
    keep = await data.storage.create_session(user_id, "keep")
    drop = await data.storage.create_session(user_id, "drop")
    await data.store_chat_message(user_id, keep, message("keep words"))
    await data.store_chat_message(user_id, drop, message("drop words"))
    result = await data.delete_session(user_id, drop)
    assert_envelope(result, "delete_session")
    assert result["data"] == {"session_id": drop, "deleted": True, "messages_deleted": 1}
    assert [r["content"] for r in (await data.search_conversations(user_id, "words"))["data"]["results"]] == [
        "keep words"]
    assert_envelope(await data.delete_session(user_id, drop), "delete_session", False, "SESSION_NOT_FOUND")
    gone = await data.delete_user(user_id)
    assert_envelope(gone, "delete_user")
    assert gone["data"]["sessions_deleted"] == 1 and gone["data"]["messages_deleted"] == 1
    assert_envelope(await data.get_chat_history(user_id, keep), "get_chat_history", False, "SESSION_NOT_FOUND")
    assert_envelope(await data.delete_user(user_id), "delete_user", False, "USER_NOT_FOUND")


async def test_export_then_import_reproduces_history(data, session, tmp_path):
    """Export to JSONL (text or atomic file) and import under another user reproduces the history."""
    user_id, session_id = session
    await data.store_chat_messages(user_id, session_id, [
        message("one", metadata={"m": 1}), message("two", role="assistant", attachments=["a.png"])])
    exported = await data.export_session(user_id, session_id)
    assert_envelope(exported, "export_session")
    lines = exported["data"]["jsonl"].splitlines()
    assert json.loads(lines[0])["format"] == "ffchat-session" and len(lines) == 3
    target = tmp_path / "out" / "s.jsonl"
    to_file = await data.export_session(user_id, session_id, path=target)
    assert to_file["data"]["jsonl"] is None and target.read_text() == exported["data"]["jsonl"]
    imported = await data.import_session("importer", path=target)
    assert_envelope(imported, "import_session")
    assert imported["data"]["imported"] == 2
    original = (await data.get_chat_history(user_id, session_id))["data"]["messages"]
    copy = (await data.get_chat_history("importer", session_id))["data"]["messages"]
    assert copy == original
    conflict = await data.import_session("importer", jsonl=exported["data"]["jsonl"])
    assert_envelope(conflict, "import_session", False, "INVALID_ARGUMENT")
    merged = await data.import_session("importer", jsonl=exported["data"]["jsonl"], on_conflict="merge")
    assert merged["data"]["imported"] == 0 and merged["data"]["skipped"] == 2
    renamed = await data.import_session("importer", jsonl=exported["data"]["jsonl"], session_id="renamed")
    assert renamed["data"]["session_id"] == "renamed"
    broken = await data.import_session("importer", jsonl=lines[0] + "\n{not json\n", session_id="x2")
    assert_envelope(broken, "import_session", False, "INVALID_ARGUMENT")
    assert "line 2" in broken["error"]
    both = await data.import_session("importer", path=target, jsonl="x")
    assert_envelope(both, "import_session", False, "INVALID_ARGUMENT")


async def test_purge_deletes_only_old_messages(data, session):
    """purge_older_than deletes messages older than the cutoff and keeps users."""
    user_id, session_id = session
    await data.store_chat_messages(user_id, session_id, [message("ancient", timestamp="2000-01-01T00:00:00Z"),
                                                         message("fresh")])
    result = await data.purge_older_than(365, user_id=user_id)
    assert_envelope(result, "purge_older_than")
    assert result["data"]["messages_deleted"] == 1
    history = await data.get_chat_history(user_id, session_id)
    assert [m["content"] for m in history["data"]["messages"]] == ["fresh"]
    for bad in (0, -1, 36501, "1", True):
        assert_envelope(await data.purge_older_than(bad), "purge_older_than", False, "INVALID_ARGUMENT")


async def test_performance_metrics_are_real(data, session):
    """Metrics count every call, errors, real cache hits and report percentiles and memory."""
    user_id, session_id = session
    data.reset_metrics()
    await data.store_chat_message(user_id, session_id, message("m"))
    await data.store_chat_message("", session_id, message("m"))
    await data.get_chat_history(user_id, session_id, limit=3)
    await data.get_chat_history(user_id, session_id, limit=3)
    metrics = await data.fetch_performance_metrics()
    store = metrics["operation_metrics"]["store_chat_message"]
    assert store["total_operations"] == 2 and store["error_count"] == 1
    assert {"average_ms", "min_ms", "max_ms", "recent_avg_ms", "p50_ms", "p95_ms", "p99_ms"} <= set(store)
    cache = metrics["cache_stats"]
    assert (cache["cache_hits"], cache["cache_misses"]) == (1, 1) and cache["cache_hit_rate"] == 0.5
    assert cache["cache_hit_ratio"] == cache["cache_hit_rate"] and cache["cache_size"] >= 1
    assert metrics["total_operations"] == 4 and metrics["error_count"] == 1
    system = metrics["system_metrics"]
    assert system["driver_memory_mb"] > 0 and system["cluster_memory_breakdown_mb"]["actors"] > 0
    assert len(system["shard_cache_bytes"]) == 2
