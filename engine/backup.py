"""Online backups of a store: content-addressed segment copies, a manifest per backup, restore, checks.

Layout of a backup destination (every call goes through `engine.filesystem`):
    objects/ab/ab12...ef   a segment's bytes (or the snapshot's prefix of the active one), named by SHA-256
    backups/<id>.json      one manifest per backup, written last and atomically: the backup exists once
                           it does. Per shard: the log position the snapshot ends at, the files in log
                           order with their checksums and sizes, and the live message count
    pending/<id>           a backup in progress (every shard writes it before copying; removed on commit)

A shard's snapshot is every live segment in full plus the active segment up to its last commit
(`MessageLog.snapshot_begin`): one log position, taken under the log's write lock, which is held for
no longer than naming the files. Copying happens afterwards, beside the serving shard. Backups are
incremental: an object that exists is not written again, so a sealed segment unchanged since the
last backup costs one read and one hash. Keeping the last N removes older manifests, then every
object no manifest names, unless another backup is in progress (its objects are not named yet).

A restore writes the files under `<path>.restoring-<id>`, checks every checksum, renames it to the
path and runs `engine.verify` on the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from typing import Any, Callable

from .errors import CorruptRecord, InvalidInput, StorageFailure
from .filesystem import FileSystem, atomic_write, make_durable_dir, remove_tree
from .manifest import FORMAT_VERSION, IDENTITY_FILE, shard_directory

FORMAT = 1
OBJECTS, BACKUPS, PENDING = "objects", "backups", "pending"
STALE_PENDING_S = 24 * 3600  # a marker this old belongs to a backup that died: ignored and removed



def check_backup_id(backup_id: str) -> None:
    if not isinstance(backup_id, str) or not backup_id or not all(c.isalnum() or c in "-_" for c in backup_id):
        raise InvalidInput(f"Invalid backup id {backup_id!r}")


def object_path(dest: str, digest: str) -> str:
    return os.path.join(dest, OBJECTS, digest[:2], digest)


def mark_pending(fs: FileSystem, dest: str, backup_id: str) -> None:
    """Say a backup is in progress (idempotent: every shard of it calls this before copying)."""
    check_backup_id(backup_id)
    make_durable_dir(fs, os.path.join(dest, PENDING))
    marker = os.path.join(dest, PENDING, backup_id)
    if not fs.exists(marker):
        _write_new(fs, marker, str(time.time()).encode(), backup_id)


def _write_new(fs: FileSystem, path: str, data: bytes | memoryview, tag: str) -> None:
    """Write `path` whole or not at all, through a temporary name of its own (two writers never share one)."""
    atomic_write(fs, path, data, f"{path}.{tag}-{secrets.token_hex(4)}.tmp")


def copy_shard(fs: FileSystem, directory: str, files: list[tuple[str, int]], dest: str,
               backup_id: str) -> dict[str, Any]:
    """Copy a shard's pinned snapshot files into the objects; returns {files, bytes, bytes_copied}."""
    entries: list[dict[str, Any]] = []
    copied = 0
    for name, size in files:
        data = fs.read(os.path.join(directory, name))
        if len(data) < size:
            raise StorageFailure(f"{os.path.join(directory, name)} is shorter ({len(data)} bytes) than its "
                                 f"snapshot ({size} bytes): changed during the backup")
        view = memoryview(data)[:size]  # no copy: a 64 MiB slice would hold the GIL while serving waits
        digest = hashlib.sha256(view).hexdigest()
        target = object_path(dest, digest)
        if not fs.exists(target):
            make_durable_dir(fs, os.path.dirname(target))
            _write_new(fs, target, view, backup_id)
            copied += size
        entries.append({"name": name, "sha256": digest, "bytes": size})
    return {"files": entries, "bytes": sum(entry["bytes"] for entry in entries), "bytes_copied": copied}


