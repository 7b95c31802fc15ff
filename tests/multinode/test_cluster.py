"""Multi-node behaviour on one machine: 3 Ray nodes (ray.cluster_utils.Cluster), shards spread over
them, a node removed during concurrent stores, partial search, and a second driver process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from engine import operations as ops
from api import FFChatAppBridge
from tests.factories import message

pytestmark = pytest.mark.multinode
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Declare a dead node after ~1.5 s instead of Ray's default ~16 s (the same settings ray_cluster.yaml uses).
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                          "health_check_initial_delay_ms": 0}


@pytest.fixture(scope="module")
def cluster(_ray_session):
    """A head and two worker nodes on this machine; the shared local runtime is stopped meanwhile."""
    import ray
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False,
        "_system_config": FAST_FAILURE_DETECTION})
    try:
        workers = [cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False, namespace="ffchat-cluster")
        yield cluster, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest_asyncio.fixture(scope="module")
async def cluster_bridge(cluster, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cluster-data"))
    bridge = await FFChatAppBridge.create_for_chat_app(path, {"shard_count": 4, "durability": "flush",
                                                              "request_timeout_s": 30})
    yield bridge
    await bridge.close()


async def test_shards_spread_over_several_nodes(cluster_bridge):
    """With SPREAD placement the shard actors land on more than one node, and health says which."""
    health = await cluster_bridge.health_check()
    nodes = {shard["node_id"] for shard in health["shards"]}
    assert health["status"] == "healthy" and len(nodes) >= 2, health["shards"]


@dataclass
class _NodeLoss:
    """What the writers saw while a node was removed under them."""

    acknowledged: dict[int, list[str]] = field(default_factory=lambda: {w: [] for w in range(8)})
    failures: list[str] = field(default_factory=list)
    removed_at: float = 0.0
    search_results: list[dict] = field(default_factory=list)


async def _store_while_removing_node(cluster_handle, victim, data, sessions: list[str]) -> _NodeLoss:
    """8 writers store 120 messages each; meanwhile the victim node is removed and a search runs."""
    seen = _NodeLoss()

    async def writer(worker: int) -> None:
        for i in range(120):
            result = await data.store_chat_message(f"writer{worker}", sessions[worker], message(f"w{worker}-{i}"))
            if result["success"]:
                seen.acknowledged[worker].append(result["data"]["message_id"])
            else:
                seen.failures.append(result["metadata"]["error_code"])

    async def kill_node() -> None:
        await asyncio.sleep(0.4)
        seen.removed_at = time.monotonic()
        cluster_handle.remove_node(victim, allow_graceful=False)
        await asyncio.sleep(0.2)
        seen.search_results.append(await data.search_conversations("writer0", "w0"))

    await asyncio.gather(*(writer(w) for w in range(8)), kill_node())
    return seen


async def _wait_until_served_elsewhere(bridge, shard_indexes: list[int], lost_node_id: str) -> None:
    """Until each lost shard answers again, with its log open, from a surviving node."""
    for index in shard_indexes:
        while True:
            try:
                # A real call re-assigns a restarted actor.
                await bridge.backend.clients[index].call(ops.ListUsers(), bridge.backend.deadline())
                probe = await bridge.backend.transport.shards[index].probe.remote()
            except Exception:  # still restarting: try again
                probe = {}
            if probe.get("log_open") and probe.get("node_id") not in (None, lost_node_id):
                break
            await asyncio.sleep(0.05)


async def test_node_loss_during_stores_loses_and_duplicates_nothing(cluster, cluster_bridge):
    """Remove a node that holds shards while 8 writers store: every acknowledged message survives once,
    in acknowledgement order; the shards serve again and the time until they do is reported."""
    cluster_handle, workers = cluster
    data = cluster_bridge.get_data_layer()
    sessions = [await data.storage.create_session(f"writer{w}", "failover") for w in range(8)]
    health = await cluster_bridge.health_check()
    import ray
    here = ray.get_runtime_context().get_node_id()
    # The direct data plane: TCP to shards on other nodes, the Unix socket to those on this one.
    assert [s["transport"] for s in health["shards"]] == \
        ["unix" if s["node_id"] == here else "tcp" for s in health["shards"]], health["shards"]
    assert any(s["transport"] == "tcp" for s in health["shards"])
    victim = next(w for w in workers if any(s["node_id"] == w.node_id for s in health["shards"]))
    victim_shards = [s["shard"] for s in health["shards"] if s["node_id"] == victim.node_id]
    seen = await _store_while_removing_node(cluster_handle, victim, data, sessions)
    recovered_at = time.monotonic()
    await _wait_until_served_elsewhere(cluster_bridge, victim_shards, victim.node_id)
    recovery_s = time.monotonic() - seen.removed_at
    for worker in range(8):
        history = await data.get_chat_history(f"writer{worker}", sessions[worker], limit=10000)
        stored = [m["message_id"] for m in history["data"]["messages"]]
        assert stored == seen.acknowledged[worker], f"writer {worker}: lost or reordered messages"
        assert len(stored) == len(set(stored))
    print(f"\nnode removed: shards {victim_shards} served again after {recovery_s:.2f} s; "
          f"acknowledged {sum(len(v) for v in seen.acknowledged.values())}, failed calls {len(seen.failures)}, "
          f"all writers finished {recovered_at - seen.removed_at:.2f} s after the removal")
    assert not seen.failures, seen.failures
    assert seen.search_results and seen.search_results[0]["success"], seen.search_results


async def test_search_during_failure_is_partial_not_an_error(cluster, cluster_bridge):
    """A search while one shard cannot serve returns the other shards' results with a warning.

    The shard's actor is killed (Ray restarts it) and, until the test lets go, the shard's lock is
    held here, so the new incarnation cannot re-open its log: the shard stays down, deterministically.
    """
    import fcntl

    import ray
    data = cluster_bridge.get_data_layer()
    user = "partial-user"
    session_ids = [await data.storage.create_session(user, f"s{i}", session_id=f"p{i}") for i in range(12)]
    for session_id in session_ids:
        await data.store_chat_message(user, session_id, message("findable text"))
    backend = cluster_bridge.backend
    victim = backend.session_shard(user, session_ids[0])
    on_victim = sum(1 for s in session_ids if backend.session_shard(user, s) == victim)
    lock = os.open(os.path.join(cluster_bridge.settings.storage_path, f"shard-{victim:04d}", "LOCK"), os.O_RDWR)
    try:
        ray.kill(backend.transport.shards[victim], no_restart=False)
        deadline = time.monotonic() + 30
        while True:  # the old incarnation's lock goes away with its process; then we hold it
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed shard never released its lock"
                await asyncio.sleep(0.05)
        result = await data.search_conversations(user, "findable", {"limit": 50})
        assert result["success"], result
        meta = result["data"]["search_metadata"]
        print(f"\nsearch during the failure: partial={meta['partial']} shards_failed={meta['shards_failed']} "
              f"matches={meta['total_matches']} in {meta['search_duration_ms']:.0f} ms")
        assert meta["partial"] and victim in meta["shards_failed"], meta
        answered = [s for s in session_ids if backend.session_shard(user, s) not in meta["shards_failed"]]
        assert meta["total_matches"] == len(answered) <= 12 - on_victim
        assert f"Partial results: shards {meta['shards_failed']} did not answer" in result["warnings"]
    finally:
        os.close(lock)
    full = await data.get_chat_history(user, session_ids[0])  # the bridge re-assigns the shard
    assert full["success"] and full["data"]["total_count"] == 1, full
    again = await data.search_conversations(user, "findable", {"limit": 50})
    assert again["success"], again
    meta = again["data"]["search_metadata"]
    assert meta["total_matches"] == 12 and not meta["partial"], again


_SECOND_DRIVER = textwrap.dedent("""
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    import ray
    ray.init(address={address!r}, log_to_driver=False)
    from api import FFChatAppBridge
    async def main():
        bridge = await FFChatAppBridge.create_for_chat_app({path!r})
        data = bridge.get_data_layer()
        history = await data.get_chat_history("driver-one", "shared-session", limit=100)
        print("COUNT", history["data"]["total_count"])
        await data.store_chat_message("driver-one", "shared-session", {{"role": "user", "content": "from two"}})
        await bridge.close()
    asyncio.run(main())
    ray.shutdown()
