"""The router's plain parts without Ray: placement, the actor pool, path registry, fan-out dispatch,
and the whole RouterActor over in-process shard actors (actors/local.py)."""

from __future__ import annotations

import asyncio

import pytest

from actors.router_actor import gather_plan
from actors.local import LocalHandle
from actors.paths import OpenPath, PathRegistry, shard_config
from actors.pool import ActorPool, spread
from actors.router_actor import RouterActor
from actors.shard_actor import ShardActor
from engine import operations as ops
from engine.errors import PathNotOpen, ShardCountMismatch, ShardUnassigned
from engine.fan_out import Plan
from tests.factories import engine_config, message


def test_spread_puts_each_shard_on_the_least_used_node_reusing_idle_actors_there():
    """Three shards over nodes a, b: a, b, a; an idle actor on the chosen node is reused, else one starts."""
    picks = spread(["b", "b"], ["a", "b"], 3)
    assert [node for _, node in picks] == ["a", "b", "a"]
    assert [pick for pick, _ in picks] == [None, 0, None]


def test_spread_without_node_facts_reuses_idle_actors_in_order():
    """Outside Ray (no nodes), idle actors are reused in order, then new ones start."""
    assert spread([None, None], [], 3) == [(0, None), (1, None), (None, None)]


def test_pool_take_starts_only_what_the_idle_list_cannot_give_and_refills():
    """take() reuses idle actors, starts the rest on the chosen nodes, and refills the spare count."""
    started = []

    class _Handle:
        def __init__(self, name, node):
            self.name, self.node = name, node
            self.ping = self

        def remote(self):
            future = asyncio.get_running_loop().create_future()
            future.set_result({"node_id": self.node})
            return future

    def spawn(name, node):
        started.append(node)
        return _Handle(name, node)

    async def scenario():
        pool = ActorPool(spawn, lambda: ["a", "b"], kill=lambda handle: None, spare=1)
        pool.idle = [(_Handle("idle", "b"), "b")]
        taken = await pool.take(2)
        assert [handle.node for handle in taken] == ["a", "b"] and started == ["a"]
        await pool.warm()
        assert len(pool.idle) == 1 and started == ["a", "a"]
    asyncio.run(scenario())


def test_an_actor_that_kept_a_closed_paths_memory_is_stopped_and_replaced_in_the_background():
    """give_back() stops an actor whose release() says it could not give its memory back (False) and
    starts a fresh one in its place, so the next open takes a ready actor; a failed release (an
    exception: the actor is gone or broken) is stopped without a replacement beyond the spare count."""
    started, killed = [], []

    class _Handle:
        def __init__(self, name, released=True):
            self.name, self.released = name, released
            self.ping, self.release = _Call({"node_id": None}), _Call(released)

    class _Call:
        def __init__(self, value):
            self.value = value

        def remote(self):
            future = asyncio.get_running_loop().create_future()
            if isinstance(self.value, Exception):
                future.set_exception(self.value)
            else:
                future.set_result(self.value)
            return future

    def spawn(name, node):
        started.append(name)
        return _Handle(name)

    async def scenario():
        pool = ActorPool(spawn, lambda: [], kill=killed.append, spare=0, idle_max=4)
        kept, heavy, broken = _Handle("kept"), _Handle("heavy", False), _Handle("broken", RuntimeError("gone"))
        await pool.give_back([kept, heavy, broken])
        await pool.warm()
        assert killed == [heavy, broken] and len(started) == 1
        assert [handle.name for handle, _ in pool.idle] == ["kept", started[0]]
    asyncio.run(scenario())


def test_registry_refuses_an_explicit_shard_count_that_differs(tmp_path):
    """Attaching with an explicit shard_count other than the path's is ShardCountMismatch (CONFIG_ERROR)."""
    registry = PathRegistry()
    path = OpenPath(manifest=None, config=shard_config(engine_config(tmp_path), 2), shards=[], compress=False)
    with pytest.raises(ShardCountMismatch) as caught:
        registry.check_settings(ops.OpenPathRequest("ns", engine_config(tmp_path), 3, True, False), path)
    assert caught.value.code == "CONFIG_ERROR"
    registry.check_settings(ops.OpenPathRequest("ns", engine_config(tmp_path), 3, False, False), path)
    with pytest.raises(PathNotOpen):
        registry.get("ns")


