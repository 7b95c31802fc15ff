"""`chat-bridge backup DEST` (online, through a bridge on the path) and `chat-bridge restore SRC PATH`
(files only: no bridge, no Ray). `chat-bridge verify DEST` checks a backup folder (engine/verify.py).

Exit codes: 0 done, 1 restore done but its verification found damage, 2 error.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from engine.errors import EngineError

EXIT_OK, EXIT_DAMAGED, EXIT_ERROR = 0, 1, 2


def add_restore(sub: Any) -> None:
    text = "rebuild a new storage PATH from the backup SRC (a backup folder: its newest; or a manifest) and verify it"
    command = sub.add_parser("restore", help=text, description=text)
    command.add_argument("source", metavar="SRC")
    command.add_argument("path", metavar="PATH")
    command.add_argument("--json", action="store_true", help="print JSON")


def add_backup_options(command: Any) -> None:
    command.add_argument("dest", metavar="DEST", help="backup folder (created; later backups there are incremental)")
    command.add_argument("--keep", type=int, default=0, help="keep the newest N backups in DEST (default 0: all)")


async def backup(bridge: Any, args: argparse.Namespace) -> tuple[int, Any, str]:
    """An online backup of the path the bridge serves into DEST."""
    from .errors import ChatIntegrationError
    if args.keep < 0:
        return EXIT_ERROR, {"error": "--keep must be >= 0"}, "error: --keep must be >= 0"
    from .operator_output import counting, progress, table
    try:
        with progress("backing up shards", None, enabled=not args.json) as bar:
            result = await bridge.backup(os.path.abspath(args.dest), keep=args.keep,
                                         progress=counting(bar))
    except ChatIntegrationError as exc:
        return EXIT_ERROR, exc.to_dict(), f"error ({exc.error_code}): {exc.message}"
    rows = [{"shard": s["shard"], "position": f"{s['position']['segment']}@{s['position']['offset']}",
             "messages": s["position"]["messages"], "files": s["files"], "bytes": s["bytes"],
             "copied": s["bytes_copied"]} for s in result["shards"]]
    reused = result["bytes"] - result["bytes_copied"]
    lines = [f"backup {result['backup_id']}: {result['messages']} messages, {result['bytes']} bytes "
             + (f"({result['bytes_copied']} new, {reused} already in DEST from an earlier backup) " if reused else "")
             + f"in {result['duration_ms']:.0f} ms", f"manifest: {result['manifest']}", table(rows, tuple(rows[0]))]
    if result.get("cleanup_error"):
        lines.append(f"warning: the backup is written, but removing older ones failed: {result['cleanup_error']}")
    if result["backups_removed"]:
        lines.append(f"removed older backups: {', '.join(result['backups_removed'])} "
                     f"({result['objects_removed']} files no backup needs)")
    return EXIT_OK, result, "\n".join(lines)


async def restore(args: argparse.Namespace) -> tuple[int, Any, str]:
    """Rebuild PATH from SRC with no bridge (PATH must be new or an empty folder)."""
    from .backups import restore_backup
    from .operator_output import byte_progress
    if not os.path.exists(args.source):
        return EXIT_ERROR, {"error": f"no backup at {args.source}"}, f"error: no backup at {args.source}"
    try:
        with byte_progress("restoring files", enabled=not args.json)() as update:
            result = await restore_backup(args.source, args.path, update)
    except EngineError as exc:
        return EXIT_ERROR, {"error": exc.message, "error_code": exc.code}, f"error ({exc.code}): {exc.message}"
    report = result["verify"]
    text = (f"restored backup {result['backup_id']} into {os.path.abspath(args.path)}: {result['shard_count']} "
            f"shards, {result['files']} files, {result['bytes']} bytes; verify: {report['records']} records, "
            f"{report['messages']} messages, " + ("OK" if report["ok"] else "DAMAGED: " + "; ".join(report["errors"])))
    return (EXIT_OK if report["ok"] else EXIT_DAMAGED), result, text
