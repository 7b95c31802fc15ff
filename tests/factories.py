"""Builders shared by tests."""

from __future__ import annotations

from engine.config import EngineConfig
from engine.shard import Shard


def engine_config(path, **overrides) -> EngineConfig:
    values = {"storage_path": str(path), "shard_count": 1, "durability": "flush"}
    values.update(overrides)
    return EngineConfig(**values)


def open_shard(path, index: int = 0, **overrides) -> Shard:
    shard = Shard(engine_config(path, **overrides), index)
    shard.open()
    return shard


def message(content: str, role: str = "user", **extra) -> dict:
    return {"role": role, "content": content, **extra}


SLOW_QUERY_WORD = "slowquery"


def slow_query_embedder(texts: list[str]) -> list[list[float]]:
    """The hashing embedder, but 3 s slow for a text containing SLOW_QUERY_WORD (a stuck embedder)."""
    import time

    from engine.embedders import hashing
    if any(SLOW_QUERY_WORD in text for text in texts):
        time.sleep(3)
    return hashing(texts)
