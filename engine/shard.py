"""`Shard`: one shard of a storage path, its core (log, state, batch executor) with every operation handler.

The handlers are registered by operation type (`@handles` in engine/shard_reads.py and
engine/shard_writes.py); `Shard.execute` runs a batch of typed operations with one group commit.
"""

from __future__ import annotations

from .shard_backup import BackupHandlers
from .shard_core import COMPACT_MIN_DEAD, ShardCore
from .shard_reads import ReadHandlers
from .shard_writes import WriteHandlers, default_title


class Shard(WriteHandlers, ReadHandlers, BackupHandlers):
    """Domain state of shard `index` of a storage path.

    Example:
        >>> shard = Shard(EngineConfig(storage_path="/tmp/p", shard_count=1), 0)
        >>> shard.open()
        >>> shard.execute([CreateSession("alice", "s1"), Append("alice", "s1", [{"role": "user", "content": "hi"}])])
        [Reply(ok=True, value=True), Reply(ok=True, value=AppendReply(...))]
        >>> shard.close()
    """


__all__ = ["COMPACT_MIN_DEAD", "Shard", "ShardCore", "default_title"]
