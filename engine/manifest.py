"""Path-level manifest and lock: fixes a storage path's shard count; one Ray runtime per path.

`manifest.json` is written once, atomically, with the storage root fsync'd after it (and after the
root itself is created). Each shard directory also records which shard of how many it is
(`SHARD.json`), so a lost manifest is rebuilt from the shards, never replaced by a silent new
layout with another shard count. All file-system calls go through `engine.filesystem`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .errors import CorruptRecord, ShardCountMismatch, ShardLocked, StorageFailure
from .filesystem import FileSystem, atomic_write, close_quietly, make_durable_dir

FORMAT_VERSION = 2
MAX_SHARDS = 256
SHARD_PREFIX = "shard-"
IDENTITY_FILE = "SHARD.json"  # in each shard directory: {"index", "shard_count"}, written once


def shard_directory(storage_path: str, index: int) -> str:
    return os.path.join(storage_path, f"{SHARD_PREFIX}{index:04d}")


def identity_mismatch(found: Any, wanted: dict[str, int]) -> bool:
    """Does a SHARD.json content fail to say the `wanted` index and shard_count?"""
    return not isinstance(found, dict) or {key: found.get(key) for key in wanted} != wanted


def read_identity(fs: FileSystem, directory: str) -> Any:
    """The parsed SHARD.json of a shard directory; None if it is missing or not JSON."""
    try:
        return json.loads(fs.read(os.path.join(directory, IDENTITY_FILE)))
    except (FileNotFoundError, ValueError):
        return None


class PathManifest:
    """Holds `<path>/LOCK` (flock) and reads or writes `<path>/manifest.json`.

    Example:
        >>> manifest = PathManifest("/tmp/p"); manifest.open(requested_shard_count=2, explicit=False)
        2
    """

    def __init__(self, storage_path: str, fs: FileSystem | None = None) -> None:
        self.storage_path = storage_path
        self.fs = fs or FileSystem()
        self._lock_handle: int | None = None
        self.shard_count = 0
        self.created = False
        self.rebuilt = False

    def _path(self, name: str) -> str:
        return os.path.join(self.storage_path, name)

    def open(self, requested_shard_count: int, explicit: bool, lock_wait_s: float = 3.0) -> int:
        """Lock the path and resolve its shard count (stored value wins unless `explicit` differs).

        Raises ShardLocked, ShardCountMismatch (explicit count differs), CorruptRecord (an
        unreadable manifest that the shard directories cannot replace), StorageFailure (I/O).
        """
        try:
            make_durable_dir(self.fs, self.storage_path)
            self._lock(lock_wait_s)
            self.shard_count = self._resolve(requested_shard_count)
        except OSError as exc:
            self.close()
            raise StorageFailure(f"Cannot open storage path {self.storage_path}: {exc}") from None
        except BaseException:
            self.close()
            raise
        if explicit and requested_shard_count != self.shard_count:
            self.close()
            raise ShardCountMismatch(f"shard_count {requested_shard_count} does not match the {self.shard_count} "
                                     f"shards stored at {self.storage_path}")
        return self.shard_count

    def _resolve(self, requested: int) -> int:
        stored = self._read()
        if stored is not None:
            return stored
        from_shards = self._count_from_shards()
        if from_shards is not None:
            self.rebuilt = True
            self._write(from_shards)
            return from_shards
        self.created = True
        self._write(requested)
        return requested

    def _read(self) -> int | None:
        path = self._path("manifest.json")
        if not self.fs.exists(path):
            return None
        try:
            stored: Any = json.loads(self.fs.read(path))
            version, count = stored["format_version"], stored["shard_count"]
            if type(count) is not int or not 1 <= count <= MAX_SHARDS:
                raise ValueError(f"shard_count {count!r} is not an int in 1..{MAX_SHARDS}")
        except (ValueError, KeyError, TypeError):
            if self._count_from_shards() is not None:
                return None  # rebuilt from the shard directories by the caller
            raise CorruptRecord(f"{path} is unreadable and no shard directory says the shard count; "
                                f"refusing to guess (restore the file)") from None
        if version != FORMAT_VERSION:
            raise CorruptRecord(f"{self.storage_path} holds data in format {version}; this version reads format "
                                f"{FORMAT_VERSION} (export the sessions with the version that wrote them, then "
                                f"import them here)")
        return count

    def _count_from_shards(self) -> int | None:
        """The shard count the shard directories record, None if there are none; refuses if they
        exist but cannot say (or disagree)."""
        shards = sorted(name for name in self.fs.listdir(self.storage_path) if name.startswith(SHARD_PREFIX))
        if not shards:
            return None
        counts = set()
        for name in shards:
            try:
                count = read_identity(self.fs, os.path.join(self.storage_path, name))["shard_count"]
            except (OSError, KeyError, TypeError):
                continue
            if type(count) is int and 1 <= count <= MAX_SHARDS:
                counts.add(count)
        if len(counts) != 1:
            raise CorruptRecord(f"{self.storage_path} has shard directories {shards[:4]}... but no readable "
                                f"manifest.json and their SHARD.json files give {sorted(counts) or 'no'} shard "
                                f"count; refusing to initialise a new layout over them")
        return counts.pop()

    def _write(self, shard_count: int) -> None:
        atomic_write(self.fs, self._path("manifest.json"), json.dumps(
            {"format_version": FORMAT_VERSION, "shard_count": shard_count, "created_at": time.time()}).encode())

    def _lock(self, wait_s: float) -> None:
        handle = self.fs.open(self._path("LOCK"), "lock")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.fs.flock(handle, "exclusive", blocking=False)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.fs.close(handle)
                    raise ShardLocked(f"Storage path {self.storage_path} is held by another Ray runtime "
                                      f"or process") from None
                time.sleep(0.05)
        self._lock_handle = handle

    def close(self) -> None:
        handle, self._lock_handle = self._lock_handle, None
        close_quietly(self.fs, handle)  # the lock dies with the handle either way
