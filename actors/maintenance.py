"""Work on a storage path's files with no shard serving it: restoring one from a backup
(engine/backup.py). Runs where the path's file system is (the calling process)."""

from __future__ import annotations

from typing import Any, Callable

from engine import backup
from engine.filesystem import FileSystem


def restore(source: str, path: str, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rebuild `path` from the backup at `source` and verify it (engine.backup.restore)."""
    return backup.restore(FileSystem(), source, path, progress)
