"""Path-level manifest and lock: fixes a storage path's shard count; one Ray runtime per path."""

from __future__ import annotations

import fcntl
import json
import os
import time

from .errors import InvalidInput, ShardLocked

FORMAT_VERSION = 1


class PathManifest:
    """Holds `<path>/LOCK` (flock) and reads or writes `<path>/manifest.json`.

    Example:
        >>> manifest = PathManifest("/tmp/p"); manifest.open(requested_shard_count=2, explicit=False)
        2
    """

    def __init__(self, storage_path: str) -> None:
        self.storage_path = storage_path
        self._lock_fd: int | None = None
        self.shard_count = 0
        self.created = False

    def open(self, requested_shard_count: int, explicit: bool, lock_wait_s: float = 3.0) -> int:
        """Lock the path and resolve its shard count (stored value wins unless `explicit` differs)."""
        os.makedirs(self.storage_path, exist_ok=True)
        self._lock(lock_wait_s)
        path = os.path.join(self.storage_path, "manifest.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            self.shard_count = int(stored["shard_count"])
            if explicit and requested_shard_count != self.shard_count:
                self.close()
                raise InvalidInput(f"shard_count {requested_shard_count} does not match the {self.shard_count} "
                                   f"shards stored at {self.storage_path}", "CONFIG_ERROR")
            return self.shard_count
        self.shard_count = requested_shard_count
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"format_version": FORMAT_VERSION, "shard_count": requested_shard_count,
                       "created_at": time.time()}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        self.created = True
        return self.shard_count

    def _lock(self, wait_s: float) -> None:
        fd = os.open(os.path.join(self.storage_path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ShardLocked(f"Storage path {self.storage_path} is held by another Ray runtime "
                                      f"or process") from None
                time.sleep(0.05)
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
