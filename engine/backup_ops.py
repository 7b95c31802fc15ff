"""The typed shard operations of an online backup (engine/backup.py has the files; the shard's
handlers are in engine/shard_backup.py; the bridge drives them in api/backups.py).

A backup is: `BackupShard` on every shard (pins a snapshot, copies it in the background), then
`BackupStatus` on each until it answers, then `BackupCommit` on shard 0 (writes the manifest), or
`BackupAbort` there if any shard failed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .operations import ShardOperation, typed


@typed
class BackupShard(ShardOperation):
    """Reply: {position: {segment, offset}, files}; the copy goes on in the shard, beside serving.
    Runs after the batch's commit, so writes sent before it are in the snapshot."""

    after_commit: ClassVar[bool] = True
    dest: str
    backup_id: str


@typed
class BackupStatus(ShardOperation):
    """Reply: None while the shard is still copying, else its manifest entry (raises what failed;
    StorageFailure if this shard knows no such backup: its process restarted meanwhile)."""

    backup_id: str


@typed
class BackupCommit(ShardOperation):
    """Reply: {backup_id, manifest, backups_removed, objects_removed}; writes the manifest."""

    dest: str
    backup_id: str
    manifest: dict[str, Any]
    keep: int = 0


@typed
class BackupAbort(ShardOperation):
    """Reply: None; forgets a failed backup (its objects go with the next garbage collection)."""

    dest: str
    backup_id: str
