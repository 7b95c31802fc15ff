"""The single-writer guard of a shard directory: LOCK, flock'd while the log is open, and FENCE,
which holds the epoch that every open bumps and every change to the directory checks.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from .errors import ShardClosed, ShardLocked, StaleEpoch, StorageFailure
from .filesystem import FileSystem, close_quietly

_EPOCH_WIDTH = 20


class Fence:
    """LOCK and FENCE of one shard directory, and the epoch this instance opened it at.

    LOCK keeps a second writer out on one machine. FENCE also works where a lock can be lost (NFS
    clients): opening bumps the epoch under FENCE's exclusive lock, and `held` checks it under the
    shared lock, so a superseded instance cannot change the directory once a successor has opened.

    Example:
        >>> fence = Fence(FileSystem(), "/tmp/shard-0000")
        >>> epoch = fence.acquire()
        >>> with fence.held(): ...  # change the directory's files
        >>> fence.release()
    """

    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self.lock_handle: int | None = None
        self.fence_handle: int | None = None
        self.epoch = 0
        self._depth = 0

    @property
    def is_open(self) -> bool:
        return self.fence_handle is not None

    def acquire(self) -> int:
        """Take LOCK, open FENCE and bump the epoch; returns the new epoch. Raises ShardLocked, OSError
        (call `release` after a failure)."""
        self._take_lock()
        self.fence_handle = self.fs.open(os.path.join(self.directory, "FENCE"), "lock")
        self.fs.fsync_dir(self.directory)  # FENCE (and LOCK) may be new
        self.epoch = self._bump_epoch()
        return self.epoch

    def _take_lock(self) -> None:
        handle = self.fs.open(os.path.join(self.directory, "LOCK"), "lock")
        try:
            self.fs.flock(handle, "exclusive", blocking=False)
        except BlockingIOError:
            self.fs.close(handle)
            raise ShardLocked(f"Shard directory {self.directory} is locked by another process") from None
        self.lock_handle = handle

    def _read_epoch(self) -> int:
        assert self.fence_handle is not None
        text = self.fs.pread(self.fence_handle, _EPOCH_WIDTH, 0).strip()
        return int(text) if text.isdigit() else 0  # never written, or torn by a power loss

    def _bump_epoch(self) -> int:
        """The epoch lives in FENCE itself, written in place under FENCE's exclusive lock, so a writer
        checks it with one pread under the shared lock (NFS revalidates a file's cache on locking)."""
        assert self.fence_handle is not None
        self.fs.flock(self.fence_handle, "exclusive")
        try:
            epoch = self._read_epoch() + 1
            self.fs.pwrite(self.fence_handle, f"{epoch:0{_EPOCH_WIDTH}d}".encode(), 0)
            self.fs.fsync(self.fence_handle)
        finally:
            self.fs.flock(self.fence_handle, "unlock")
        return epoch

    def check(self) -> None:
        """Raise StaleEpoch if a newer incarnation opened this directory since we did."""
        current = self._read_epoch()
        if current != self.epoch:
            raise StaleEpoch(f"Shard log {self.directory} was reopened (epoch {current}, ours {self.epoch})")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold FENCE shared after checking the epoch: no newer incarnation can open the directory
        while this instance changes its files (opening bumps the epoch under FENCE exclusive). Every
        live change to the shard directory happens inside; re-entrant for nested steps.
        Raises ShardClosed, StaleEpoch, StorageFailure."""
        if self._depth:
            yield
            return
        if self.fence_handle is None:
            raise ShardClosed(f"Shard log {self.directory} is closed")
        try:
            self.fs.flock(self.fence_handle, "shared")
        except OSError as exc:
            raise StorageFailure(f"Cannot lock {self.directory}/FENCE: {exc}") from None
        self._depth += 1
        try:
            try:
                self.check()
            except OSError as exc:
                raise StorageFailure(f"Cannot read the epoch in {self.directory}/FENCE: {exc}") from None
            yield
        finally:
            self._depth -= 1
            try:
                self.fs.flock(self.fence_handle, "unlock")
            except OSError:
                pass  # closing the handle drops it at the latest

    def release(self) -> None:
        """Close FENCE and LOCK (drops both locks); never raises an OSError."""
        handles = (self.fence_handle, self.lock_handle)
        self.fence_handle = self.lock_handle = None
        for handle in handles:
            close_quietly(self.fs, handle)
