"""The direct data plane through Ray: bridges reach their shards over Unix sockets by default, over
Ray actor calls when asked, and keep every acknowledged store across a shard restart mid-stream."""

import asyncio

import pytest
import ray

from api import FFChatAppBridge
from api.errors import ConfigurationError
from tests.factories import message


async def test_the_default_bridge_reaches_every_shard_directly(ray_runtime, tmp_path):
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 2})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("d", "direct")
        assert (await data.store_chat_message("d", session_id, message("straight to the shard")))["success"]
        assert (await data.search_conversations("d", "straight"))["data"]["search_metadata"]["total_matches"] == 1
        health = await bridge.health_check()
        assert health["data_plane"] == "direct" and health["status"] == "healthy", health
        assert [shard["transport"] for shard in health["shards"]] == ["unix", "unix"]
        assert health["router_transport"] == "unix"
    finally:
        await bridge.close()


async def test_the_ray_data_plane_is_a_choice_not_a_warning(ray_runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("FFCHAT_DATA_PLANE", "ray")
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 2})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("r", "over ray")
        assert (await data.store_chat_message("r", session_id, message("by actor call")))["success"]
        health = await bridge.health_check()
        assert health["data_plane"] == "ray" and [s["transport"] for s in health["shards"]] == ["ray", "ray"]
        assert not health["warnings"], health["warnings"]
    finally:
        await bridge.close()
    with pytest.raises(ConfigurationError):
        FFChatAppBridge(bridge.config, data_plane="carrier-pigeon")


async def test_a_shard_killed_mid_stream_is_reconnected_directly_and_loses_nothing(ray_runtime, tmp_path):
    """SIGKILL-like ray.kill of the shard while 8 writers store over the socket: every acknowledged
    store is there once and in order per writer, and the bridge is back on the socket afterwards."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 1, "durability": "fsync"})
    try:
        data = bridge.get_data_layer()
        sessions = [await data.storage.create_session(f"w{w}", "s") for w in range(8)]
        acknowledged: dict[int, list[str]] = {w: [] for w in range(8)}
        failures: list[str] = []
        old_pid = (await bridge.backend.probe_all(5.0))[0]["pid"]

        async def writer(worker: int) -> None:
            for i in range(150):
                result = await data.store_chat_message(f"w{worker}", sessions[worker], message(f"{worker}-{i}"))
                if result["success"]:
                    acknowledged[worker].append(result["data"]["message_id"])
                else:
                    failures.append(result["metadata"]["error_code"])

        async def killer() -> None:
            while sum(map(len, acknowledged.values())) < 300:
                await asyncio.sleep(0.002)
            ray.kill(bridge.backend.transport.shards[0], no_restart=False)
        await asyncio.gather(*(writer(w) for w in range(8)), killer())
        assert not failures, failures
        for worker in range(8):
            history = await data.get_chat_history(f"w{worker}", sessions[worker], limit=1000)
            assert [m["message_id"] for m in history["data"]["messages"]] == acknowledged[worker]
        health = await bridge.health_check()
        assert health["shards"][0]["transport"] == "unix" and (await bridge.backend.probe_all(5.0))[0]["pid"] != old_pid
    finally:
        await bridge.close()


async def test_a_restarted_shard_is_reported_as_restarting_not_as_an_error(ray_runtime, tmp_path):
    """Between a restart and the shard's next call its actor holds no shard: health says degraded with
    the reason (and the shard's index), not "error"; the next call re-opens it and health is healthy."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 1})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("h", "restart")
        assert (await data.store_chat_message("h", session_id, message("before")))["success"]
        old_pid = (await bridge.backend.probe_all(5.0))[0]["pid"]
        ray.kill(bridge.backend.transport.shards[0], no_restart=False)
        for _ in range(200):
            probe = (await bridge.backend.probe_all(5.0))[0]
            if probe.get("pid") not in (None, old_pid) and probe.get("assigned") is False:
                break
            await asyncio.sleep(0.05)
        health = await bridge.health_check()
        assert health["status"] == "degraded" and not health["errors"], health
        assert health["shards"][0]["shard"] == 0 and "re-opens its log" in health["shards"][0]["error"]
        assert (await data.get_chat_history("h", session_id))["data"]["total_count"] == 1
        assert (await bridge.health_check())["status"] == "healthy"
    finally:
        await bridge.close()
