"""`chat-bridge export --user / --all` and `chat-bridge import` of a file of many sessions, run as an
operator runs them (a subprocess), including the round trip of a whole store into a fresh one."""

from __future__ import annotations

import json

from api import ChatAppStorageConfig, FFChatAppBridge
from tests.api.test_operator_cli import _cli
from tests.factories import message

IN_PROCESS = True  # the commands open the path in their own process: no Ray anywhere
SESSIONS = {"alice": ["lisbon", "porto"], "bob": ["lisbon"], "carol": ["tools", "empty"]}


async def _bridge(path, shard_count: int = 2) -> FFChatAppBridge:
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(path), shard_count=shard_count), in_process=True)
    await bridge.initialize()
    return bridge


async def _store(path) -> None:
    """Three users, five sessions (one empty), messages with metadata, tool calls and odd text."""
    bridge = await _bridge(path)
    try:
        data = bridge.get_data_layer()
        for user, sessions in SESSIONS.items():
            for session in sessions:
                await data.storage.create_session(user, f"{user}'s {session}", session_id=session,
                                                  metadata={"owner": user, "n": len(session)})
                if session == "empty":
                    continue
                batch = [message(f"{user} {session} line {i}\u2028with a separator", metadata={"i": i, "nested": [1, {"x": None}]})
                         for i in range(4)]
                batch.append(message("done", role="assistant", metadata={"tool_calls": [{"name": "map"}]}))
                assert (await data.store_chat_messages(user, session, batch))["success"]
    finally:
        await bridge.close()


async def _snapshot(path, shard_count: int = 2) -> dict:
    """Every session of every user: its header fields and its whole history, as the bridge returns them."""
    bridge = await _bridge(path, shard_count)
    try:
        data = bridge.get_data_layer()
        found = {}
        for user in await data.storage.list_users():
            for session in (await data.list_sessions(user, limit=100))["data"]["sessions"]:
                history = await data.get_chat_history(user, session["session_id"], limit=1000)
                header = {key: session.get(key) for key in ("title", "session_type", "created_at", "metadata")}
                found[(user, session["session_id"])] = (header, history["data"]["messages"])
        return found
    finally:
        await bridge.close()


async def test_export_all_then_import_into_a_fresh_store_restores_every_session_exactly(tmp_path):
    """Every session comes back with the same ids, roles, content, timestamps and metadata, even into a
    store with another shard count."""
    await _store(tmp_path / "store")
    exported = _cli("export", "--all", "--path", str(tmp_path / "store"), "--out", str(tmp_path / "all.jsonl"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "exported 20 messages in 5 sessions of 3 users" in exported.stdout
    headers = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().split("\n") if '"session"' in line[:20]]
    assert [(h["user_id"], h["session_id"]) for h in headers] == [
        ("alice", "porto"), ("alice", "lisbon"), ("bob", "lisbon"), ("carol", "empty"), ("carol", "tools")]
    await (await _bridge(tmp_path / "fresh", shard_count=3)).close()  # the commands never create a store
    imported = _cli("import", str(tmp_path / "all.jsonl"), "--path", str(tmp_path / "fresh"), "--json")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    document = json.loads(imported.stdout)
    assert (document["session_count"], document["imported"], document["skipped"]) == (5, 20, 0)
    before, after = await _snapshot(tmp_path / "store"), await _snapshot(tmp_path / "fresh", 3)
    assert len(before) == 5 and after == before
    again = _cli("export", "--all", "--path", str(tmp_path / "fresh"))
    assert again.stdout == (tmp_path / "all.jsonl").read_text()  # byte for byte, through stdout
    assert "5 sessions of 3 users to stdout" in again.stderr  # what happened goes beside the data


async def test_export_of_one_user_and_import_under_another_user(tmp_path):
    """--user exports only that user's sessions; import USER FILE puts every session under USER."""
    await _store(tmp_path / "store")
    exported = _cli("export", "--user", "alice", "--path", str(tmp_path / "store"), "--out", str(tmp_path / "a.jsonl"),
                    "--json")
    assert exported.returncode == 0 and json.loads(exported.stdout)["sessions"] == 2, exported.stdout
    lines = (tmp_path / "a.jsonl").read_text().split("\n")
    assert {json.loads(line)["user_id"] for line in lines if line.startswith('{"type": "session"')} == {"alice"}
    imported = _cli("import", "zoe", str(tmp_path / "a.jsonl"), "--path", str(tmp_path / "store"))
    assert imported.returncode == 0 and "imported 10 messages into 2 sessions of 1 users" in imported.stdout
    sessions = _cli("sessions", "zoe", "--path", str(tmp_path / "store"), "--json")
    assert sorted(s["session_id"] for s in json.loads(sessions.stdout)["sessions"]) == ["lisbon", "porto"]
    missing_user = _cli("export", "--user", "nobody", "--path", str(tmp_path / "store"))
    assert missing_user.returncode == 2 and "USER_NOT_FOUND" in missing_user.stderr, missing_user.stderr


async def test_a_damaged_multi_session_file_names_its_line_and_writes_nothing(tmp_path):
    """A bad line in the second session fails the whole import before the first session is written."""
    await _store(tmp_path / "store")
    _cli("export", "--user", "alice", "--path", str(tmp_path / "store"), "--out", str(tmp_path / "a.jsonl"))
    lines = (tmp_path / "a.jsonl").read_text().split("\n")  # not splitlines(): content holds U+2028
    lines[8] = lines[8][:-5]  # line 9: the second session's third message, cut short
    (tmp_path / "bad.jsonl").write_text("\n".join(lines))
    imported = _cli("import", "zoe", str(tmp_path / "bad.jsonl"), "--path", str(tmp_path / "store"))
    assert imported.returncode == 2 and "line 9: invalid JSON" in imported.stdout, imported.stdout
    assert _cli("sessions", "zoe", "--path", str(tmp_path / "store")).returncode == 2  # no such user: nothing written
    twice = tmp_path / "twice.jsonl"
    twice.write_text((tmp_path / "a.jsonl").read_text() * 2)
    doubled = _cli("import", str(twice), "--path", str(tmp_path / "store"), "--on-conflict", "merge")
    assert doubled.returncode == 2 and "line 13: session alice/porto appears twice" in doubled.stdout, doubled.stdout


async def test_export_argument_combinations_are_checked_before_the_store_opens(tmp_path):
    """Exactly one of USER SESSION, --user and --all; --json with many sessions needs --out (exit 2, usage)."""
    await _store(tmp_path / "store")
    for arguments in ([], ["alice"], ["alice", "lisbon", "--all"], ["--user", "alice", "--all"]):
        wrong = _cli("export", *arguments, "--path", str(tmp_path / "store"))
        assert wrong.returncode == 2 and "give USER SESSION, --user USER or --all" in wrong.stderr, wrong.stderr
        assert wrong.stderr.startswith("usage: chat-bridge export")
    json_to_stdout = _cli("export", "--all", "--json", "--path", str(tmp_path / "store"))
    assert json_to_stdout.returncode == 2 and "needs --out" in json_to_stdout.stderr
