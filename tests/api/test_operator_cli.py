"""Every `chat-bridge` operator command, run as a user runs them: a subprocess on a store written by a
bridge, checking its plain output, its --json, a bad argument and a missing path (exit 2), and a path
another runtime is serving."""

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
    return _cli_all([list(arguments)])[0]


def _cli_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run the commands side by side (only ones that never open the same store at once)."""
    environment = {**os.environ, "PYTHONPATH": REPO}
    running = [(arguments, subprocess.Popen([sys.executable, "-m", "api", *arguments], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, env=environment, cwd=REPO))
               for arguments in commands]
    done = []
    for arguments, process in running:
        stdout, stderr = process.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr))
    return done


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
    checkpoints = [shard["checkpoints"] for shard in json.loads(stats.stdout)["shards"]]
    assert all(c["failures"] == 0 and c["last_failure"] is None for c in checkpoints)
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
    plain = _cli("verify", str(tmp_path))
    assert plain.returncode == 1 and "DAMAGED" in plain.stdout and segment.name in plain.stdout, plain.stdout
    assert "offset" in plain.stdout.lower(), plain.stdout
    missing = _cli("verify", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no chat store at" in missing.stderr
    (tmp_path / "empty").mkdir()  # a directory that holds no store is not "0 shards, OK"
    assert _cli("verify", str(tmp_path / "empty")).returncode == 2


# command: (arguments, a string its plain output holds, (a key path into its --json, the value there))
COMMANDS = {
    "stats": ([], "total", (("total", "messages"), 5)),
    "health": ([], "status: healthy", (("status",), "healthy")),
    "sessions": (["ops"], "Lisbon trip", (("total_count",), 1)),
    "history": (["ops", "lisbon"], "5 messages", (("total_count",), 5)),
    "search": (["ops", "alfama"], "tram 0 to Alfama", (("search_metadata", "total_matches"), 5)),
    "export": (["ops", "lisbon"], '"format": "ffchat-session"', (("message_count",), 5)),
    "purge": (["--older-than", "30"], "messages_deleted: 0", (("messages_deleted",), 0)),
    "compact": ([], "bytes_before", (("shards", 0, "bytes_before"), None)),
}


async def test_every_command_prints_plain_text_and_json(tmp_path):
    """Each command's plain output names what it read, and its --json holds the same figures."""
    store = str(tmp_path / "store")
    await _store(store)
    for command, (arguments, shown, (keys, value)) in COMMANDS.items():
        plain = _cli(command, *arguments, "--path", store)
        assert plain.returncode == 0 and shown in plain.stdout, (command, plain.stdout, plain.stderr)
        found = json.loads(_cli(command, *arguments, "--path", store, "--json").stdout)
        for key in keys:
            found = found[key]
        assert found == value or value is None, (command, found)
    _cli("export", "ops", "lisbon", "--path", store, "--out", str(tmp_path / "lisbon.jsonl"))
    imported = _cli("import", "zoe", str(tmp_path / "lisbon.jsonl"), "--path", store)
    assert imported.returncode == 0 and "imported 5 messages into session lisbon" in imported.stdout
    again = json.loads(_cli("import", "yan", str(tmp_path / "lisbon.jsonl"), "--path", store, "--json").stdout)
    assert (again["session_id"], again["imported"], again["skipped"], again["message_count"]) == ("lisbon", 5, 0, 5)
    stats = _cli("stats", "--path", store).stdout.splitlines()
    assert stats[0].split() == ["shard", "users", "sessions", "messages", "log_bytes", "ram_bytes"]
    assert stats[-1].split()[:4] == ["total", "3", "3", "15"], stats  # plain columns, no borders, off a terminal
    verified = _cli("verify", store)
    assert verified.returncode == 0 and verified.stdout.rstrip().endswith("OK")
    assert json.loads(_cli("verify", store, "--json").stdout)["messages"] == 15


def test_every_command_refuses_a_bad_argument_and_a_missing_path(tmp_path):
    """A bad argument exits 2 with argparse's message; a path with no store exits 2 and names it."""
    nowhere = str(tmp_path / "nowhere")
    names = [*COMMANDS, "import"]
    positionals = {name: COMMANDS[name][0] if name in COMMANDS else ["zoe", "file.jsonl"] for name in names}
    bad = _cli_all([[name, *positionals[name], "--path", nowhere, "--bogus"] for name in names]
                   + [["verify", nowhere, "--bogus"], ["history", "ops", "s", "--path", nowhere, "--limit", "x"],
                      ["import", "zoe", "f", "--path", nowhere, "--on-conflict", "bogus"], ["purge", "--path", nowhere]])
    for result in bad:
        assert result.returncode == 2 and "usage:" in result.stderr, (result.args, result.stderr)
    assert all("unrecognized arguments: --bogus" in result.stderr for result in bad[:len(names) + 1])
    assert [m in r.stderr for m, r in zip(("invalid int value", "invalid choice", "required"), bad[-3:])] == [True] * 3
    missing = _cli_all([[name, *positionals[name], "--path", nowhere] for name in names] + [["verify", nowhere]])
    for result in missing:
        assert result.returncode == 2 and f"no chat store at {nowhere}" in result.stderr, (result.args, result.stderr)
    assert not os.path.exists(nowhere)  # no command creates a store
