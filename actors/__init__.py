"""Ray actor wrappers around engine objects."""

from .router_actor import RouterActor
from .shard_actor import ShardActor

__all__ = ["RouterActor", "ShardActor"]
