"""Memory: driver RSS and the whole runtime's memory from an idle bridge to ten thousand stored messages."""

from __future__ import annotations

from ..measure import Figure, driver_rss_mb, runtime_memory_mb
from ..targets import OursTarget, scratch_dir
from .context import Context, check


# --------------------------------------------------------------------------- 4. memory
async def memory(ctx: Context) -> None:
    baseline_driver = driver_rss_mb()
    baseline_system = runtime_memory_mb()
    target = await OursTarget.open(scratch_dir(ctx.root, "memory"), {"cache_size_mb": 50})
    idle_driver = driver_rss_mb()
    await target.bridge.refresh_shard_snapshot()
    idle_system = runtime_memory_mb()
    user_id = "memory_test_user"
    session_id = await target.create_session(user_id, "Memory Session")
    for i in range(1000):
        await target.store(user_id, session_id, f"Memory test message {i} with some content to test memory usage")
    loaded_driver = driver_rss_mb()
    loaded_system = runtime_memory_mb()
    extra = ctx.scale(9000, 2000)
    for start in range(0, extra, 100):
        await target.store_batch(user_id, session_id, [f"Memory test message {start + j} with some content"
                                                       for j in range(100)])
    check((await target.history(user_id, session_id, 1))["data"]["total_count"] == 1000 + extra, "memory: lost")
    ten_k_driver = driver_rss_mb()
    ten_k_system = runtime_memory_mb()
    before_reads = driver_rss_mb()
    for i in range(1000):
        await target.history(user_id, session_id, 10)
    growth = driver_rss_mb() - before_reads
    stats_all = await target.bridge.backend.stats_all(5.0)
    per_message = sum(s["ram_bytes"] for s in stats_all if s) / max(1, sum(s["messages"] for s in stats_all if s))
    await target.close()
    ctx.details["memory"] = {"driver_mb": {"baseline": baseline_driver, "idle": idle_driver, "1k": loaded_driver,
                                           "10k": ten_k_driver},
                             "system": {"before_bridge": baseline_system, "idle": idle_system, "1k": loaded_system,
                                        "10k": ten_k_system},
                             "shard_ram_bytes_per_message": per_message, "messages_in_10k_step": 1000 + extra}
    label = "10,000" if not ctx.quick else f"{1000 + extra:,}"
    ctx.add(Figure("memory", "driver RSS growth, idle bridge", "MB", idle_driver - baseline_driver, target=50),
            Figure("memory", "driver RSS growth, 1,000 messages", "MB", loaded_driver - baseline_driver, target=200),
            Figure("memory", f"driver RSS growth, {label} messages", "MB", ten_k_driver - baseline_driver,
                   target=500),
            Figure("memory", "driver growth over 1,000 reads", "MB", growth, target=50),
            Figure("memory", "system USS growth, idle bridge", "MB",
                   idle_system["uss_mb"] - baseline_system["uss_mb"], note="all Ray processes + driver"),
            Figure("memory", f"system USS, {label} messages", "MB", ten_k_system["uss_mb"],
                   note=f"PSS {ten_k_system['pss_mb']:.0f} MB over {ten_k_system['processes']} processes"),
            Figure("memory", "shard RAM per stored message", "bytes", per_message))
