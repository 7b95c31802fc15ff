"""An in-memory file system that crashes, tears writes and fails calls on command (for tests).

It implements the `engine.filesystem.FileSystem` seam and models what survives a crash:

- the *volatile* state is what the OS holds: every completed call. A killed process leaves it.
- the *durable* state is what a power loss leaves: file bytes as of their last fsync and
  directory entries as of their directory's last fsync (a new or renamed file is not durable
  until its directory is fsync'd; creating a directory is an entry in its parent).

Every public method is one *step*. `crash_at=k` makes step k raise `SimulatedCrash` (a
BaseException, so no `except Exception` in the engine can swallow it) without doing anything, and
every later call raise it too: the process is dead. Then `after_process_crash()` and
`after_power_loss()` build the file systems a restarted process would find, and `torn(offset)`
the one where the interrupted write reached the disk up to `offset` bytes. `fail` makes a step
raise an OSError (ENOSPC, EIO...) instead, and the process lives on.

Writes append, except `pwrite` (the engine's one in-place write: the epoch in FENCE).
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import dataclass
from typing import Callable, Iterator

from .filesystem import FileSystem, LockMode, OpenMode


class SimulatedCrash(BaseException):
    """The simulated process died at this step."""


@dataclass(frozen=True)
class Step:
    """What one step was: its number, operation and path (writes also carry their data)."""

    number: int
    operation: str
    path: str
    data: bytes = b""
    offset: int | None = None  # pwrite: where the data goes (None: appended)


class _File:
    __slots__ = ("data", "durable", "locks")

    def __init__(self, data: bytes = b"", durable: bytes = b"") -> None:
        self.data = bytearray(data)
        self.durable = durable
        self.locks: dict[int, str] = {}


class _Dir:
    __slots__ = ("entries", "durable")

    def __init__(self) -> None:
        self.entries: dict[str, _File | _Dir] = {}
        self.durable: dict[str, _File | _Dir] = {}


FaultRule = Callable[[Step], "int | None"]


PAGE_BYTES = 4096


def _pages_kept(data: bytes, durable_size: int, pattern: str) -> bytes:
    """`data` with its bytes past `durable_size` kept only in some 4 KiB pages (others zeroed)."""
    out = bytearray(data[:durable_size]) + bytes(len(data) - durable_size)
    first_page, last_page = durable_size // PAGE_BYTES, (len(data) - 1) // PAGE_BYTES
    for page in range(first_page, last_page + 1):
        if (pattern == "odd" and page % 2 == 1) or (pattern == "last" and page == last_page):
            start, end = max(page * PAGE_BYTES, durable_size), min((page + 1) * PAGE_BYTES, len(data))
            out[start:end] = data[start:end]
    return bytes(out)


def _overwrite(node: _File, data: bytes, offset: int) -> None:
    if len(node.data) < offset:
        node.data += bytes(offset - len(node.data))
    node.data[offset:offset + len(data)] = data


class SimulatedFileSystem(FileSystem):
    """In-memory `FileSystem` with crash points and fault injection.

    Example:
        >>> fs = SimulatedFileSystem(crash_at=7)
        >>> try: run_workload(fs)
        ... except SimulatedCrash: pass
        >>> for survivor in (fs.after_process_crash(), fs.after_power_loss()): reopen(survivor)
    """

    def __init__(self, crash_at: int | None = None, fail: FaultRule | None = None,
                 partial_write_on_fail: int = 0) -> None:
        self.root = _Dir()
        self.crash_at = crash_at
        self.fail = fail
        self.partial_write_on_fail = partial_write_on_fail
        self.steps = 0
        self.crashed: Step | None = None
        self._handles: dict[int, tuple[_File, str, str]] = {}
        self._next_handle = 3

    # ------------------------------------------------------------------ step control
    def _step(self, operation: str, path: str, data: bytes = b"", offset: int | None = None) -> Step:
        if self.crashed is not None:
            raise SimulatedCrash(f"process already crashed at step {self.crashed.number}")
        self.steps += 1
        step = Step(self.steps, operation, path, data, offset)
        if self.crash_at is not None and self.steps >= self.crash_at:
            self.crashed = step
            raise SimulatedCrash(f"crash at step {step.number}: {operation} {path}")
        if self.fail is not None:
            code = self.fail(step)
            if code is not None:
                raise OSError(code, f"{errno.errorcode.get(code, code)} (simulated) at step {step.number}: "
                                    f"{operation}", path)
        return step

    # ------------------------------------------------------------------ tree walking
    @staticmethod
    def _split(path: str) -> list[str]:
        normal = posixpath.normpath(posixpath.join("/", path))
        return [part for part in normal.split("/") if part]

    def _node(self, path: str) -> _File | _Dir | None:
        node: _File | _Dir = self.root
        for part in self._split(path):
            if not isinstance(node, _Dir) or part not in node.entries:
                return None
            node = node.entries[part]
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._split(path)
        if not parts:
            raise OSError(errno.EINVAL, "no parent of the root", path)
        parent = self._node("/" + "/".join(parts[:-1]))
        if not isinstance(parent, _Dir):
            raise FileNotFoundError(errno.ENOENT, "No such directory", path)
        return parent, parts[-1]

    def _dir(self, path: str) -> _Dir:
        node = self._node(path)
        if not isinstance(node, _Dir):
            raise FileNotFoundError(errno.ENOENT, "No such directory", path)
        return node

    def _file(self, path: str) -> _File:
        node = self._node(path)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        if not isinstance(node, _File):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        return node

    # ------------------------------------------------------------------ directories
    def makedirs(self, path: str) -> None:
        self._step("makedirs", path)
        node: _Dir = self.root
        for part in self._split(path):
            child = node.entries.get(part)
            if child is None:
                child = node.entries[part] = _Dir()
            if not isinstance(child, _Dir):
                raise FileExistsError(errno.EEXIST, "A file is in the way", path)
            node = child

    def listdir(self, path: str) -> list[str]:
        self._step("listdir", path)
        return sorted(self._dir(path).entries)

    def exists(self, path: str) -> bool:
        self._step("exists", path)
        return self._node(path) is not None

    def isdir(self, path: str) -> bool:
        self._step("isdir", path)
        return isinstance(self._node(path), _Dir)

    def rmdir(self, path: str) -> None:
        self._step("rmdir", path)
        if self._dir(path).entries:
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        parent, name = self._parent(path)
        del parent.entries[name]

    def fsync_dir(self, path: str) -> None:
        self._step("fsync_dir", path)
        directory = self._dir(path)
        directory.durable = dict(directory.entries)

    # ------------------------------------------------------------------ whole files and names
    def read(self, path: str) -> bytes:
        self._step("read", path)
        return bytes(self._file(path).data)

    def size(self, path: str) -> int:
        self._step("size", path)
        return len(self._file(path).data)

    def replace(self, source: str, target: str) -> None:
        self._step("replace", source + " -> " + target)
        source_parent, source_name = self._parent(source)
        node = source_parent.entries.get(source_name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file", source)
        target_parent, target_name = self._parent(target)
        existing = target_parent.entries.get(target_name)
        if isinstance(existing, _Dir) and (not isinstance(node, _Dir) or existing.entries):
            raise OSError(errno.ENOTEMPTY, "Target directory in the way", target)
        del source_parent.entries[source_name]
        target_parent.entries[target_name] = node

    def unlink(self, path: str) -> None:
        self._step("unlink", path)
        parent, name = self._parent(path)
        if not isinstance(parent.entries.get(name), _File):
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        del parent.entries[name]

    # ------------------------------------------------------------------ handles
    def open(self, path: str, mode: OpenMode) -> int:
        self._step("open:" + mode, path)
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        if node is None:
            node = parent.entries[name] = _File()
        elif mode == "create":
            node.data = bytearray()
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self._handles[handle] = (node, path, mode)
        return handle

    def _handle(self, handle: int) -> _File:
        if handle not in self._handles:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self._handles[handle][0]

    def write(self, handle: int, data: bytes | memoryview) -> int:
        payload = bytes(data)
        path = self._handles[handle][1] if handle in self._handles else "?"
        try:
            self._step("write", path, payload)
        except OSError:
            if self.partial_write_on_fail:  # a short write reached the file before the error
                self._handle(handle).data += payload[:self.partial_write_on_fail]
            raise
        self._handle(handle).data += payload
        return len(payload)

    def pread(self, handle: int, size: int, offset: int) -> bytes:
        self._step("pread", self._handles.get(handle, (None, "?"))[1])
        return bytes(self._handle(handle).data[offset:offset + size])

    def pwrite(self, handle: int, data: bytes, offset: int) -> int:
        self._step("pwrite", self._handles.get(handle, (None, "?"))[1], bytes(data), offset)
        _overwrite(self._handle(handle), bytes(data), offset)
        return len(data)

    def fsync(self, handle: int) -> None:
        self._step("fsync", self._handles.get(handle, (None, "?"))[1])
        node = self._handle(handle)
        node.durable = bytes(node.data)

    def fdatasync(self, handle: int) -> None:
        self._step("fdatasync", self._handles.get(handle, (None, "?"))[1])
        node = self._handle(handle)
        node.durable = bytes(node.data)

    def truncate(self, handle: int, size: int) -> None:
        self._step("truncate", self._handles.get(handle, (None, "?"))[1])
        node = self._handle(handle)
        if size <= len(node.data):
            del node.data[size:]
        else:
            node.data += bytes(size - len(node.data))

    def close(self, handle: int) -> None:
        self._step("close", self._handles.get(handle, (None, "?"))[1])
        node = self._handle(handle)
        node.locks.pop(handle, None)
        del self._handles[handle]

    def flock(self, handle: int, mode: LockMode, blocking: bool = True) -> None:
        self._step("flock:" + mode, self._handles.get(handle, (None, "?"))[1])
        node = self._handle(handle)
        if mode == "unlock":
            node.locks.pop(handle, None)
            return
        others = {h: m for h, m in node.locks.items() if h != handle}
        if others and (mode == "exclusive" or "exclusive" in others.values()):
            # One simulated process has one thread: a lock it cannot get would never be freed.
            raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable (simulated lock held)")
        node.locks[handle] = mode

    # ------------------------------------------------------------------ what a crash leaves
    def after_process_crash(self) -> "SimulatedFileSystem":
        """The file system after the process died at the crash step: every completed call stays."""
        return self._copy(durable_only=False)

    def torn(self, offset: int) -> "SimulatedFileSystem":
        """Like after_process_crash, with the first `offset` bytes of the interrupted write applied."""
        step = self.crashed
        assert step is not None and step.operation in ("write", "pwrite"), "torn() needs a crash at a write"
        survivor = self._copy(durable_only=False)
        node = survivor._node(step.path)
        assert isinstance(node, _File)
        if step.offset is None:
            node.data += step.data[:offset]
        else:
            _overwrite(node, step.data[:offset], step.offset)
        return survivor

    def after_power_loss(self, unsynced_kept: float = 0.0, entries_volatile: bool = False,
                         pages: str | None = None) -> "SimulatedFileSystem":
        """The file system after a power loss: durable directory entries and file bytes.

        `unsynced_kept` keeps that fraction of each file's unsynced appended bytes (the disk wrote
        part of what the OS held); `entries_volatile` keeps unsynced directory changes but not
        unsynced file data (renames reached the journal, data did not). `pages` persists the
        unsynced appended bytes out of order, by 4 KiB page of the file, the size included:
        "odd" keeps the odd-numbered pages, "last" only the last page; the others read as zeros.
        """
        return self._copy(durable_only=True, unsynced_kept=unsynced_kept, entries_volatile=entries_volatile,
                          pages=pages)

    def _copy(self, durable_only: bool, unsynced_kept: float = 0.0, entries_volatile: bool = False,
              pages: str | None = None) -> "SimulatedFileSystem":
        clone = SimulatedFileSystem()
        memo: dict[int, _File | _Dir] = {}

        def copy(node: _File | _Dir) -> _File | _Dir:
            if id(node) in memo:
                return memo[id(node)]
            if isinstance(node, _File):
                if durable_only:
                    data = node.durable
                    if bytes(node.data[:len(data)]) == data and len(node.data) > len(data):
                        if pages is not None:
                            data = _pages_kept(bytes(node.data), len(data), pages)
                        elif unsynced_kept:
                            tail = bytes(node.data[len(data):])
                            data += tail[:int(len(tail) * unsynced_kept)]
                    memo[id(node)] = _File(data, node.durable)
                else:
                    memo[id(node)] = _File(bytes(node.data), node.durable)
                return memo[id(node)]
            directory = _Dir()
            memo[id(node)] = directory
            source = node.entries if (not durable_only or entries_volatile) else node.durable
            directory.entries = {name: copy(child) for name, child in source.items()}
            directory.durable = {name: copy(child) for name, child in node.durable.items()}
            return directory

        root = copy(self.root)
        assert isinstance(root, _Dir)
        clone.root = root
        return clone

    # ------------------------------------------------------------------ inspection for tests
    def files(self, path: str = "/") -> Iterator[tuple[str, bytes]]:
        """Every file under `path` with its current bytes (no step is counted)."""
        node = self._node(path)
        if isinstance(node, _File):
            yield path, bytes(node.data)
        elif isinstance(node, _Dir):
            for name, child in sorted(node.entries.items()):
                yield from self._files_below(posixpath.join(path, name), child)

    def _files_below(self, path: str, node: _File | _Dir) -> Iterator[tuple[str, bytes]]:
        if isinstance(node, _File):
            yield path, bytes(node.data)
        else:
            for name, child in sorted(node.entries.items()):
                yield from self._files_below(posixpath.join(path, name), child)

