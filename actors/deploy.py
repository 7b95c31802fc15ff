"""The one place that applies ray.remote: names, namespace, restarts, placement, concurrency groups."""

from __future__ import annotations

from typing import Any

import ray

from .router_actor import RouterActor
from .shard_actor import ShardActor

SYSTEM_NAMESPACE = "ffchat_system"
ROUTER_NAME = "router"


def spawn_shard_actor(slot: str, node_id: str | None = None) -> Any:
    """One pooled shard actor, restarted by Ray after a crash.

    With `node_id` it prefers that node (soft affinity: a restart after the node died goes to a
    surviving node); without, Ray spreads it.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    strategy: Any = NodeAffinitySchedulingStrategy(node_id, soft=True) if node_id else "SPREAD"
    remote = ray.remote(concurrency_groups={"health": 1})(ShardActor)
    # A token CPU share, not zero: Ray 2.60 places zero-resource actors without looking at the
    # soft node affinity. 1/1000 of a CPU per actor reserves next to nothing and lets the affinity work.
    return remote.options(
        name=f"shard/{slot}", namespace=SYSTEM_NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0.001,
        max_restarts=-1, max_task_retries=0, scheduling_strategy=strategy,
    ).remote(slot)


def idle_max_for(spare: int, cpu_count: int) -> int:
    """How many released shard actors the pool keeps idle: what the next bridge needs, the default
    shard count (one per CPU) or the spare count, whichever is more. Each idle actor is a ~55 MB
    process; a closed path's actors serve the next bridge however few are started ahead of need."""
    return max(spare, cpu_count, 1)


def get_router(spare: int = 0, cpu_count: int | None = None) -> Any:
    """The runtime's router (created on first use, then found by name by every driver).

    It starts `spare` idle shard actors ahead of need and keeps released ones up to `idle_max_for`
    (`cpu_count`: the runtime's CPUs when the caller knows them already, else asked of Ray).
    """
    if cpu_count is None:
        cpu_count = int(ray.cluster_resources().get("CPU", 1))
    return ray.remote(RouterActor).options(
        name=ROUTER_NAME, namespace=SYSTEM_NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0,
        max_restarts=-1, max_concurrency=1000,
    ).remote(spawn_shard_actor, spare, idle_max_for(spare, cpu_count))

