"""Several shards per actor process when a path has more shards than the runtime has CPUs: one
ShardActor serving two shards, the router mapping shards onto shared actors, and (through Ray) a
4-shard path on the 2-CPU test runtime, with one of its hosts killed under writers."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors.local import LocalHandle
from actors.pool import distinct
from actors.router_actor import RouterActor
from actors.shard_actor import ShardActor
from api import FFChatAppBridge
from engine import operations as ops
from engine.errors import ShardUnassigned, ShardUnavailable
from engine.routing import host_count
from tests.factories import engine_config, message


@pytest.mark.parametrize("shard_count, cpu_count, expected",
                         [(2, 2, 2), (1, 4, 1), (4, 2, 2), (5, 2, 2), (4, 3, 3), (4, 0, 4), (16, 1, 1)])
def test_one_host_per_shard_until_shards_outnumber_cpus_then_one_per_cpu(shard_count, cpu_count, expected):
    """One actor per shard while there is a CPU per shard (or the count is unknown), else one per CPU."""
    assert host_count(shard_count, cpu_count) == expected


def _two_shard_actor(tmp_path):
    config = engine_config(tmp_path, shard_count=2)
    actor = ShardActor(0, tune_gc=False, exit_on_fatal=False)
    actor.assign(config, 0)
    actor.assign(config, 1)
    return actor, config, (config.storage_path, 0), (config.storage_path, 1)


def test_one_actor_serves_two_shards_and_keeps_their_data_apart(tmp_path):
    """Each key reaches its own shard: a user created on one is unknown on the other; probe and stats
    report the shard named; assigning a held shard again is a no-op."""
    actor, config, first, second = _two_shard_actor(tmp_path)
    try:
        actor.execute([ops.CreateUser("a"), ops.CreateSession("a", "s"), ops.Append("a", "s", [message("one"), message("two")])], first)
        actor.execute([ops.CreateUser("b"), ops.CreateSession("b", "s"), ops.Append("b", "s", [message("three")])], second)
        assert actor.execute([ops.ListUsers()], first)[0].value == ["a"]
        assert actor.execute([ops.ListUsers()], list(second))[0].value == ["b"]  # a key may arrive as a list
        assert [actor.probe(key)["messages"] for key in (first, second)] == [2, 1]
        assert [actor.probe(key)["shard"] for key in (first, second)] == [0, 1]
        assert actor.stats(second)["pid"] == actor.stats(first)["pid"] and actor.stats(first)["hosted"] == 2
        assert actor.assign(config, 1)["epoch"] == 1
    finally:
        actor.release()


def test_a_host_refuses_keys_it_does_not_hold(tmp_path):
    """Another path's key is refused (ShardUnavailable); an unheld shard of its own path is unassigned
    (its caller re-assigns it); no key is ambiguous with two shards; another path cannot be assigned."""
    actor, config, first, _ = _two_shard_actor(tmp_path)
    try:
        with pytest.raises(ShardUnavailable):
            actor.execute([ops.ListUsers()], (str(tmp_path / "elsewhere"), 0))
        with pytest.raises(ShardUnassigned):
            actor.execute([ops.ListUsers()], (config.storage_path, 2))
        with pytest.raises(ShardUnavailable):
            actor.execute([ops.ListUsers()])
        with pytest.raises(ShardUnavailable):
            actor.assign(engine_config(tmp_path / "elsewhere"), 2)
        assert actor.probe((str(tmp_path / "elsewhere"), 0))["assigned"] is False
    finally:
        actor.release()


def test_release_frees_every_hosted_shard_for_another_actor(tmp_path):
    """After release both shards' locks are free: another actor opens both and sees the data."""
    actor, config, first, second = _two_shard_actor(tmp_path)
    actor.execute([ops.CreateUser("a")], first)
    assert actor.release() is True and actor.probe()["assigned"] is False
    with pytest.raises(ShardUnassigned):
        actor.execute([ops.ListUsers()], first)
    successor = ShardActor(1, tune_gc=False, exit_on_fatal=False)
    successor.assign(config, 0)
    successor.assign(config, 1)
    assert successor.execute([ops.ListUsers()], first)[0].value == ["a"]
    successor.release()


def _router(spawned):
    def spawn(name, node):
        spawned.append(ShardActor(name, tune_gc=False, exit_on_fatal=False))
        return LocalHandle(spawned[-1])
    return RouterActor(spawn, spare=0, alive_nodes=list, kill=lambda handle: handle.actor.release(), direct=False)


def test_the_router_maps_four_shards_onto_two_actors_and_gives_each_back_once(tmp_path):
    """cpu_count 2, four shards: actors a, b, a, b; fan-outs reach every shard; closing pools two actors."""
    async def scenario():
        spawned: list[ShardActor] = []
        router = _router(spawned)
        request = ops.OpenPathRequest("ns", engine_config(tmp_path), 4, True, False, cpu_count=2)
        opened = await router.open_path(request)
        assert len(spawned) == 2 and [spawned.index(h.actor) for h in opened.shards] == [0, 1, 0, 1]
        path = router.registry.get("ns")
        for index in range(4):
            await path.call(index, [ops.CreateUser(f"user-{index}")])
        assert await router.fan_out("ns", ops.ListUsersRequest(), 1.0, 1.0) == [f"user-{i}" for i in range(4)]
        assert await router.close_path("ns") == 0
        assert len(router.pool.idle) == 2 and all(not actor.probe()["assigned"] for actor in spawned)
    asyncio.run(scenario())