def commit(fs: FileSystem, dest: str, backup_id: str, manifest: dict[str, Any], keep: int) -> dict[str, Any]:
    """Write the backup's manifest (the backup exists from here on), drop the pending marker, keep
    the newest `keep` backups (0: all; this one is always kept) and remove objects nothing names.
    Returns what it did; a failure after the manifest is written is reported (`cleanup_error`), not
    raised: the backup is there."""
    check_backup_id(backup_id)
    missing = [f["sha256"] for shard in manifest["shards"] for f in shard["files"]
               if not fs.exists(object_path(dest, f["sha256"]))]
    if missing:
        raise StorageFailure(f"Backup {backup_id}: {len(missing)} objects are missing before the commit "
                             f"(removed by another backup's clean-up): take the backup again")
    make_durable_dir(fs, os.path.join(dest, BACKUPS))
    body = {"format": FORMAT, "backup_id": backup_id, **manifest}
    path = os.path.join(dest, BACKUPS, f"{backup_id}.json")
    _write_new(fs, path, json.dumps(body, indent=1).encode(), backup_id)
    done: dict[str, Any] = {"backup_id": backup_id, "manifest": path, "backups_removed": [], "objects_removed": 0,
                            "cleanup_error": None}
    try:
        abort(fs, dest, backup_id)
        done["backups_removed"] = _retain(fs, dest, keep, backup_id)
        done["objects_removed"] = collect_garbage(fs, dest)
    except OSError as exc:
        done["cleanup_error"] = f"{type(exc).__name__}: {exc}"
    return done


def abort(fs: FileSystem, dest: str, backup_id: str) -> None:
    """Forget a backup in progress (its objects go with the next garbage collection)."""
    check_backup_id(backup_id)
    marker = os.path.join(dest, PENDING, backup_id)
    if fs.exists(marker):
        fs.unlink(marker)
        fs.fsync_dir(os.path.dirname(marker))


def list_backups(fs: FileSystem, dest: str) -> list[str]:
    """Backup ids of `dest`, oldest first."""
    folder = os.path.join(dest, BACKUPS)
    if not fs.isdir(folder):
        return []
    return sorted(name[:-5] for name in fs.listdir(folder) if name.endswith(".json"))


def _retain(fs: FileSystem, dest: str, keep: int, committed: str) -> list[str]:
    """Remove all but the newest `keep` manifests, never the one just `committed` (an older backup that
    finished last still counts as one of the newest)."""
    others = [backup_id for backup_id in list_backups(fs, dest) if backup_id != committed]
    removed = others[:max(0, len(others) - (keep - 1))] if keep > 0 else []
    for backup_id in removed:
        fs.unlink(os.path.join(dest, BACKUPS, f"{backup_id}.json"))
    if removed:
        fs.fsync_dir(os.path.join(dest, BACKUPS))
    return removed


def collect_garbage(fs: FileSystem, dest: str) -> int:
    """Remove objects no manifest names; skipped while another backup is in progress."""
    if _backups_in_progress(fs, dest):
        return 0
    named = {f["sha256"] for backup_id in list_backups(fs, dest)
             for shard in load_manifest(fs, os.path.join(dest, BACKUPS, f"{backup_id}.json"))["shards"]
             for f in shard["files"]}
    removed = 0
    root = os.path.join(dest, OBJECTS)
    for prefix in fs.listdir(root) if fs.isdir(root) else []:
        folder = os.path.join(root, prefix)
        for name in fs.listdir(folder) if fs.isdir(folder) else []:
            if name not in named and not fs.isdir(os.path.join(folder, name)):  # only files this module wrote
                fs.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def _backups_in_progress(fs: FileSystem, dest: str) -> bool:
    folder = os.path.join(dest, PENDING)
    active = False
    for name in fs.listdir(folder) if fs.isdir(folder) else []:
        path = os.path.join(folder, name)
        if fs.isdir(path):
            continue
        try:
            started = float(fs.read(path).decode() or 0)
        except (OSError, ValueError):
            started = 0.0
        if time.time() - started > STALE_PENDING_S:
            fs.unlink(path)
        else:
            active = True
    return active


def load_manifest(fs: FileSystem, path: str) -> dict[str, Any]:
    """A backup manifest; raises CorruptRecord if it is not one."""
    try:
        manifest: dict[str, Any] = json.loads(fs.read(path))
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("shards"), list):
            raise ValueError(f"format {manifest.get('format')!r}")
        return manifest
    except (ValueError, AttributeError) as exc:
        raise CorruptRecord(f"{path} is not a backup manifest: {exc}") from None


def resolve(fs: FileSystem, source: str) -> tuple[str, str]:
    """(destination, manifest path) of a backup named by its manifest file, or the newest one of a
    destination folder. Raises InvalidInput if there is none."""
    if source.endswith(".json") and fs.exists(source):
        return os.path.dirname(os.path.dirname(os.path.abspath(source))), source
    backups = list_backups(fs, source) if fs.isdir(source) else []
    if not backups:
        raise InvalidInput(f"No backup at {source}")
    return source, os.path.join(source, BACKUPS, f"{backups[-1]}.json")


