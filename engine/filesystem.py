"""The storage seam: every file-system call of the shard log and the path manifest goes through here.

`FileSystem` is the real one (os, fcntl). Tests and scale_tests swap in
`engine.simulated_filesystem.SimulatedFileSystem`, which keeps files in memory, tells what a
crash leaves behind (process kill or power loss, with torn writes) and fails chosen calls with
ENOSPC or EIO, the way SQLite's test VFS and TigerBeetle's storage simulator are used. Each public
method is one step a crash or a fault can hit; the helpers at the bottom compose steps.

Handles are opaque ints. Paths are plain strings.
"""

from __future__ import annotations

import fcntl
import os
from typing import Iterable, Literal

OpenMode = Literal["append", "create", "lock"]
LockMode = Literal["shared", "exclusive", "unlock"]

_FLAGS = {
    "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "create": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "lock": os.O_RDWR | os.O_CREAT,
}
_LOCKS = {"shared": fcntl.LOCK_SH, "exclusive": fcntl.LOCK_EX, "unlock": fcntl.LOCK_UN}


class FileSystem:
    """The operating system's file system (the default everywhere outside tests)."""

    # ------------------------------------------------------------------ directories
    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ whole files and names
    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def replace(self, source: str, target: str) -> None:
        os.replace(source, target)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    # ------------------------------------------------------------------ handles
    def open(self, path: str, mode: OpenMode) -> int:
        return os.open(path, _FLAGS[mode], 0o644)

    def write(self, handle: int, data: bytes | memoryview) -> int:
        """One write call; may write fewer bytes than given (use `write_all`)."""
        return os.write(handle, data)

    def pread(self, handle: int, size: int, offset: int) -> bytes:
        return os.pread(handle, size, offset)

    def pwrite(self, handle: int, data: bytes, offset: int) -> int:
        """Overwrite bytes in place (the one in-place write: the epoch in FENCE)."""
        return os.pwrite(handle, data, offset)

    def fsync(self, handle: int) -> None:
        os.fsync(handle)

    def fdatasync(self, handle: int) -> None:
        os.fdatasync(handle)

    def truncate(self, handle: int, size: int) -> None:
        os.ftruncate(handle, size)

    def close(self, handle: int) -> None:
        os.close(handle)

    def flock(self, handle: int, mode: LockMode, blocking: bool = True) -> None:
        """Take or drop an advisory lock; BlockingIOError if `blocking` is False and it is held."""
        fcntl.flock(handle, _LOCKS[mode] | (0 if blocking or mode == "unlock" else fcntl.LOCK_NB))


# ---------------------------------------------------------------------- helpers made of steps
def write_all(fs: FileSystem, handle: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` (short writes are continued)."""
    view = memoryview(data)
    while view:
        written = fs.write(handle, view)
        view = view[written:]


def atomic_write(fs: FileSystem, path: str, data: bytes | memoryview | Iterable[bytes],
                 temporary: str | None = None) -> None:
    """Replace `path` with `data` (bytes, or parts written one after another, so a large file need not
    be held whole) so a crash leaves the old or the new file, never a mix: temp file (`path`.tmp
    unless named: writers racing for one path need names of their own), fsync, rename, fsync of the
    directory."""
    temporary = temporary or path + ".tmp"
    handle = fs.open(temporary, "create")
    try:
        try:
            for part in [data] if isinstance(data, (bytes, memoryview)) else data:
                write_all(fs, handle, part)
            fs.fsync(handle)
        finally:
            fs.close(handle)
    except OSError:
        try:  # a full disk must not stay full of a half-written copy
            fs.unlink(temporary)
        except OSError:
            pass
        raise
    fs.replace(temporary, path)
    fs.fsync_dir(os.path.dirname(path) or ".")


def make_durable_dir(fs: FileSystem, path: str) -> None:
    """Create `path` (and missing parents) and fsync each parent whose entries changed."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not fs.exists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if not missing:
        return
    fs.makedirs(path)
    for created in reversed(missing):
        fs.fsync_dir(os.path.dirname(created))


def close_quietly(fs: FileSystem, handle: int | None) -> None:
    """Close `handle` if there is one, ignoring an OSError (the descriptor is gone either way)."""
    if handle is None:
        return
    try:
        fs.close(handle)
    except OSError:
        pass


def remove_tree(fs: FileSystem, path: str) -> None:
    """Delete a directory of plain files (staging folders), then the directory itself."""
    if not fs.exists(path):
        return
    for name in fs.listdir(path):
        fs.unlink(os.path.join(path, name))
    fs.rmdir(path)
