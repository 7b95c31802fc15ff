"""What the first bridge of a process starts, and with which Ray settings, checked without Ray and
without timing anything: the local runtime's system config, and a pool that starts no spare actor
in a runtime this process owns yet keeps a closed path's actors for the next bridge."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors import deploy
from actors.pool import ActorPool
from api import runtime

RAY_DEFAULT_CONNECT_BUDGET_MS = 10 * 1000  # 10 attempts of 1000 ms (Ray 2.60's ray_config_def.h)


class _Handle:
    """A pooled shard actor: answers ping with its node and release with True."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ping = _Method({"node_id": None})
        self.release = _Method(True)


class _Method:
    def __init__(self, result: Any) -> None:
        self.result = result

    def remote(self) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self.result)
        return future


def _start_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import ray
    captured: dict[str, Any] = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime, "_start_local", lambda _ray, options: captured.update(options))
    monkeypatch.setattr(runtime.atexit, "register", lambda *_: None)
    monkeypatch.setattr(runtime, "_owned", runtime._owned)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runtime._start_or_join(None)
    return captured


def test_local_runtime_retries_the_raylet_connection_quickly_within_rays_budget(monkeypatch):
    """The local runtime asks Ray to retry its first raylet connections every 100 ms, never giving up
    sooner than Ray's default 10 s would."""
    config = _start_options(monkeypatch)["_system_config"]
    timeout_ms = config["raylet_client_connect_timeout_milliseconds"]
    assert timeout_ms <= 100
    assert timeout_ms * config["raylet_client_num_connect_attempts"] >= RAY_DEFAULT_CONNECT_BUDGET_MS


def test_local_runtime_config_is_a_copy_each_start_may_change(monkeypatch):
    """Ray may keep the dict it is given: each start gets its own copy of the module's settings."""
    config = _start_options(monkeypatch)["_system_config"]
    assert config == runtime.LOCAL_SYSTEM_CONFIG and config is not runtime.LOCAL_SYSTEM_CONFIG


def test_owned_runtime_starts_no_spare_actors_a_joined_one_one_per_cpu(monkeypatch):
    """A runtime this process started pre-starts no idle shard actor; a joined one keeps one per CPU."""
    monkeypatch.setattr(runtime, "_owned", True)
    assert runtime.spare_actor_count(4) == 0
    monkeypatch.setattr(runtime, "_owned", False)
    assert runtime.spare_actor_count(4) == 4


@pytest.mark.parametrize("spare, cpu_count, expected", [(0, 2, 2), (0, 0, 1), (4, 2, 4), (1, 16, 16)])
def test_idle_max_keeps_what_the_next_default_bridge_needs(spare, cpu_count, expected):
    """Released actors are kept up to the default shard count (one per CPU) or the spare count."""
    assert deploy.idle_max_for(spare, cpu_count) == expected


def test_pool_without_spares_starts_nothing_ahead_and_reuses_a_closed_paths_actors():
    """With spare 0 the pool starts actors only when a path takes them, and a second path after the
    first closed gets the first one's actors back instead of new processes."""
    started: list[str] = []

    def spawn(name: str, node: str | None) -> _Handle:
        started.append(name)
        return _Handle(name)

    async def scenario() -> None:
        pool = ActorPool(spawn, list, kill=lambda handle: None, spare=0, idle_max=deploy.idle_max_for(0, 2))
        assert await pool.warm() == 0 and started == []
        first = await pool.take(2)
        assert await pool.warm() == 0 and len(started) == 2
        await pool.give_back(first)
        second = await pool.take(2)
        assert len(started) == 2 and {h.name for h in second} == {h.name for h in first}
    asyncio.run(scenario())
