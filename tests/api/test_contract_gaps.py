"""Contract points the middle-floor rework closed, each with the test that failed before it:
hybrid search (4.5), vector_count (5), clear_cache (4.7), analytics caching (4.6), one deadline per
call (10.6) and import keeping updated_at (4.8). In-process bridges: no Ray."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from actors.local import LocalHandle
from api import ChatAppStorageConfig, FFChatAppBridge, StorageError
from engine import operations as ops
from tests.factories import SLOW_QUERY_WORD, message

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray
DEADLINE_SLACK_S = 0.1  # the contract's "+ 100 ms"


async def _bridge(path, **options) -> FFChatAppBridge:
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(path), shard_count=2, **options), in_process=True)
    await bridge.initialize()
    return bridge


class _SlowHandle:
    """A shard handle whose calls wait `delay_s` before reaching the shard (a slow or busy shard)."""

    def __init__(self, handle: LocalHandle, delay_s: float) -> None:
        self._handle = handle
        self._delay_s = delay_s

    def __getattr__(self, name):
        method = getattr(self._handle, name)
        delay = self._delay_s

        class _Slow:
            def options(self, **_):
                return self

            def remote(self, *args, **kwargs):
                async def call():
                    await asyncio.sleep(delay)
                    return await method.remote(*args, **kwargs)
                return asyncio.ensure_future(call())
        return _Slow()


class _HungShard:
    """A shard handle whose actor never answers (a hung process)."""

    def __getattr__(self, name):
        class _Hung:
            def options(self, **_):
                return self

            def remote(self, *args, **kwargs):
                return asyncio.get_running_loop().create_future()  # never completed
        return _Hung()


async def test_hybrid_search_sorts_by_recent_and_counts_the_fused_set(tmp_path):
    """Hybrid search honours sort="recent" (timestamp desc) and total_matches is the size of the fused
    set (the union of the text and vector candidates), not the larger of the two counts."""
    bridge = await _bridge(tmp_path, embedder="engine.embedders:hashing", enable_vector_search=True)
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("hy", "trips")
        # At threshold 0.2 text matches 5 (not "tramways of porto") and vector matches 5 (not the long
        # committee sentence): the fused set has 6.
        contents = ["lisbon trams at night", "tramways of porto", "the lisbon tax office", "trams trams trams",
                    "quarterly report", "a tram ride in lisbon",
                    "yesterday the committee discussed budget allocations for lisbon infrastructure and pension reform"]
        await data.store_chat_messages("hy", session_id, [
            message(text, timestamp=f"2026-01-{i + 1:02d}T00:00:00+00:00") for i, text in enumerate(contents)])
        options = {"limit": 100, "similarity_threshold": 0.2}
        text = await data.search_conversations("hy", "lisbon trams", {"limit": 100})
        vector = await data.search_conversations("hy", "lisbon trams", {**options, "search_type": "vector"})
        fused = {r["message_id"] for r in text["data"]["results"]} | {r["message_id"] for r in vector["data"]["results"]}
        by_relevance = await data.search_conversations("hy", "lisbon trams", {**options, "search_type": "hybrid"})
        recent = await data.search_conversations("hy", "lisbon trams",
                                                 {**options, "search_type": "hybrid", "sort": "recent"})
        assert len(fused) == 6 and by_relevance["data"]["search_metadata"]["total_matches"] == 6
        assert {r["message_id"] for r in recent["data"]["results"]} == fused
        stamps = [r["timestamp"] for r in recent["data"]["results"]]
        assert stamps == sorted(stamps, reverse=True) and recent["data"]["search_metadata"]["sort"] == "recent"
    finally:
        await bridge.close()


async def test_session_stats_count_the_embedded_vectors(tmp_path):
    """get_session_stats().vector_count is the number of the session's messages with a vector."""
    bridge = await _bridge(tmp_path, embedder="engine.embedders:hashing", enable_vector_search=True)
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("vc", "count")
        other = await data.storage.create_session("vc", "other")
        await data.store_chat_messages("vc", session_id, [message(f"note {i}") for i in range(3)])
        await data.store_chat_message("vc", other, message("elsewhere"))
        found = await data.search_conversations("vc", "note", {"search_type": "vector"})  # embeds the user's queue
        assert found["data"]["search_metadata"]["vector_pending"] == 0
        assert (await data.storage.get_session_stats("vc", session_id))["vector_count"] == 3
        await data.delete_session("vc", other)
        assert (await data.storage.get_session_stats("vc", session_id))["vector_count"] == 3
    finally:
        await bridge.close()


