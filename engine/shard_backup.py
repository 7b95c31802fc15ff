"""A shard's part in an online backup (engine/backup.py, engine/backup_ops.py): pin a snapshot of
its log at one position, copy it on a thread of its own while the shard keeps serving, answer how
the copy went; shard 0 also commits or aborts the whole backup."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import backup
from . import backup_ops as bops
from .errors import EngineError, InvalidInput, StorageFailure
from .segment import number_of
from .shard_core import ShardCore, handles

KEPT_JOBS = 16  # finished copies remembered for their BackupStatus (a backup asks once)


@dataclass
class _Job:
    position: dict[str, Any]
    entry: dict[str, Any] | None = None
    error: EngineError | None = None
    done: bool = False


class BackupHandlers(ShardCore):
    """Backup operations of a shard."""

    @handles(bops.BackupShard)
    def backup_shard(self, dest: str, backup_id: str) -> dict[str, Any]:
        self._check_destination(dest)
        backup.check_backup_id(backup_id)
        if backup_id in self.backups:
            return dict(self.backups[backup_id].position)  # a retried call: the copy already runs
        try:
            backup.mark_pending(self.fs, dest, backup_id)
        except OSError as exc:
            raise StorageFailure(f"Cannot write to backup destination {dest}: {exc}") from None
        files = self.log.snapshot_begin()
        last_name, last_size = files[-1] if files else ("", 0)
        job = _Job({"segment": last_name, "offset": last_size, "epoch": self.log.epoch,
                    "messages": self.state.message_count, "sessions": len(self.state.sessions)})
        self.backups[backup_id] = job
        for old in list(self.backups)[:-KEPT_JOBS]:
            if self.backups[old].done:
                del self.backups[old]
        threading.Thread(target=self._copy, args=(job, files, dest, backup_id), daemon=True,
                         name=f"shard-{self.index}-backup").start()
        return dict(job.position)

    def _check_destination(self, dest: str) -> None:
        if not isinstance(dest, str) or not os.path.isabs(dest):
            raise InvalidInput(f"A backup destination must be an absolute path, not {dest!r}")
        storage = os.path.realpath(self.config.storage_path)
        target = os.path.realpath(dest)
        if target == storage or target.startswith(storage + os.sep) or storage.startswith(target + os.sep):
            raise InvalidInput(f"A backup destination must be outside the storage path ({dest})")

    def _copy(self, job: _Job, files: list[tuple[str, int]], dest: str, backup_id: str) -> None:
        """The copy, beside serving: reads only files the snapshot pinned."""
        started = time.perf_counter()
        try:
            copied = backup.copy_shard(self.fs, self.directory, files, dest, backup_id)
            job.entry = {"index": self.index, "position": job.position, "base": self._base(files), **copied,
                         "copy_ms": round((time.perf_counter() - started) * 1000, 1)}
        except EngineError as exc:
            job.error = exc
        except OSError as exc:
            job.error = StorageFailure(f"Backup of shard {self.index} to {dest} failed: {exc}")
        finally:
            self.log.snapshot_end()
            job.done = True

    @staticmethod
    def _base(files: list[tuple[str, int]]) -> int:
        """The first live segment's number (a restored shard's BASE)."""
        numbers = [number_of(name) for name, _ in files]
        return min((n for n in numbers if n is not None), default=0)

    @handles(bops.BackupStatus)
    def backup_status(self, backup_id: str) -> dict[str, Any] | None:
        job = self.backups.get(backup_id)
        if job is None:
            raise StorageFailure(f"Shard {self.index} has no backup {backup_id} (its process restarted): "
                                 f"take the backup again")
        if not job.done:
            return None
        if job.error is not None:
            raise job.error
        return dict(job.entry or {})

    @handles(bops.BackupCommit)
    def backup_commit(self, dest: str, backup_id: str, manifest: dict[str, Any], keep: int = 0) -> dict[str, Any]:
        self._check_destination(dest)
        try:
            return backup.commit(self.fs, dest, backup_id, manifest, keep)
        except OSError as exc:
            raise StorageFailure(f"Cannot write backup {backup_id} to {dest}: {exc}") from None

    @handles(bops.BackupAbort)
    def backup_abort(self, dest: str, backup_id: str) -> None:
        self._check_destination(dest)
        try:
            backup.abort(self.fs, dest, backup_id)
        except OSError as exc:
            raise StorageFailure(f"Cannot clean up backup {backup_id} in {dest}: {exc}") from None