def test_a_restarted_host_gets_each_shard_back_from_its_first_caller(tmp_path):
    """A host that lost both shards (as after a restart) is re-assigned each on first contact."""
    async def scenario():
        spawned: list[ShardActor] = []
        router = _router(spawned)
        await router.open_path(ops.OpenPathRequest("ns", engine_config(tmp_path), 4, True, False, cpu_count=2))
        path = router.registry.get("ns")
        for index in (0, 2):  # the two shards of the first actor (shard i on actor i % 2)
            await path.call(index, [ops.CreateUser(f"user-{index}")])
        spawned[0].release()  # what a restart leaves: an actor with no shard
        for index in (2, 0):
            assert (await path.call(index, [ops.ListUsers()]))[0].value == [f"user-{index}"]
        assert spawned[0].probe()["hosted"] == 2
        await router.close_path("ns")
    asyncio.run(scenario())


def test_re_registration_after_a_router_restart_releases_each_shared_actor_once(tmp_path):
    """A new router given the path's repeated handles re-assigns them and, on close, pools each actor once."""
    async def scenario():
        spawned: list[ShardActor] = []
        first = _router(spawned)
        opened = await first.open_path(ops.OpenPathRequest("ns", engine_config(tmp_path), 4, True, False,
                                                           cpu_count=2))
        first.registry.paths["ns"].manifest.close()  # the old router's process is gone, and its lock with it
        second = RouterActor(spawn=None, alive_nodes=list, direct=False)
        again = ops.OpenPathRequest("ns", engine_config(tmp_path), 4, True, False, shards=opened.shards)
        assert len((await second.open_path(again)).shards) == 4
        assert await second.close_path("ns") == 0
        assert len(second.pool.idle) == 2 and len(distinct(opened.shards)) == 2
    asyncio.run(scenario())


async def test_a_four_shard_path_on_two_cpus_runs_in_two_processes_and_survives_a_host_kill(ray_runtime, tmp_path):
    """Four shards on the 2-CPU test runtime: two shard actor processes; stores and searches reach all
    four shards; ray.kill of one host under eight writers loses no acknowledged store, and both of its
    shards serve again from one new process."""
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 4, "durability": "fsync"})
    try:
        backend, data = bridge.backend, bridge.get_data_layer()
        pids = [probe["pid"] for probe in await backend.probe_all(5.0)]
        assert pids[0] == pids[2] != pids[1] == pids[3], pids  # shard i on actor i % 2
        users, sessions = await _two_writers_per_shard(bridge)
        acknowledged = await _write_while_killing(bridge, users, sessions)
        for user, session_id in zip(users, sessions):
            history = await data.get_chat_history(user, session_id, limit=1000)
            assert [m["message_id"] for m in history["data"]["messages"]] == acknowledged[user]
            found = await data.search_conversations(user, f"{user}-7")
            assert found["data"]["search_metadata"]["total_matches"] >= 1, found
        probes = await backend.probe_all(5.0)
        assert all(probe["log_open"] for probe in probes), probes
        after = [probe["pid"] for probe in probes]
        assert after[0] == after[2] not in pids and after[1::2] == pids[1::2], (pids, after)
    finally:
        await bridge.close()


async def _two_writers_per_shard(bridge) -> tuple[list[str], list[str]]:
    """Users and sessions, two on each of the four shards (a session's shard follows its new id)."""
    users: list[str] = []
    sessions: list[str] = []
    per_shard = [0, 0, 0, 0]
    while min(per_shard) < 2:
        user = f"w{len(users) + sum(per_shard)}"
        session_id = await bridge.get_data_layer().storage.create_session(user, "s")
        index = bridge.backend.session_shard(user, session_id)
        if per_shard[index] < 2:
            per_shard[index] += 1
            users.append(user)
            sessions.append(session_id)
    return users, sessions


async def _write_while_killing(bridge, users, sessions) -> dict[str, list[str]]:
    """Eight writers store 60 messages each; one host (shards 0 and 1) is killed after 120 acks."""
    data = bridge.get_data_layer()
    acknowledged: dict[str, list[str]] = {user: [] for user in users}
    failures: list[str] = []

    async def writer(user: str, session_id: str) -> None:
        for i in range(60):
            result = await data.store_chat_message(user, session_id, message(f"{user}-{i}"))
            if result["success"]:
                acknowledged[user].append(result["data"]["message_id"])
            else:
                failures.append(result["metadata"]["error_code"])

    async def killer() -> None:
        while sum(map(len, acknowledged.values())) < 120:
            await asyncio.sleep(0.002)
        ray.kill(bridge.backend.transport.shards[0], no_restart=False)
    await asyncio.gather(*(writer(u, s) for u, s in zip(users, sessions)), killer())
    assert not failures, failures
    return acknowledged

