"""Online backups through the shards (`bridge.backup(dest)`), scheduled ones, and restore; the
bridge's two backup methods (`BackupMethods`, a base of FFChatAppBridge).

A backup asks every shard at once to pin a snapshot of its log and copy it (engine/backup_ops.py);
each shard keeps serving while it copies. When all have answered, shard 0 writes the manifest: the
backup exists from then on. If any shard fails, the backup is aborted and the error raised; what it
copied is removed by a later backup's garbage collection. Restore is local file work on the restored
path, done by actors/maintenance.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

from engine import backup_ops as bops
from engine.errors import EngineError, InvalidInput, RequestTimeout

from actors.exporter import EXPORTER

from .errors import StorageError

Progress = Callable[[int, int], None]
POLL_FIRST_S, POLL_MAX_S = 0.01, 0.25
BACKUP_TIMEOUT_S = 3600.0  # a whole backup; each shard call still has the bridge's request deadline


def default_destination(storage_path: str) -> str:
    """Where scheduled backups go when no destination is configured: beside the storage path."""
    return os.path.abspath(storage_path).rstrip(os.sep) + "-backups"


def new_backup_id() -> str:
    """Sortable by time (UTC, to the microsecond), unique: 20261128T151500123456Z-3fa2c1."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(3)}"


async def take_backup(backend: Any, storage_path: str, dest: str, keep: int = 0, progress: Progress | None = None,
                      timeout_s: float = BACKUP_TIMEOUT_S) -> dict[str, Any]:
    """Back up every shard of the path into `dest`; returns the committed backup's summary
    {backup_id, manifest, shards, bytes, bytes_copied, messages, duration_ms, backups_removed,
    objects_removed}. `progress(shards_done, shard_count)` is called as shards finish copying.
    Raises InvalidInput, StorageFailure, ShardUnavailable, RequestTimeout."""
    if not isinstance(dest, str) or not dest.strip():
        raise InvalidInput("A backup destination must be a non-empty path")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise InvalidInput("keep must be an int >= 0 (0 keeps every backup)")
    dest = os.path.abspath(dest)
    backup_id = new_backup_id()
    started = time.perf_counter()
    clients = backend.clients
    try:
        await asyncio.gather(*(client.call(bops.BackupShard(dest, backup_id), backend.deadline())
                               for client in clients))
        entries = await _wait_for_copies(backend, backup_id, time.monotonic() + timeout_s, progress)
    except BaseException:
        await _abort(backend, dest, backup_id)
        raise
    manifest = {"created_at": datetime.now(timezone.utc).isoformat(), "source": os.path.abspath(storage_path),
                "shard_count": len(clients), "shards": entries,
                "bytes": sum(e["bytes"] for e in entries), "bytes_copied": sum(e["bytes_copied"] for e in entries)}
    committed = await clients[0].call(bops.BackupCommit(dest, backup_id, manifest, keep), backend.deadline())
    return {**committed, "dest": dest, "shards": [_summary(e) for e in entries], "bytes": manifest["bytes"],
            "bytes_copied": manifest["bytes_copied"], "messages": sum(e["position"]["messages"] for e in entries),
            "duration_ms": round((time.perf_counter() - started) * 1000, 1)}


async def scheduled_backup(bridge: Any) -> None:
    """Upkeep step of a bridge with `backup_enabled`: a backup once `backup_interval_s` has passed
    since the last one (or since the bridge started); `bridge.last_backup` says how it went."""
    if time.monotonic() - bridge.last_backup["at"] < bridge.settings.backup_interval_s:
        return
    bridge.last_backup = {"at": time.monotonic(), "error": None, "result": None}
    try:
        bridge.last_backup["result"] = await bridge.backup(keep=bridge.settings.backup_keep)
    except Exception as exc:  # health_check warns (degraded); the next interval tries again
        bridge.last_backup["error"] = str(exc)


