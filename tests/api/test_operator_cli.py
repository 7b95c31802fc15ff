"""`chat-bridge stats | health | sessions | history | search`, run as a user runs them: a subprocess on a
store written by a bridge, checking output and exit codes, including a bad argument, a missing
path and a path another runtime is serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from api import ChatAppStorageConfig, FFChatAppBridge
from tests.factories import message

IN_PROCESS = True  # the commands open the path in their own process: no Ray anywhere
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "api", *arguments], capture_output=True, text=True, timeout=120,
                          env=environment, cwd=REPO)


async def _store(path) -> str:
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(path), shard_count=2), in_process=True)
    await bridge.initialize()
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("ops", "Lisbon trip", session_id="lisbon")
        await data.store_chat_messages("ops", session_id, [message(f"tram {i} to Alfama") for i in range(5)])
        return session_id
    finally:
        await bridge.close()


async def test_each_command_reads_a_store_written_by_a_bridge(tmp_path):
    session_id = await _store(tmp_path)
    stats = _cli("stats", "--path", str(tmp_path), "--json")
    assert stats.returncode == 0, stats.stderr
    totals = json.loads(stats.stdout)["total"]
    assert (totals["users"], totals["sessions"], totals["messages"]) == (1, 1, 5) and totals["log_bytes"] > 0
    health = _cli("health", "--path", str(tmp_path))
    assert health.returncode == 0 and health.stdout.startswith("status: healthy"), health.stdout + health.stderr
    sessions = _cli("sessions", "ops", "--path", str(tmp_path))
    assert sessions.returncode == 0 and "lisbon" in sessions.stdout and "Lisbon trip" in sessions.stdout
    history = _cli("history", "ops", session_id, "--path", str(tmp_path), "--limit", "3")
    assert history.returncode == 0 and history.stdout.splitlines()[0] == "5 messages"
    assert len(history.stdout.splitlines()) == 4 and "tram 4 to Alfama" in history.stdout
    found = _cli("search", "ops", "alfama", "--path", str(tmp_path), "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["search_metadata"]["total_matches"] == 5


async def test_bad_arguments_missing_paths_and_unknown_sessions_exit_2(tmp_path):
    await _store(tmp_path)
    missing_argument = _cli("history", "ops", "--path", str(tmp_path))
    assert missing_argument.returncode == 2 and "required" in missing_argument.stderr
    neither = _cli("stats")
    assert neither.returncode == 2 and "--path" in neither.stderr
    missing_path = _cli("stats", "--path", str(tmp_path / "nowhere"))
    assert missing_path.returncode == 2 and "no chat store" in missing_path.stderr
    assert not (tmp_path / "nowhere").exists()  # a command never creates a store
    unknown = _cli("history", "ops", "no-such-session", "--path", str(tmp_path))
    assert unknown.returncode == 2 and "SESSION_NOT_FOUND" in unknown.stdout


async def test_a_path_served_by_another_runtime_says_how_to_connect(tmp_path):
    await _store(tmp_path)
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(tmp_path), shard_count=2), in_process=True)
    await bridge.initialize()  # this process now serves the path, as a running application would
    try:
        busy = _cli("stats", "--path", str(tmp_path))
        assert busy.returncode == 2 and "--address" in busy.stderr, busy.stderr
    finally:
        await bridge.close()


async def test_export_writes_jsonl_and_purge_deletes_old_messages(tmp_path):
    store = tmp_path / "store"
    session_id = await _store(store)
    exported = _cli("export", "ops", session_id, "--path", str(store))
    lines = exported.stdout.splitlines()
    assert exported.returncode == 0 and len(lines) == 6 and json.loads(lines[0])["type"] == "session"
    to_file = _cli("export", "ops", session_id, "--path", str(store), "--out", str(tmp_path / "lisbon.jsonl"))
    assert to_file.returncode == 0 and (tmp_path / "lisbon.jsonl").read_text().splitlines() == lines
    other = tmp_path / "other"
    await _store(other)
    imported = _cli("import", "zoe", str(tmp_path / "lisbon.jsonl"), "--path", str(other))
    assert imported.returncode == 0 and "imported 5 messages" in imported.stdout, imported.stdout + imported.stderr
    again = _cli("import", "zoe", str(tmp_path / "lisbon.jsonl"), "--path", str(other))
    assert again.returncode == 2 and "error" in again.stdout  # the session exists: --on-conflict decides
    assert _cli("import", "zoe", str(tmp_path / "none.jsonl"), "--path", str(other)).returncode == 2
    nothing_old = _cli("purge", "--older-than", "30", "--path", str(store), "--json")
    assert nothing_old.returncode == 0 and json.loads(nothing_old.stdout)["messages_deleted"] == 0
    everything = _cli("purge", "--older-than", "0.000001", "--path", str(store), "--json")  # ~0.09 s
    assert everything.returncode == 0 and json.loads(everything.stdout)["messages_deleted"] == 5
    assert json.loads(_cli("stats", "--path", str(store), "--json").stdout)["total"]["messages"] == 0
    compacted = json.loads(_cli("compact", "--path", str(store), "--json").stdout)["shards"]
    assert sum(s["bytes_after"] for s in compacted) < sum(s["bytes_before"] for s in compacted)  # the purged data left
    bad = _cli("purge", "--older-than", "0", "--path", str(store))
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stdout


async def test_verify_reports_ok_damage_with_file_and_offset_and_a_missing_path(tmp_path):
    for text in ("first message that will be damaged", "second message, written later"):
        bridge = FFChatAppBridge(ChatAppStorageConfig(str(tmp_path), shard_count=1), in_process=True)
        await bridge.initialize()  # a bridge per message: the second lands in a record of its own
        data = bridge.get_data_layer()
        await data.storage.create_session("ops", "t", session_id="s")
        await data.store_chat_message("ops", "s", message(text))
        await bridge.close()
    healthy = _cli("verify", str(tmp_path))
    assert healthy.returncode == 0 and healthy.stdout.rstrip().endswith("OK"), healthy.stdout + healthy.stderr
    segment = next((tmp_path / "shard-0000").glob("seg-*.log"))
    raw = bytearray(segment.read_bytes())
    raw[raw.index(b"first message")] ^= 0xFF  # damage inside a record that a later, intact one follows
    segment.write_bytes(bytes(raw))
    damaged = _cli("verify", str(tmp_path), "--json")
    report = json.loads(damaged.stdout)
    assert damaged.returncode == 1 and not report["ok"], damaged.stdout
    assert segment.name in json.dumps(report) and "offset" in json.dumps(report).lower(), report
    missing = _cli("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