def restore(fs: FileSystem, source: str, path: str,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rebuild storage path `path` (absent or an empty folder) from a backup; returns
    {backup_id, shard_count, files, bytes, verify: engine.verify's report}. Raises InvalidInput,
    CorruptRecord (a checksum or size does not match), StorageFailure (I/O); on any failure nothing is
    left at `path` or beside it. `progress(done, total)` is told the bytes written after each file."""
    from .verify import verify_store
    dest, manifest_path = resolve(fs, source)
    manifest = load_manifest(fs, manifest_path)
    _check_restore_target(fs, path)
    staging = f"{path.rstrip(os.sep)}.restoring-{manifest['backup_id']}-{secrets.token_hex(4)}"
    try:
        files, total = _restore_files(fs, dest, manifest, staging, progress)
        if fs.exists(path):
            fs.rmdir(path)  # empty (checked): the staged folder takes its place
        fs.replace(staging, path)
        fs.fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException as exc:
        try:
            _remove_folder(fs, staging)
        except OSError:
            pass  # a leftover staging folder is harmless: its name is unique
        if isinstance(exc, OSError):
            raise StorageFailure(f"Restore into {path} failed: {exc}") from None
        raise
    return {"backup_id": manifest["backup_id"], "shard_count": manifest["shard_count"], "files": files,
            "bytes": total, "verify": verify_store(path, fs)}


def _check_restore_target(fs: FileSystem, path: str) -> None:
    if fs.exists(path) and (not fs.isdir(path) or fs.listdir(path)):
        raise InvalidInput(f"{path} exists and is not an empty folder: restore into a new path")
    folder = os.path.abspath(path)
    while True:
        if is_backup(fs, folder):
            raise InvalidInput(f"{path} is inside the backup folder {folder}: restore outside it")
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def _restore_files(fs: FileSystem, dest: str, manifest: dict[str, Any], staging: str,
                   progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    """Write every shard's files (checked against their checksums) and the identity files into `staging`."""
    files = total = 0
    size = sum(entry["bytes"] for shard in manifest["shards"] for entry in shard["files"])
    for shard in manifest["shards"]:
        directory = shard_directory(staging, int(shard["index"]))
        make_durable_dir(fs, directory)
        for entry in shard["files"]:
            data = read_object(fs, dest, entry)
            _write_new(fs, os.path.join(directory, entry["name"]), data, "restore")
            files, total = files + 1, total + len(data)
            if progress is not None:
                progress(total, size)
        if shard.get("base"):
            _write_new(fs, os.path.join(directory, "BASE"), str(shard["base"]).encode(), "restore")
        identity = {"index": int(shard["index"]), "shard_count": int(manifest["shard_count"])}
        _write_new(fs, os.path.join(directory, IDENTITY_FILE), json.dumps(identity).encode(), "restore")
    _write_new(fs, os.path.join(staging, "manifest.json"), json.dumps(
        {"format_version": FORMAT_VERSION, "shard_count": manifest["shard_count"], "created_at": time.time(),
         "restored_from": manifest["backup_id"]}).encode(), "restore")
    return files, total


def read_object(fs: FileSystem, dest: str, entry: dict[str, Any]) -> bytes:
    """An object's bytes, checked against its manifest entry; raises CorruptRecord."""
    path = object_path(dest, entry["sha256"])
    try:
        data = fs.read(path)
    except FileNotFoundError:
        raise CorruptRecord(f"{path} is missing (file {entry['name']} of the backup)") from None
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptRecord(f"{path}: content does not match its checksum (file {entry['name']}, "
                            f"{len(data)} bytes, expected {entry['bytes']})")
    return data


def _remove_folder(fs: FileSystem, folder: str) -> None:
    """Remove a restore's leftover staging folder (shard folders of plain files)."""
    if not fs.exists(folder):
        return
    for name in fs.listdir(folder):
        inner = os.path.join(folder, name)
        if fs.isdir(inner):
            remove_tree(fs, inner)
        else:
            fs.unlink(inner)
    fs.rmdir(folder)


def is_backup(fs: FileSystem, path: str) -> bool:
    return fs.isdir(os.path.join(path, BACKUPS)) or (path.endswith(".json") and fs.exists(path)
                                                      and os.path.basename(os.path.dirname(path)) == BACKUPS)
