"""`chat-bridge stats | health | sessions | history | search | export | import | purge | compact | backup |
restore`: a live store from a terminal (backup and restore: api/operator_backup.py).

Each command works on a local path (`--path`: the shards run inside this command's process, no Ray
runtime is started) or on a running runtime (`--address auto|host:port`: it attaches to the path
there, sharing its actors). A path that another runtime is serving cannot be opened locally: the
command says so and how to connect instead. `--json` prints one JSON document for scripts.

Exit codes: 0 done (health: healthy), 1 health degraded, 2 error (bad argument, missing path,
path busy, health error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Awaitable, Callable

from engine.errors import EngineError

from . import operator_backup, operator_output, operator_transfer

COMMANDS = ("stats", "health", "sessions", "history", "search", "export", "import", "purge", "compact", "backup",
            "restore")
EXIT_OK, EXIT_DEGRADED, EXIT_ERROR = 0, 1, 2


def add_commands(sub: Any) -> None:
    """Register the operator commands on the `chat-bridge` argument parser."""
    specs = {"stats": ("users, sessions, messages and bytes per shard and in total", []),
             "health": ("health check; exit 0 healthy, 1 degraded, 2 error", []),
             "sessions": ("a user's sessions, newest first", ["user"]),
             "history": ("a session's messages, oldest first", ["user", "session"]),
             "search": ("ranked search over a user's messages", ["user", "query"]),
             "export": ("a session (USER SESSION), a user's sessions (--user USER) or every session (--all) "
                        "as JSONL: per session a header line, then one line per message", ["user?", "session?"]),
             "import": ("sessions exported as JSONL, each under its own user, or all under USER",
                        ["user?", "file"]),
             "purge": ("delete messages older than --older-than DAYS (all users, or --user)", []),
             "compact": ("rewrite every shard's log without deleted data now", []),
             "backup": ("an online backup of every shard into DEST while the store keeps serving", [])}
    for name, (text, positionals) in specs.items():
        command = sub.add_parser(name, help=text, description=text)
        for positional in positionals:  # "name?": may be left out
            command.add_argument(positional.rstrip("?"), nargs="?" if positional.endswith("?") else None)
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("--path", help="the storage path, opened in this process")
        where.add_argument("--address", help="a running Ray runtime serving the path: auto or host:port")
        command.add_argument("--storage-path", help="with --address: the path as the runtime knows it")
        command.add_argument("--json", action="store_true", help="print JSON")
        if name in ("sessions", "history", "search"):
            command.add_argument("--limit", type=int, default=20)
        if name == "export":
            command.add_argument("--out", help="write the JSONL to this file (atomically) instead of stdout")
            command.add_argument("--user", dest="export_user", metavar="USER", help="every session of USER")
            command.add_argument("--all", dest="export_all", action="store_true", help="every session of every user")
        if name == "import":
            command.add_argument("--on-conflict", choices=("error", "merge", "replace"), default="error")
        if name == "backup":
            operator_backup.add_backup_options(command)
        if name == "purge":
            command.add_argument("--older-than", type=float, required=True, metavar="DAYS")
            command.add_argument("--user", help="only this user's messages")
    operator_backup.add_restore(sub)


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of arguments argparse cannot express, or None."""
    if args.command == "export":
        chosen = [args.user is not None, args.export_user is not None, args.export_all]
        if sum(chosen) != 1 or (args.user is not None) != (args.session is not None):
            return "give USER SESSION, --user USER or --all"
        if args.json and args.out is None and not args.user:
            return "--json with --user or --all needs --out: stdout carries the JSONL"
    return None


async def run(args: argparse.Namespace) -> int:
    """Run one operator command; returns its exit code."""
    if args.command == "restore":  # files only: no bridge
        code, document, text = await operator_backup.restore(args)
        print(json.dumps(document, indent=2, default=str) if args.json else text)
        return code
    bridge = await _open(args)
    if isinstance(bridge, int):
        return bridge
    try:
        action: Callable[[Any, argparse.Namespace], Awaitable[tuple[int, Any, str | None]]] = _ACTIONS[args.command]
        code, document, text = await action(bridge, args)
    finally:
        await bridge.close()
    if args.json:
        print(json.dumps(document, indent=2, default=str))
    elif text is not None:
        print(text)
    return code


async def _open(args: argparse.Namespace) -> Any:
    """A bridge on the path, or an exit code after saying what is wrong."""
    from api import ChatAppStorageConfig, FFChatAppBridge
    from api.errors import ChatIntegrationError
    path = args.path or args.storage_path
    if not path:
        return _fail("--address needs --storage-path: the path as the runtime serving it knows it")
    if args.path and not _has_store(path):
        return _fail(f"no chat store at {path}")
    try:
        config = ChatAppStorageConfig(os.path.abspath(path), ray_address=args.address)
        bridge = FFChatAppBridge(config, in_process=args.address is None)
        await bridge.initialize()
        return bridge
    except ChatIntegrationError as exc:
        if "held by another" in str(exc) or "locked by another" in str(exc):
            return _fail(f"{path} is being served by another runtime (a running application): connect to it "
                         f"with --address auto (or host:port) --storage-path {path}")
        return _fail(str(exc))


def _has_store(path: str) -> bool:
    """A directory a bridge has opened (it holds shard directories): the commands never create one."""
    return os.path.isdir(path) and any(name.startswith("shard-") for name in os.listdir(path))


