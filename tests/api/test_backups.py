"""`bridge.backup(dest)` on the shared Ray runtime while writers keep storing, `restore_backup`, and
scheduled backups: the restore holds, per session, exactly a prefix of what was acknowledged, with
everything acknowledged before the backup began and nothing sent after it returned."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from api import ChatAppStorageConfig, FFChatAppBridge
from api.errors import StorageError
from tests.factories import message

WRITERS = 6


async def _writer(data, user_id, session_id, acked, stop):
    """Store one message at a time; record (content, send time, ack time) of each acknowledged one."""
    number = 0
    while not stop.is_set():
        sent = time.monotonic()
        result = await data.store_chat_message(user_id, session_id, message(f"{session_id} #{number}"))
        assert result["success"], result
        acked.append((f"{session_id} #{number}", sent, time.monotonic()))
        number += 1


async def _history(data, user_id, session_id):
    page = await data.get_chat_history(user_id, session_id, limit=10_000)
    assert page["success"], page
    return [m["content"] for m in page["data"]["messages"]]


async def test_backup_under_concurrent_writes_restores_a_consistent_prefix(bridge, tmp_path):
    data = bridge.get_data_layer()
    sessions = [await data.storage.create_session(f"backup_user{i}", "Busy", session_id=f"busy{i}")
                for i in range(WRITERS)]
    acked = {session: [] for session in sessions}
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(data, f"backup_user{i}", s, acked[s], stop)) for i, s in enumerate(sessions)]
    await asyncio.sleep(0.5)
    began = time.monotonic()
    result = await bridge.backup(str(tmp_path / "dest"))
    returned = time.monotonic()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)
    assert len(result["shards"]) == 2 and result["bytes_copied"] == result["bytes"] > 0
    restored = await FFChatAppBridge.restore_backup(str(tmp_path / "dest"), str(tmp_path / "restored"))
    assert restored["verify"]["ok"] and restored["backup_id"] == result["backup_id"]
    copy = FFChatAppBridge(ChatAppStorageConfig(str(tmp_path / "restored")), in_process=True)
    await copy.initialize()
    try:
        for i, session in enumerate(sessions):
            contents = [content for content, _, _ in acked[session]]
            found = await _history(copy.get_data_layer(), f"backup_user{i}", session)
            assert found == contents[:len(found)], f"{session}: not a prefix of what was acknowledged"
            before = sum(1 for _, _, acked_at in acked[session] if acked_at < began)
            sent_before_return = sum(1 for _, sent, _ in acked[session] if sent < returned)
            assert before <= len(found) <= sent_before_return, (session, before, len(found), sent_before_return)
            assert len(contents) > len(found)  # the writers went on after the backup
    finally:
        await copy.close()


async def test_restore_refuses_a_store_in_use_and_a_missing_backup(bridge, tmp_path):
    with pytest.raises(StorageError) as caught:
        await FFChatAppBridge.restore_backup(str(tmp_path / "nothing"), str(tmp_path / "new"))
    assert caught.value.error_code == "INVALID_ARGUMENT" and "No backup" in caught.value.message
    await bridge.backup(str(tmp_path / "dest"))
    with pytest.raises(StorageError) as caught:
        await FFChatAppBridge.restore_backup(str(tmp_path / "dest"), bridge.settings.storage_path)
    assert caught.value.error_code == "INVALID_ARGUMENT" and "not an empty folder" in caught.value.message


async def test_a_destination_inside_the_store_is_refused_and_nothing_is_written(bridge):
    inside = os.path.join(bridge.settings.storage_path, "backups")
    with pytest.raises(StorageError) as caught:
        await bridge.backup(inside)
    assert caught.value.error_code == "INVALID_ARGUMENT" and not os.path.exists(inside)


async def test_backup_enabled_takes_backups_on_schedule_and_keeps_the_newest(tmp_path):
    config = ChatAppStorageConfig(str(tmp_path / "store"), shard_count=2, backup_enabled=True,
                                  backup_interval_s=1.0, backup_keep=2, backup_destination=str(tmp_path / "dest"))
    bridge = FFChatAppBridge(config, in_process=True)
    await bridge.initialize()
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("sched", "Scheduled")
        removed = []
        for round_number in range(150):  # until a third backup removed the first (about 3.5 s; longer if busy)
            await data.store_chat_message("sched", session_id, message(f"round {round_number}"))
            await asyncio.sleep(0.1)
            result = bridge.last_backup.get("result")
            removed += result["backups_removed"] if result and result["backups_removed"] else []
            if removed:
                break
        assert bridge.last_backup["error"] is None and removed, bridge.last_backup
    finally:
        await bridge.close()
    kept = sorted(os.listdir(tmp_path / "dest" / "backups"))
    assert len(kept) == 2, kept
    assert config.to_dict()["backup"] == {"destination": str(tmp_path / "dest"), "interval_s": 1.0, "keep": 2}


async def test_a_failing_scheduled_backup_makes_health_degraded_and_the_bridge_keeps_serving(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    config = ChatAppStorageConfig(str(tmp_path / "store"), shard_count=2, backup_enabled=True, backup_interval_s=1.0,
                                  backup_destination=str(tmp_path / "a_file" / "dest"))
    bridge = FFChatAppBridge(config, in_process=True)
    await bridge.initialize()
    try:
        for _ in range(100):  # the first scheduled backup runs about 1.5 s after start; a slow machine waits longer
            if bridge.last_backup["error"]:
                break
            await asyncio.sleep(0.1)
        health = await bridge.health_check()
        assert health["status"] == "degraded", health
        assert any("scheduled backup failed" in warning for warning in health["warnings"]), health["warnings"]
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("sched", "Still serving")
        assert (await data.store_chat_message("sched", session_id, message("still here")))["success"]
    finally:
        await bridge.close()


async def test_concurrent_restores_into_one_path_give_one_store_and_clear_errors(tmp_path):
    config = ChatAppStorageConfig(str(tmp_path / "store"), shard_count=2)
    bridge = FFChatAppBridge(config, in_process=True)
    await bridge.initialize()
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("u", "t")
        await data.store_chat_messages("u", session_id, [message(f"m{i}") for i in range(50)])
        await bridge.backup(str(tmp_path / "dest"))
    finally:
        await bridge.close()
    outcomes = await asyncio.gather(*(FFChatAppBridge.restore_backup(str(tmp_path / "dest"), str(tmp_path / "same"))
                                      for _ in range(4)), return_exceptions=True)
    assert sum(isinstance(outcome, dict) for outcome in outcomes) == 1, outcomes
    assert all(outcome.error_code for outcome in outcomes if isinstance(outcome, Exception)), outcomes
    assert all(isinstance(outcome, (dict, StorageError)) for outcome in outcomes), outcomes
    assert sorted(os.listdir(tmp_path)) == ["dest", "same", "store"]  # no staging folder left behind
