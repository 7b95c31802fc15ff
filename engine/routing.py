"""Stable routing of sessions and user profiles to shard indexes (never Python's hash())."""

from __future__ import annotations

import zlib


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def shard_index_for(user_id: str, session_id: str, shard_count: int) -> int:
    """Shard owning session (user_id, session_id); two users may share a session id."""
    assert shard_count >= 1
    # "\x1f" cannot appear in a valid id, so ("a", "b:c") and ("a:b", "c") never collide by construction.
    return _stable_hash(user_id + "\x1f" + session_id) % shard_count


def user_shard_index(user_id: str, shard_count: int) -> int:
    """Shard owning the user's profile."""
    assert shard_count >= 1
    return _stable_hash(user_id) % shard_count


def host_count(shard_count: int, cpu_count: int) -> int:
    """How many actor processes host a path's shards: one per shard while the runtime has a CPU per
    shard, else one per CPU (each process is ~55 MB, and processes beyond the cores add no
    parallelism); shard i goes to host i % host_count, so every CPU (and node) gets one.
    `cpu_count` 0: unknown, one per shard."""
    if cpu_count <= 0 or shard_count <= cpu_count:
        return shard_count
    return cpu_count