def _fail(message: str) -> int:
    print(f"chat-bridge: {message}", file=sys.stderr)
    return EXIT_ERROR


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    return operator_output.table(rows, columns)


async def _stats(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    shards = [facts or {} for facts in await bridge.backend.stats_all(10.0)]
    fields = ("users", "sessions", "messages", "log_bytes", "ram_bytes")
    rows = [{"shard": index, **{name: int(facts.get(name, 0)) for name in fields}} for index, facts in enumerate(shards)]
    total = {"shard": "total", **{name: sum(row[name] for row in rows) for name in fields}}
    table = _table([*rows, total], ("shard", *fields))
    for row, facts in zip(rows, shards):  # in --json only: {written, failures, last_failure}
        row["checkpoints"] = facts.get("checkpoints", {})
    return EXIT_OK, {"shards": rows, "total": total}, table


async def _health(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    health = await bridge.health_check()
    code = {"healthy": EXIT_OK, "degraded": EXIT_DEGRADED}.get(health["status"], EXIT_ERROR)
    rows = [{"shard": s["shard"], "status": s["status"], "transport": s.get("transport", "-"),
             "messages": s["messages"], "restarts": s["restarts"], "error": s["error"] or ""} for s in health["shards"]]
    lines = [f"status: {health['status']}", *[f"error: {e}" for e in health["errors"]],
             *[f"warning: {w}" for w in health["warnings"]], _table(rows, tuple(rows[0]) if rows else ())]
    return code, health, "\n".join(lines)


async def _sessions(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    result = await bridge.get_data_layer().list_sessions(args.user, limit=args.limit)
    if not result["success"]:
        return _envelope_error(result)
    rows = [{"session_id": s["session_id"], "title": s.get("title", ""), "messages": s.get("message_count", 0),
             "updated_at": s.get("updated_at", "")} for s in result["data"]["sessions"]]
    return EXIT_OK, result["data"], _table(rows, ("session_id", "title", "messages", "updated_at"))


async def _history(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    result = await bridge.get_data_layer().get_chat_history(args.user, args.session, limit=args.limit, latest=True)
    if not result["success"]:
        return _envelope_error(result)
    lines = [f"{m['timestamp']}  {m['role']:9s} {m['content']}" for m in result["data"]["messages"]]
    return EXIT_OK, result["data"], "\n".join([f"{result['data']['total_count']} messages", *lines])


async def _search(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    result = await bridge.get_data_layer().search_conversations(args.user, args.query, {"limit": args.limit})
    if not result["success"]:
        return _envelope_error(result)
    rows = [{"score": f"{hit['relevance_score']:.3f}", "session_id": hit["session_id"], "content": hit["content"]}
            for hit in result["data"]["results"]]
    meta = result["data"]["search_metadata"]
    return EXIT_OK, result["data"], f"{meta['total_matches']} matches\n" + _table(rows, ("score", "session_id", "content"))


async def _export(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str | None]:
    if args.user is None:
        code, document, text = await operator_transfer.export_sessions(bridge, args.export_user, args.out,
                                                                       show_progress=not args.json)
        if args.out is None:  # stdout carries the JSONL: what happened goes to stderr
            print(text, file=sys.stderr)
            return code, document, None
        return code, document, text
    result = await bridge.get_data_layer().export_session(args.user, args.session, args.out)
    if not result["success"]:
        return _envelope_error(result)
    data = result["data"]
    text = (f"{data['message_count']} messages written to {args.out}" if args.out else data.get("jsonl", "").rstrip("\n"))
    return EXIT_OK, {key: value for key, value in data.items() if key != "jsonl"}, text


async def _import(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str | None]:
    if not os.path.isfile(args.file):
        return EXIT_ERROR, {"error": f"no such file: {args.file}"}, f"error: no such file: {args.file}"
    return await operator_transfer.import_sessions(bridge, args.file, args.user, args.on_conflict,
                                                   show_progress=not args.json)


async def _purge(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    result = await bridge.get_data_layer().purge_older_than(args.older_than, user_id=args.user)
    if not result["success"]:
        return _envelope_error(result)
    data = result["data"]
    return EXIT_OK, data, ", ".join(f"{key}: {value}" for key, value in data.items())


async def _compact(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    try:
        shards = await bridge.backend.compact_all()
    except EngineError as exc:
        return EXIT_ERROR, {"error": exc.message, "error_code": exc.code}, f"error ({exc.code}): {exc.message}"
    rows = [{"shard": index, **sizes} for index, sizes in enumerate(shards)]
    return EXIT_OK, {"shards": rows}, _table(rows, ("shard", "bytes_before", "bytes_after"))


def _envelope_error(result: dict[str, Any]) -> tuple[int, Any, str]:
    code = result["metadata"]["error_code"]
    return EXIT_ERROR, {"error": result["error"], "error_code": code}, f"error ({code}): {result['error']}"


_ACTIONS: dict[str, Callable[[Any, argparse.Namespace], Awaitable[tuple[int, Any, str | None]]]] = {
    "stats": _stats, "health": _health, "sessions": _sessions, "history": _history, "search": _search,
    "export": _export, "import": _import, "purge": _purge, "compact": _compact, "backup": operator_backup.backup}