""")


async def test_second_driver_process_sees_the_same_data(cluster, cluster_bridge):
    """Another driver process joining the cluster attaches to the same path and sees the same data."""
    cluster_handle, _ = cluster
    data = cluster_bridge.get_data_layer()
    await data.storage.create_session("driver-one", "shared", session_id="shared-session")
    await data.store_chat_messages("driver-one", "shared-session", [message(f"m{i}") for i in range(5)])
    script = _SECOND_DRIVER.format(repo=REPO, address=cluster_handle.address,
                                   path=cluster_bridge.config.storage_path)
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert b"COUNT 5" in output, output
    history = await data.get_chat_history("driver-one", "shared-session", limit=100)
    assert history["data"]["messages"][-1]["content"] == "from two"


_JOINING_DRIVER = """
import asyncio, os, sys, time
sys.path.insert(0, {repo!r})
os.environ.pop("RAY_ADDRESS", None)
started = time.perf_counter()
from api import FFChatAppBridge
import ray

async def main():
    bridge = await FFChatAppBridge.create_for_chat_app({path!r}, {{"ray_address": "auto"}})
    print("CREATED_IN", time.perf_counter() - started)
    print("JOINED", ray.get_runtime_context().gcs_address)
    page = await bridge.get_data_layer().get_chat_history("driver-one", "shared-session", limit=100)
    print("COUNT", page["data"]["total_count"])
    await bridge.close()

asyncio.run(main())
"""


async def test_auto_joins_the_runtime_running_on_this_machine(cluster, cluster_bridge):
    """ray_address="auto" with no RAY_ADDRESS finds the runtime running here (a `ray start --head`,
    here the test cluster's head) as ray.init(address="auto") does, and joins it."""
    cluster_handle, _ = cluster
    data = cluster_bridge.get_data_layer()
    await data.storage.create_session("driver-one", "shared", session_id="shared-session")
    script = _JOINING_DRIVER.format(repo=REPO, path=cluster_bridge.config.storage_path)
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE,
                                                   stderr=subprocess.DEVNULL, env=environment)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert f"JOINED {cluster_handle.address}".encode() in output, output
    assert b"COUNT " in output, output
    print("\n" + output.decode().strip().splitlines()[0])