async def test_clear_cache_has_emptied_every_shard_when_it_returns(tmp_path):
    """After clear_cache() returns every shard holds no cached entry, and the next search (through the
    router, another caller than the bridge) is a miss."""
    bridge = await _bridge(tmp_path)
    try:
        data = bridge.get_data_layer()
        for user in ("c1", "c2", "c3", "c4"):
            session_id = await data.storage.create_session(user, "s")
            await data.store_chat_message(user, session_id, message("cached words"))
            await data.search_conversations(user, "cached")
            assert (await data.search_conversations(user, "cached"))["data"]["performance_info"]["cache_used"]
        data.clear_cache()
        assert [stats["cache_entries"] for stats in await bridge.backend.stats_all(1.0)] == [0, 0]
        assert not (await data.search_conversations("c1", "cached"))["data"]["performance_info"]["cache_used"]
    finally:
        await bridge.close()


async def test_clear_cache_reports_a_shard_it_could_not_clear(tmp_path):
    """clear_cache() raises StorageError(TIMEOUT) naming the shard when one does not answer; a shard
    whose actor died (it restarts with a cold cache) is not an error."""
    bridge = await _bridge(tmp_path)
    transport = bridge.backend.transport
    healthy = transport.shards[1]
    try:
        transport.shards[1] = _HungShard()
        with pytest.raises(StorageError) as caught:
            bridge.get_data_layer().clear_cache()
        assert caught.value.error_code == "TIMEOUT" and "shard 1" in caught.value.message
    finally:
        transport.shards[1] = healthy
        await bridge.close()


async def test_analytics_stay_cached_until_the_users_next_write(tmp_path, monkeypatch):
    """Analytics are answered from the cache however much later they are asked (no per-minute buckets),
    over the window ending at the time of asking, and the user's next write invalidates them."""
    bridge = await _bridge(tmp_path)
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("an", "s")
        await data.store_chat_message("an", session_id, message("one"))
        first = await data.get_analytics_summary("an")
        later = time.time() + 600  # ten minutes on
        monkeypatch.setattr("api.data_layer.time.time", lambda: later)
        again = await data.get_analytics_summary("an")
        assert not first["metadata"]["cache_hit"] and again["metadata"]["cache_hit"]
        counts = ("total_sessions", "total_messages", "messages_by_role", "usage_patterns")
        assert {key: again["data"]["analytics"][key] for key in counts} == \
            {key: first["data"]["analytics"][key] for key in counts}
        assert again["data"]["analytics"]["window_end"] > first["data"]["analytics"]["window_end"]
        await data.store_chat_message("an", session_id, message("two"))
        fresh = await data.get_analytics_summary("an")
        assert not fresh["metadata"]["cache_hit"] and fresh["data"]["analytics"]["total_messages"] == 2
    finally:
        await bridge.close()


async def test_a_stuck_query_embedder_ends_the_search_at_the_deadline(tmp_path):
    """The query embedder runs under the call's deadline: a stuck one ends the search with TIMEOUT
    within request_timeout_s + 100 ms."""
    bridge = await _bridge(tmp_path, embedder="tests.factories:slow_query_embedder", enable_vector_search=True,
                           request_timeout_s=0.5)
    try:
        data = bridge.get_data_layer()
        await data.storage.create_session("em", "s")
        started = time.monotonic()
        result = await data.search_conversations("em", SLOW_QUERY_WORD, {"search_type": "vector"})
        elapsed = time.monotonic() - started
        assert result["metadata"]["error_code"] == "TIMEOUT", result
        assert elapsed <= 0.5 + DEADLINE_SLACK_S, elapsed
    finally:
        await bridge.close()


