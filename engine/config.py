"""Engine configuration: frozen, bounded pydantic models; environment read only in from_env()."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Durability = Literal["fsync", "flush", "none"]
MB = 1024 * 1024  # the "MB" of every *_mb setting and report: a mebibyte


class EngineConfig(BaseModel):
    """Everything a shard needs to open its part of a storage path.

    Example:
        >>> cfg = EngineConfig(storage_path="/tmp/x", shard_count=2)
        >>> cfg.durability
        'flush'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_path: str = Field(min_length=1, max_length=4096, description="root directory of the data")
    shard_count: int = Field(default=2, ge=1, le=256, description="number of shards of the path")
    durability: Durability = Field(default="flush", description="acknowledgement rule")
    max_message_bytes: int = Field(default=MB, ge=1024, le=16 * MB, description="content limit, UTF-8 bytes")
    max_metadata_bytes: int = Field(default=65_536, ge=1024, le=1_048_576, description="metadata limit, JSON bytes")
    cache_bytes_max: int = Field(default=50 * MB, ge=0, le=4096 * MB, description="cache budget per shard")
    segment_bytes_max: int = Field(default=64 * MB, ge=4096, le=1024 * MB, description="segment roll size")
    compress_sealed_segments: bool = Field(default=True, description="zstd-compress sealed segments")
    flush_interval_s: float = Field(default=1.0, gt=0, le=60, description="max delay before `none` mode writes")
    max_session_bytes: int = Field(default=50 * MB, ge=1024, le=500 * MB, description="soft size warning")
    max_batch_messages: int = Field(default=1000, ge=1, le=10_000, description="messages per store batch")
    embedder: str | None = Field(default=None, max_length=256, description="'module:callable' for vector search")

    @classmethod
    def from_env(cls, **explicit: object) -> "EngineConfig":
        """Build a config with precedence explicit > environment (FFCHAT_*) > defaults."""
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = os.environ.get("FFCHAT_" + name.upper())
            if raw is None:
                continue
            annotation = field.annotation
            if annotation is bool:
                values[name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif annotation is int:
                values[name] = int(raw)
            elif annotation is float:
                values[name] = float(raw)
            else:
                values[name] = raw or None
        values.update({k: v for k, v in explicit.items() if v is not None})
        return cls(**values)
