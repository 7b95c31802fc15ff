"""The one place that applies ray.remote: names, namespace, restarts, placement, concurrency groups."""

from __future__ import annotations

from typing import Any

import ray

from engine.config import EngineConfig

from .router_actor import RouterActor
from .shard_actor import ShardActor

ROUTER_NAME = "router"


def shard_name(index: int) -> str:
    return f"shard/{index}"


def start_router(storage_path: str, requested_shard_count: int, explicit: bool, namespace: str) -> Any:
    """Start (or attach to) the path's router; it takes the path lock and resolves the shard count."""
    return ray.remote(RouterActor).options(
        name=ROUTER_NAME, namespace=namespace, get_if_exists=True, lifetime="detached", num_cpus=0,
        max_restarts=-1, max_concurrency=1000,
    ).remote(storage_path, requested_shard_count, explicit, namespace)


def start_shards(config: EngineConfig, namespace: str, compress_records: bool) -> list[Any]:
    """Start (or attach to) every shard actor of the path, spread over the cluster's nodes."""
    remote = ray.remote(concurrency_groups={"health": 1})(ShardActor)
    return [remote.options(
        name=shard_name(index), namespace=namespace, get_if_exists=True, lifetime="detached", num_cpus=0,
        max_restarts=-1, max_task_retries=0, scheduling_strategy="SPREAD",
    ).remote(config, index, compress_records) for index in range(config.shard_count)]


def health_method(handle: Any) -> Any:
    """The probe method bound to the shard's health concurrency group."""
    return handle.probe.options(concurrency_group="health")


def kill(handles: list[Any]) -> None:
    for handle in handles:
        try:
            ray.kill(handle, no_restart=True)
        except Exception:
            pass