@contextlib.contextmanager
def _slow_shards(bridge, delay_s):
    """Every shard call of the bridge answers `delay_s` late while the block runs."""
    links = bridge.backend.transport.links
    originals = [link.handle for link in links]
    for link in links:
        link.handle = _SlowHandle(link.handle, delay_s)
    try:
        yield
    finally:
        for link, handle in zip(links, originals):
            link.handle = handle


async def test_an_import_ends_within_one_deadline_for_all_its_steps(tmp_path):
    """import_session has one deadline for all its steps: with every shard call slow, it ends with
    TIMEOUT within request_timeout_s + 100 ms instead of granting each step a full timeout."""
    bridge = await _bridge(tmp_path, request_timeout_s=0.5, message_batch_size=2)
    data = bridge.get_data_layer()
    lines = ['{"type": "session", "format": "ffchat-session", "version": 1, "session_id": "imp", "title": "t"}']
    lines += [f'{{"type": "message", "role": "user", "content": "m{i}", "message_id": "m{i}"}}' for i in range(10)]
    try:
        with _slow_shards(bridge, 0.15):
            started = time.monotonic()
            result = await data.import_session("imp-user", jsonl="\n".join(lines) + "\n")
            elapsed = time.monotonic() - started
        assert result["metadata"]["error_code"] == "TIMEOUT", result
        assert elapsed <= 0.5 + DEADLINE_SLACK_S, elapsed
    finally:
        await bridge.close()


async def test_facade_create_session_ends_within_one_deadline(tmp_path):
    """storage.create_session's two steps (session, then user) share one deadline."""
    bridge = await _bridge(tmp_path, request_timeout_s=0.5)
    try:
        with _slow_shards(bridge, 0.3):
            started = time.monotonic()
            with pytest.raises(StorageError) as caught:
                await bridge.get_data_layer().storage.create_session("fc-user", "t")
            elapsed = time.monotonic() - started
        assert caught.value.error_code == "TIMEOUT" and elapsed <= 0.5 + DEADLINE_SLACK_S, elapsed
    finally:
        await bridge.close()


async def test_import_keeps_the_headers_updated_at(tmp_path):
    """An imported session keeps the exported updated_at (its messages do not bump it); a merge into a
    session that existed is an update and does."""
    bridge = await _bridge(tmp_path)
    try:
        data = bridge.get_data_layer()
        header = ('{"type": "session", "format": "ffchat-session", "version": 1, "session_id": "kept", '
                  '"title": "t", "created_at": "2025-01-01T00:00:00+00:00", "updated_at": "2025-02-01T00:00:00+00:00"}')
        body = '\n{"type": "message", "role": "user", "content": "hello", "message_id": "h1"}\n'
        assert (await data.import_session("up", jsonl=header + body))["success"]
        session = await data.storage.get_session("up", "kept")
        assert session.updated_at == "2025-02-01T00:00:00+00:00" and session.message_count == 1
        more = body.replace("h1", "h2").replace("hello", "again")
        assert (await data.import_session("up", jsonl=header + more, on_conflict="merge"))["success"]
        assert (await data.storage.get_session("up", "kept")).updated_at > "2026"
    finally:
        await bridge.close()


async def test_a_second_bridge_is_refused_durability_the_open_path_does_not_give(tmp_path):
    """Durability is a guarantee: a bridge asking for fsync on a path its shards serve in `none` mode gets
    ConfigurationError(durability) instead of silently weaker acknowledgements (found in review)."""
    from api import ConfigurationError
    first = await _bridge(tmp_path, durability="none")
    try:
        with pytest.raises(ConfigurationError) as caught:
            await _bridge(tmp_path, durability="fsync")
        assert caught.value.error_code == "CONFIG_ERROR" and caught.value.context["config_field"] == "durability"
        weaker = await _bridge(tmp_path, durability="none")
        await weaker.close()
    finally:
        await first.close()
