"""Durability seen through the public API: reopen keeps exactly what was acknowledged, a shard that
cannot open is reported and never pooled, and a shard with failing I/O shows as degraded."""

from __future__ import annotations

import errno
import os

import pytest

from actors.shard_actor import ShardActor
from api import FFChatAppBridge, InitializationError
from api.health import shard_health
from engine import operations as ops
from engine.filesystem import FileSystem
from tests.factories import engine_config, message


async def test_history_after_a_reopen_equals_history_before_it_with_bad_inputs_mixed_in(ray_runtime, tmp_path):
    """Good and unstorable stores interleaved (a session once had 22 messages before a reopen and 6
    after): every acknowledged message, and only those, is there after the path is reopened."""
    options = {"shard_count": 2, "durability": "flush"}
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    data = bridge.get_data_layer()
    session_id = await data.storage.create_session("mixed", "Mixed")
    acknowledged = []
    for i in range(22):
        bad = {"role": "user", "content": f"bad {i} \ud800"} if i % 3 else \
            {"role": "user", "content": f"bad {i}", "metadata": {"n": 2**64 + i}}
        result = await data.store_chat_message("mixed", session_id, bad)
        assert result["metadata"]["error_code"] == "INVALID_MESSAGE"
        good = await data.store_chat_message("mixed", session_id, message(f"good {i}"))
        acknowledged.append(good["data"]["message_id"])
    before = (await data.get_chat_history("mixed", session_id, limit=100))["data"]["messages"]
    await bridge.close()
    reopened = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    try:
        after = (await reopened.get_data_layer().get_chat_history("mixed", session_id, limit=100))["data"]["messages"]
        assert [m["message_id"] for m in after] == acknowledged
        assert after == before
    finally:
        await reopened.close()


async def test_a_shard_that_cannot_open_is_reported_and_its_actor_is_not_pooled(ray_runtime, tmp_path):
    """Mid-log corruption in one shard: initialize() fails at shard_startup naming the file and the
    offset; the actor that failed is stopped (not returned to the pool) and the lock released, so once
    the file is restored the path opens again."""
    import ray
    from actors import deploy
    options = {"shard_count": 2, "durability": "fsync"}
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    data = bridge.get_data_layer()
    for i in range(6):
        session_id = await data.storage.create_session(f"user{i}", "s")
        for j in range(3):
            await data.store_chat_message(f"user{i}", session_id, message(f"m{j}"))
    await bridge.close()
    segment = os.path.join(tmp_path, "shard-0001", "seg-000000000001.log")
    original = open(segment, "rb").read()
    damaged = bytearray(original)
    damaged[60] ^= 0xFF
    open(segment, "wb").write(bytes(damaged))
    router = deploy.get_router()
    idle_before = (await router.info.remote())["idle"]
    with pytest.raises(InitializationError) as caught:
        await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    text = str(caught.value)
    assert "shard-0001" in text and "offset 20" in text and "Traceback" not in text and "\x1b" not in text
    info = await router.info.remote()
    assert info["paths"] == {} and info["idle"] <= idle_before
    open(segment, "wb").write(original)
    again = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    try:
        listed = await again.get_data_layer().list_sessions("user0")
        assert listed["success"] and listed["data"]["sessions"][0]["message_count"] == 3
    finally:
        await again.close()
    assert ray.is_initialized()


def test_a_shard_whose_writes_fail_reports_degraded_with_the_reason_and_recovers(tmp_path, monkeypatch):
    """ENOSPC on the log: the store fails with STORAGE_ERROR, the shard keeps answering reads, its
    health entry is degraded naming the failure, and once writes succeed again so does the shard."""
    actor = ShardActor(0, tune_gc=False)
    actor.assign(engine_config(tmp_path, durability="fsync"), 0)
    actor.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("kept", message_id="k")])])
    real_write = FileSystem.write

    def full(self, handle, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(FileSystem, "write", full)
    failed = actor.execute([ops.Append("u", "s", [message("lost", message_id="l")])])
    assert failed[0][0] is False and failed[0][1].code == "STORAGE_ERROR"
    read = actor.execute([ops.ReadRange("u", "s", 0, 10)])
    assert read[0][0] and [m["message_id"] for m in read[0][1]["messages"]] == ["k"]
    entry = shard_health({**actor.probe(), "response_time_ms": 1.0})
    assert entry["status"] == "degraded" and "No space left on device" in entry["error"]
    monkeypatch.setattr(FileSystem, "write", real_write)
    import time
    time.sleep(0.1)  # past the first write pause (50 ms)
    retried = actor.execute([ops.Append("u", "s", [message("lost", message_id="l")])])
    assert retried[0][0] and retried[0][1].duplicates == 0
    assert shard_health({**actor.probe(), "response_time_ms": 1.0})["status"] == "healthy"
    actor.release()


async def test_a_batch_above_the_record_bound_is_stored_and_reads_back_after_a_reopen(ray_runtime, tmp_path):
    """Three 12 MiB messages in one store_chat_messages (36 MiB, above the 32 MiB record bound; a
    batch of 17 x 16 MB used to be acknowledged and then leave the shard unopenable): stored, and
    whole after the path is reopened."""
    options = {"shard_count": 1, "durability": "flush", "max_message_bytes": 16 * 1024 * 1024}
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    data = bridge.get_data_layer()
    session_id = await data.storage.create_session("big", "Big")
    batch = [{"role": "user", "content": letter * (12 * 1024 * 1024), "message_id": f"big-{letter}"}
             for letter in "abc"]
    stored = await data.store_chat_messages("big", session_id, batch)
    assert stored["success"] and stored["data"]["count"] == 3
    await bridge.close()
    reopened = await FFChatAppBridge.create_for_chat_app(str(tmp_path), options)
    try:
        history = (await reopened.get_data_layer().get_chat_history("big", session_id, limit=10))["data"]
        assert [(m["message_id"], len(m["content"])) for m in history["messages"]] == [
            (f"big-{letter}", 12 * 1024 * 1024) for letter in "abc"]
    finally:
        await reopened.close()