def test_shard_config_divides_the_cache_over_the_shards(tmp_path):
    """Each shard gets the path's cache budget divided by the shard count."""
    config = shard_config(engine_config(tmp_path, cache_bytes_max=1000), 4)
    assert config.shard_count == 4 and config.cache_bytes_max == 250


def test_a_call_to_a_restarted_actor_gives_it_its_shard_back_then_answers(tmp_path):
    """OpenPath.call re-assigns an actor that answers ShardUnassigned (restarted) and retries once."""
    async def scenario():
        actor = ShardActor(0, tune_gc=False, exit_on_fatal=False)
        path = OpenPath(None, engine_config(tmp_path), [LocalHandle(actor)], False)
        await path.assign(0, fresh_open=True)
        await path.call(0, [ops.CreateSession("u", "s"), ops.Append("u", "s", [message("kept")])])
        actor.release()  # as after a restart: the actor serves no shard
        with pytest.raises(ShardUnassigned):
            actor.execute([ops.ListUsers()])
        replies = await path.call(0, [ops.ReadRange("u", "s", 0, 10)])
        assert [m["content"] for m in replies[0].unwrap()["messages"]] == ["kept"]
        actor.release()
    asyncio.run(scenario())


def test_gather_plan_separates_timed_out_from_unreachable_shards():
    """A shard slower than the timeout is timed_out, one whose call raised is unreachable."""
    async def call(index, batch):
        if index == 1:
            await asyncio.sleep(1)
        if index == 2:
            raise ConnectionError("gone")
        return [ops.Reply(True, index)]

    async def scenario():
        plan = Plan({0: [ops.ListUsers()], 1: [ops.ListUsers()], 2: [ops.ListUsers()]})
        answers = await gather_plan(plan, call, 0.05)
        assert answers.replies == {0: [ops.Reply(True, 0)]} and answers.timed_out == [1]
        assert answers.unreachable == [2] and answers.failed == [1, 2]
    asyncio.run(scenario())


def test_router_actor_opens_serves_and_closes_a_path_in_process(tmp_path):
    """The RouterActor with in-process shard actors: open (lock, assign), fan out, attach counting,
    shard-count mismatch, close releasing every actor back to the pool."""
    async def scenario():
        spawned = []

        def spawn(name, node):
            spawned.append(ShardActor(name, tune_gc=False, exit_on_fatal=False))
            return LocalHandle(spawned[-1])
        router = RouterActor(spawn, spare=0, alive_nodes=list, kill=lambda handle: handle.actor.release())
        request = ops.OpenPathRequest("ns", engine_config(tmp_path, cache_bytes_max=1000), 2, True, False)
        opened = await router.open_path(request)
        assert len(opened.shards) == 2 and opened.config.cache_bytes_max == 500 and len(spawned) == 2
        assert (await router.open_path(request)).attached == 2
        with pytest.raises(ShardCountMismatch):
            await router.open_path(ops.OpenPathRequest("ns", request.template, 3, True, False))
        spawned[0].execute([ops.CreateUser("a")])
        spawned[1].execute([ops.CreateUser("b")])
        assert await router.fan_out("ns", ops.ListUsersRequest(), 1.0, 1.0) == ["a", "b"]
        assert await router.close_path("ns") == 1 and await router.close_path("ns") == 0
        assert router.info()["paths"] == {} and len(router.pool.idle) == 2
        assert all(actor.probe()["assigned"] is False for actor in spawned)
    asyncio.run(scenario())


def test_registry_refuses_stronger_durability_or_another_embedder_than_the_open_path(tmp_path):
    """A bridge asking an open path for stronger durability or another embedder is refused (CONFIG_ERROR);
    weaker durability is given the path's stronger one."""
    from engine.errors import DurabilityMismatch, EmbedderMismatch
    registry = PathRegistry()
    path = OpenPath(None, shard_config(engine_config(tmp_path, durability="flush"), 2), [], False)

    def request(**overrides):
        return ops.OpenPathRequest("ns", engine_config(tmp_path, **overrides), 2, False, False)
    with pytest.raises(DurabilityMismatch) as caught:
        registry.check_settings(request(durability="fsync"), path)
    assert caught.value.code == "CONFIG_ERROR" and caught.value.config_field == "durability"
    with pytest.raises(EmbedderMismatch):
        registry.check_settings(request(embedder="engine.embedders:hashing"), path)
    registry.check_settings(request(durability="none"), path)
