"""Shard restart during a stream of stores: nothing acknowledged is lost, nothing duplicated."""

import asyncio

import ray

from api import FFChatAppBridge
from tests.factories import message


async def test_killed_shard_comes_back_and_keeps_every_acknowledged_message(ray_runtime, tmp_path):
    """ray.kill(no_restart=False) mid-stream: the shard replays its log; every acked store is there once."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 1, "durability": "flush",
                                                                       "request_timeout_s": 30})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("fail", "failover")
        acknowledged: list[str] = []
        failures: list[str] = []
        killed_at: list[int] = []

        async def writer(worker: int) -> None:
            for i in range(250):
                result = await data.store_chat_message("fail", session_id, message(f"w{worker}-{i}"))
                if result["success"]:
                    acknowledged.append(result["data"]["message_id"])
                else:
                    failures.append(result["metadata"]["error_code"])

        async def killer() -> None:
            while len(acknowledged) < 200:  # mid-stream: some acknowledged, most still to come
                await asyncio.sleep(0.005)
            ray.kill(bridge.backend.transport.shards[0], no_restart=False)
            killed_at.append(len(acknowledged))
        await asyncio.gather(*(writer(w) for w in range(4)), killer())
        history = await data.get_chat_history("fail", session_id, limit=10000)
        stored = [m["message_id"] for m in history["data"]["messages"]]
        assert set(acknowledged) <= set(stored)
        assert len(stored) == len(set(stored))
        assert not failures, failures
        assert killed_at and killed_at[0] < 1000 and len(acknowledged) == 1000
        health = await bridge.health_check()
        assert health["shards"][0]["restarts"] >= 1
    finally:
        await bridge.close()


async def test_router_restart_is_invisible_to_callers(ray_runtime, tmp_path):
    """Killing the runtime's router (Ray restarts it, empty) costs a re-registration, not an error."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 2})
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("routed", "r")
        await data.store_chat_message("routed", session_id, message("survives the router"))
        ray.kill(bridge.backend.transport.router, no_restart=False)
        found = await data.search_conversations("routed", "survives")
        assert found["success"], found
        assert found["data"]["search_metadata"]["total_matches"] == 1
        listed = await data.list_sessions("routed")
        assert listed["success"] and listed["data"]["total_count"] == 1
    finally:
        await bridge.close()
