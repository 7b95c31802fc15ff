"""Throughput on a local multi-node Ray cluster with 1, 2 and 3 nodes (ray.cluster_utils on this machine).

    python -m scale_tests.cluster_bench [--nodes 1,2,3] [--json FILE]

Every node runs on the same cores here, so this shows that the bridge works and scales in shape
across nodes, not real extra capacity. Shards: 2 per node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from typing import Any

from engine.config import MB

from .sections import Context
from .sections.throughput import throughput_of
from .targets import OursTarget


async def _measure(root: str, shards: int) -> dict[str, Any]:
    target = await OursTarget.open(os.path.join(root, "data"), {"performance_mode": "speed", "shard_count": shards,
                                                                "message_batch_size": 200})
    try:
        health = await target.bridge.health_check()
        nodes = len({s["node_id"] for s in health["shards"]})
        ctx = Context(root=root, quick=True, seed=1, factors=[1])
        result = await throughput_of(ctx, target)
        result["nodes_holding_shards"] = nodes
        return result
    finally:
        await target.close()


def run_for(node_count: int) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                           "object_store_memory": 100 * MB})
    root = tempfile.mkdtemp(prefix="ffchat-cluster-bench-")
    try:
        for _ in range(node_count - 1):
            cluster.add_node(num_cpus=1, object_store_memory=100 * MB)
        cluster.wait_for_nodes()
        started = time.perf_counter()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        join_s = time.perf_counter() - started
        result = asyncio.run(_measure(root, 2 * node_count))
        result["join_s"] = join_s
        return result
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Token auth on every node. A Cluster head does not create a missing token (its gcs_server dies).
    from api.runtime import use_token_auth
    use_token_auth()
    rows = {}
    for count in [int(n) for n in args.nodes.split(",")]:
        rows[count] = run_for(count)
        print(f"{count} node(s): shards on {rows[count]['nodes_holding_shards']} node(s); "
              f"10x50 doc {rows[count]['concurrent_doc']:,.0f} msg/s, all-at-once {rows[count]['concurrent_all']:,.0f} "
              f"msg/s, bulk {rows[count]['bulk']:,.0f} msg/s, mixed {rows[count]['mixed']:,.0f} op/s, "
              f"1000 ops {rows[count]['ops_1000']:,.0f} op/s", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
