"""The storage paths a router serves: each path's manifest (lock and shard count), shard actors and config."""

from __future__ import annotations

import asyncio
from typing import Any

from engine import operations as ops
from engine.config import EngineConfig
from engine.errors import ConnectionLost, DurabilityMismatch, EmbedderMismatch, PathNotOpen, ShardCountMismatch, ShardUnassigned
from engine.manifest import PathManifest

from .direct_link import ShardLink


_DURABILITY_RANK = {"none": 0, "flush": 1, "fsync": 2}


def shard_config(template: EngineConfig, shard_count: int) -> EngineConfig:
    """The config each shard of a path gets: the path's cache budget divided over its shards."""
    return template.model_copy(update={"shard_count": shard_count,
                                       "cache_bytes_max": template.cache_bytes_max // shard_count})


class OpenPath:
    """One open storage path: its locked manifest, shard actors and the bridges attached."""

    def __init__(self, manifest: PathManifest, config: EngineConfig, shards: list[Any], compress: bool,
                 direct: bool = True) -> None:
        self.manifest = manifest
        self.config = config
        self.shards = shards
        # The router's own fan-out calls go over the shards' direct data plane too.
        self.links = [ShardLink(handle, (config.storage_path, index), direct) for index, handle in enumerate(shards)]
        self.compress = compress
        self.bridges: set[str] = set()  # ids of the bridges attached

    async def assign(self, index: int, fresh_open: bool = False) -> None:
        """Give shard `index` to its actor (it replays the log); also heals a restarted actor."""
        await self.shards[index].assign.remote(self.config, index, self.compress, fresh_open)

    async def call(self, index: int, operations: list[ops.ShardOperation], over_ray: bool = False
                   ) -> list[ops.Reply]:
        """One batch to one shard; a restarted (unassigned) actor gets its shard back, and a broken
        direct connection is set up again, before the retry (one of each at most)."""
        link = self.links[index]
        healed: set[type] = set()
        while True:
            try:
                replies: list[ops.Reply] = await link.execute(operations, over_ray)
                return replies
            except (ShardUnassigned, ConnectionLost) as exc:
                if type(exc) in healed:
                    raise
                healed.add(type(exc))
                if isinstance(exc, ShardUnassigned):
                    await self.assign(index)


class PathRegistry:
    """Open paths by namespace."""

    def __init__(self) -> None:
        self.paths: dict[str, OpenPath] = {}

    def get(self, namespace: str, bridge_id: str = "") -> OpenPath:
        """The open path; PathNotOpen if this router does not know it or (after a router restart) does
        not know that the bridge is attached: the bridge then re-registers, so every live bridge
        is counted again before the path can be released."""
        path = self.paths.get(namespace)
        if path is None or (bridge_id and bridge_id not in path.bridges):
            raise PathNotOpen(f"path {namespace} is not registered with this router for this bridge")
        return path

    def check_settings(self, request: ops.OpenPathRequest, path: OpenPath) -> None:
        """A bridge attaching to an open path gets the path's shards as they are: refuse one that
        needs what they do not give (another shard count, stronger durability, another embedder)."""
        wanted, actual = request.template, path.config
        where = f"the open path {wanted.storage_path}"
        if request.explicit and request.requested_shards != actual.shard_count:
            raise ShardCountMismatch(f"shard_count {request.requested_shards} does not match the "
                                     f"{actual.shard_count} shards stored at {wanted.storage_path}")
        if _DURABILITY_RANK[wanted.durability] > _DURABILITY_RANK[actual.durability]:
            raise DurabilityMismatch(f"durability '{wanted.durability}' is stronger than the '{actual.durability}' "
                                     f"of {where} (opened by another bridge); use '{actual.durability}' or reopen")
        if wanted.embedder is not None and wanted.embedder != actual.embedder:
            raise EmbedderMismatch(f"embedder {wanted.embedder!r} differs from {actual.embedder!r} of {where} "
                                   f"(opened by another bridge)")

    @staticmethod
    async def lock(request: ops.OpenPathRequest) -> tuple[PathManifest, EngineConfig]:
        """Lock the path's manifest and fix its shard count (off the event loop: it may wait for the lock)."""
        manifest = PathManifest(request.template.storage_path)
        count = await asyncio.to_thread(manifest.open, request.requested_shards, request.explicit)
        return manifest, shard_config(request.template, count)

    def info(self) -> dict[str, Any]:
        return {namespace: {"attached": len(path.bridges), "shard_count": path.config.shard_count,
                            "storage_path": path.config.storage_path} for namespace, path in self.paths.items()}
