"""`chat-bridge backup | restore | verify DEST`, run as a user runs them (subprocesses): an online backup
of a store, a restore into a new path that a bridge then serves, a damaged backup found by verify, and
bad arguments and missing paths exiting 2."""

from __future__ import annotations

import json
import os

from api import ChatAppStorageConfig, FFChatAppBridge
from tests.api.test_operator_cli import _cli, _store

IN_PROCESS = True


async def test_backup_restore_and_verify_from_the_command_line(tmp_path):
    store, dest, restored = tmp_path / "store", tmp_path / "dest", tmp_path / "restored"
    session_id = await _store(store)
    first = _cli("backup", str(dest), "--path", str(store))
    assert first.returncode == 0 and first.stdout.startswith("backup ") and "5 messages" in first.stdout, first.stderr
    second = _cli("backup", str(dest), "--path", str(store), "--json", "--keep", "1")
    summary = json.loads(second.stdout)
    assert second.returncode == 0 and summary["bytes_copied"] == 0 and len(summary["backups_removed"]) == 1
    checked = _cli("verify", str(dest))
    assert checked.returncode == 0 and "1 backups" in checked.stdout and checked.stdout.rstrip().endswith("OK")
    done = _cli("restore", str(dest), str(restored), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["verify"]["ok"], done.stdout + done.stderr
    history = _cli("history", "ops", session_id, "--path", str(restored), "--json")
    assert [m["content"] for m in json.loads(history.stdout)["messages"]] == [f"tram {i} to Alfama" for i in range(5)]
    again = _cli("restore", str(dest), str(restored))
    assert again.returncode == 2 and "not an empty folder" in again.stdout


async def test_a_damaged_backup_is_found_by_verify_and_refused_by_restore(tmp_path):
    store, dest = tmp_path / "store", tmp_path / "dest"
    await _store(store)
    assert _cli("backup", str(dest), "--path", str(store)).returncode == 0
    objects = [os.path.join(root, name) for root, _, names in os.walk(dest / "objects") for name in names]
    victim = max(objects, key=os.path.getsize)
    raw = bytearray(open(victim, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(victim, "wb").write(bytes(raw))
    damaged = _cli("verify", str(dest), "--json")
    report = json.loads(damaged.stdout)
    assert damaged.returncode == 1 and not report["ok"] and victim in json.dumps(report["errors"])
    refused = _cli("restore", str(dest), str(tmp_path / "restored"))
    assert refused.returncode == 2 and "checksum" in refused.stdout and not (tmp_path / "restored").exists()


async def test_backup_and_restore_arguments_and_missing_paths_exit_2(tmp_path):
    store = tmp_path / "store"
    await _store(store)
    no_dest = _cli("backup", "--path", str(store))
    assert no_dest.returncode == 2 and "DEST" in no_dest.stderr
    bad_keep = _cli("backup", str(tmp_path / "dest"), "--path", str(store), "--keep", "many")
    assert bad_keep.returncode == 2 and "invalid int" in bad_keep.stderr
    missing_store = _cli("backup", str(tmp_path / "dest"), "--path", str(tmp_path / "nowhere"))
    assert missing_store.returncode == 2 and "no chat store" in missing_store.stderr
    inside = _cli("backup", str(store / "backups"), "--path", str(store))
    assert inside.returncode == 2 and "outside the storage path" in inside.stdout
    missing_backup = _cli("restore", str(tmp_path / "nothing"), str(tmp_path / "new"))
    assert missing_backup.returncode == 2 and "no backup" in missing_backup.stdout
    not_a_backup = _cli("restore", str(store), str(tmp_path / "new"))
    assert not_a_backup.returncode == 2 and "No backup" in not_a_backup.stdout
    one_argument = _cli("restore", str(tmp_path / "dest"))
    assert one_argument.returncode == 2 and "PATH" in one_argument.stderr


async def test_a_restored_store_serves_a_bridge(tmp_path):
    store, dest, restored = tmp_path / "store", tmp_path / "dest", tmp_path / "restored"
    session_id = await _store(store)
    assert _cli("backup", str(dest), "--path", str(store)).returncode == 0
    assert _cli("restore", str(dest), str(restored)).returncode == 0
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(restored)), in_process=True)
    await bridge.initialize()
    try:
        data = bridge.get_data_layer()
        stored = await data.store_chat_message("ops", session_id, {"role": "user", "content": "after the restore"})
        assert stored["success"]
        page = await data.get_chat_history("ops", session_id, limit=10)
        assert page["data"]["total_count"] == 6 and bridge.backend.shard_count == 2
    finally:
        await bridge.close()
