"""The requirements document's scenarios, run with the same calls, asserting results (never timings)."""

import asyncio
import collections
import random

from api import FFChatAppBridge


async def test_initialization_scenarios(ray_runtime, tmp_path):
    """Bridges from options and presets come up and close, as in the initialization benchmark."""
    scenarios = [("minimal_config", {"performance_mode": "balanced"}), ("development_preset", "development"),
                 ("production_preset", "production"), ("high_performance_preset", "high_performance")]
    for name, config in scenarios:
        for i in range(2):
            path = str(tmp_path / f"{name}_{i}")
            if isinstance(config, str):
                bridge = await FFChatAppBridge.create_from_preset(config, path)
            else:
                bridge = await FFChatAppBridge.create_for_chat_app(path, config)
            assert bridge._initialized
            await bridge.close()


async def test_message_operations_scenario(ray_runtime, tmp_path):
    """Store 100, read last 20 (50 times), search 20 times: every call succeeds with the right data."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"performance_mode": "speed",
                                                                       "cache_size_mb": 200})
    data = bridge.get_data_layer()
    user_id = "perf_test_user"
    await data.storage.create_user(user_id, {"name": "Performance Test"})
    session_id = await data.storage.create_session(user_id, "Performance Session")
    for i in range(100):
        result = await data.store_chat_message(user_id, session_id,
                                               {"role": "user", "content": f"Performance test message {i}"})
        assert result["success"], f"Message {i} storage failed"
    for _ in range(50):
        result = await data.get_chat_history(user_id, session_id, limit=20)
        assert result["success"] and len(result["data"]["messages"]) == 20
        assert result["data"]["messages"][-1]["content"] == "Performance test message 19"
    for _ in range(20):
        result = await data.search_conversations(user_id, "test message", {"search_type": "text", "limit": 10})
        assert result["success"] and result["data"]["search_metadata"]["total_matches"] == 100
    await bridge.close()


async def test_concurrent_and_mixed_throughput_scenario(ray_runtime, tmp_path):
    """10 users x 50 concurrent stores all succeed; a 70/20/10 mixed workload raises nothing; every
    session then holds its 50 messages plus exactly the mixed stores sent to it."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"performance_mode": "speed",
                                                                       "cache_size_mb": 300,
                                                                       "message_batch_size": 200})
    data = bridge.get_data_layer()
    users = []
    for i in range(10):
        user_id = f"throughput_user_{i}"
        await data.storage.create_user(user_id, {"name": f"User {i}"})
        users.append((user_id, await data.storage.create_session(user_id, f"Session {i}")))

    async def store_batch(user_data, count):
        user_id, session_id = user_data
        results = [await data.store_chat_message(user_id, session_id, {"role": "user", "content": f"Throughput {i}"})
                   for i in range(count)]
        return sum(r["success"] for r in results)
    assert sum(await asyncio.gather(*(store_batch(u, 50) for u in users))) == 500
    rng = random.Random(7)
    operations = []
    mixed_stores = collections.Counter()
    for _ in range(70):
        user_id, session_id = rng.choice(users)
        mixed_stores[(user_id, session_id)] += 1
        operations.append(data.store_chat_message(user_id, session_id, {"role": "user", "content": "Mixed workload"}))
    for _ in range(20):
        user_id, session_id = rng.choice(users)
        operations.append(data.get_chat_history(user_id, session_id, limit=10))
    for _ in range(10):
        user_id, _ = rng.choice(users)
        operations.append(data.search_conversations(user_id, "test", {"search_type": "text", "limit": 5}))
    results = await asyncio.gather(*operations, return_exceptions=True)
    assert not any(isinstance(r, Exception) for r in results) and all(r["success"] for r in results)
    for user_id, session_id in users:
        total = (await data.get_chat_history(user_id, session_id, limit=0))["data"]["total_count"]
        assert total == 50 + mixed_stores[(user_id, session_id)]
    await bridge.close()


async def test_cache_scenario_hits_are_real(ray_runtime, tmp_path):
    """100 identical history reads after 50 stores: all but the first are cache hits."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"cache_size_mb": 100,
                                                                       "performance_mode": "balanced"})
    data = bridge.get_data_layer()
    user_id = "cache_test_user"
    await data.storage.create_user(user_id, {"name": "Cache Test"})
    session_id = await data.storage.create_session(user_id, "Cache Session")
    for i in range(50):
        await data.store_chat_message(user_id, session_id, {"role": "user", "content": f"Cache test message {i}"})
    hits = 0
    for _ in range(100):
        result = await data.get_chat_history(user_id, session_id, limit=10)
        hits += result["metadata"]["performance_metrics"].get("cache_hit", False)
    assert hits == 99
    metrics = data.get_performance_metrics()
    assert metrics["cache_stats"]["cache_hits"] == 99
    await bridge.close()


async def test_scalability_scenario_stores_everything(ray_runtime, tmp_path):
    """At 1x and 2x load every gathered store succeeds and lands in its session."""
    for factor in (1, 2):
        bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path / f"scale_{factor}"), {
            "performance_mode": "speed", "cache_size_mb": 200, "message_batch_size": 100})
        data = bridge.get_data_layer()
        users = []
        for i in range(factor * 10):
            user_id = f"scale_user_{factor}_{i}"
            await data.storage.create_user(user_id, {"name": f"User {i}"})
            users.append((user_id, await data.storage.create_session(user_id, f"Session {i}")))
        tasks = [data.store_chat_message(u, s, {"role": "user", "content": f"Scale test message {j}"})
                 for u, s in users for j in range(10)]
        results = await asyncio.gather(*tasks)
        assert all(r["success"] for r in results)
        for user_id, session_id in users:
            history = await data.get_chat_history(user_id, session_id, limit=20)
            assert [m["content"] for m in history["data"]["messages"]] == [f"Scale test message {j}" for j in range(10)]
        await bridge.close()