async def _wait_for_copies(backend: Any, backup_id: str, give_up_at: float,
                           progress: Progress | None) -> list[dict[str, Any]]:
    """Ask each shard how its copy goes until every one has finished (or one failed: raised)."""
    entries: dict[int, dict[str, Any]] = {}
    delay = POLL_FIRST_S
    while len(entries) < len(backend.clients):
        waiting = [index for index in range(len(backend.clients)) if index not in entries]
        answers = await asyncio.gather(*(backend.clients[index].call(bops.BackupStatus(backup_id), backend.deadline())
                                         for index in waiting))
        entries.update({index: entry for index, entry in zip(waiting, answers) if entry is not None})
        if progress is not None:
            progress(len(entries), len(backend.clients))
        if len(entries) == len(backend.clients):
            break
        if time.monotonic() > give_up_at:
            raise RequestTimeout(f"Backup {backup_id}: shards {sorted(set(waiting) - set(entries))} did not finish")
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)
    return [entries[index] for index in sorted(entries)]


async def _abort(backend: Any, dest: str, backup_id: str) -> None:
    try:
        await backend.clients[0].call(bops.BackupAbort(dest, backup_id), backend.deadline())
    except (EngineError, OSError):
        pass  # the marker expires; the objects go with a later garbage collection


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    return {"shard": entry["index"], "position": entry["position"], "files": len(entry["files"]),
            "bytes": entry["bytes"], "bytes_copied": entry["bytes_copied"], "copy_ms": entry.get("copy_ms")}


async def restore_backup(source: str, path: str, progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild storage path `path` (absent or empty) from a backup (its manifest file, or the newest
    in a destination folder) and verify it; returns {backup_id, shard_count, files, bytes, verify}.
    Raises InvalidInput, CorruptRecord (a checksum does not match: nothing is left at `path`).
    `progress(bytes_done, bytes_total)` is called from the thread that writes the files."""
    from actors import maintenance
    if not isinstance(source, str) or not isinstance(path, str) or not source or not path:
        raise InvalidInput("restore needs a backup (folder or manifest) and a new storage path")
    return await asyncio.to_thread(maintenance.restore, os.path.abspath(source), os.path.abspath(path), progress)


class BackupMethods:
    """`backup` and `restore_backup` of FFChatAppBridge (which provides open_backend and settings)."""

    open_backend: Callable[[], Any]
    settings: Any
    metrics_path: str | None

    async def backup(self, dest: str | None = None, keep: int = 0, progress: Progress | None = None
                     ) -> dict[str, Any]:
        """An online backup of every shard into `dest` (default: `backup_destination`, else
        '<storage_path>-backups'), keeping the newest `keep` there (0: all). Writers keep going
        meanwhile. Raises StorageError (with the error code) if it fails."""
        backend = self.open_backend()
        dest = dest or self.settings.backup_destination or default_destination(self.settings.storage_path)
        path = self.metrics_path  # set when the bridge exports metrics (actors/exporter.py)
        try:
            result = await take_backup(backend, self.settings.storage_path, dest, keep, progress)
        except EngineError as exc:
            if path:
                EXPORTER.count("ffchat_backups_total", (path, "error"))
            raise StorageError(f"Backup failed: {exc.message}", operation="backup", error_code=exc.code) from None
        if path:
            EXPORTER.count("ffchat_backups_total", (path, "ok"))
            if result["bytes_copied"]:
                EXPORTER.count("ffchat_backup_bytes_copied_total", (path,), result["bytes_copied"])
        return result

    @staticmethod
    async def restore_backup(source: str, path: str, progress: Progress | None = None) -> dict[str, Any]:
        """Rebuild a new storage path from a backup and verify it (no bridge may serve `path`)."""
        try:
            return await restore_backup(source, path, progress)
        except EngineError as exc:
            raise StorageError(f"Restore failed: {exc.message}", operation="restore", storage_path=str(path),
                               error_code=exc.code) from None
