"""Actor classes called directly in-process (no Ray): thin wrappers that behave like the engine."""

import asyncio

import pytest

from actors.router_actor import RouterActor
from actors.shard_actor import ShardActor
from engine.errors import ShardLocked, UserNotFound
from tests.factories import engine_config, message


class _Handle:
    """A fake actor handle whose `.execute.remote()` returns an awaitable, like Ray's."""

    def __init__(self, actor):
        self.actor = actor
        self.execute = self

    def remote(self, operations):
        async def run():
            return self.actor.execute(operations)
        return run()


def test_shard_actor_runs_batches_and_reports_health(tmp_path):
    """execute() runs a batch with one commit; probe() reports real log and directory facts."""
    actor = ShardActor(engine_config(tmp_path), 0)
    assert actor.ready()["epoch"] == 1
    results = actor.execute([("create_session", ("u", "s"), {}), ("append", ("u", "s", [message("hi")]), {})])
    assert [ok for ok, _ in results] == [True, True]
    probe = actor.probe()
    assert probe["log_open"] and probe["writable"] and probe["messages"] == 1 and probe["restarts"] == 0
    actor.close()


def test_second_shard_actor_on_same_directory_reports_lock(tmp_path):
    """A second actor on a locked shard reports ShardLocked from ready() instead of dying silently."""
    first = ShardActor(engine_config(tmp_path), 0)
    second = ShardActor(engine_config(tmp_path), 0)
    with pytest.raises(ShardLocked):
        second.ready()
    first.close()


def test_router_merges_search_across_shards(tmp_path):
    """The router's two-phase search merges shard results in global BM25 order."""
    config = engine_config(tmp_path, shard_count=2)
    shards = [ShardActor(config, 0), ShardActor(config, 1)]
    router = RouterActor(str(tmp_path), 2, False, "ns")
    router.set_shards([_Handle(s) for s in shards])
    shards[0].execute([("create_user", ("u",), {}), ("create_session", ("u", "a"), {}),
                       ("append", ("u", "a", [message("apple apple"), message("pear")]), {})])
    shards[1].execute([("create_session", ("u", "b"), {}), ("append", ("u", "b", [message("apple")]), {})])

    async def search():
        return await router.search("u", ["apple"], 0, 10, 0, 10, {}, "relevance", True, 5.0)
    result = asyncio.run(search())
    assert [h["content"] for h in result["results"]] == ["apple apple", "apple"] and result["total"] == 2

    async def missing():
        return await router.search("ghost", ["apple"], 0, 10, 0, 10, {}, "relevance", True, 5.0)
    with pytest.raises(UserNotFound):
        asyncio.run(missing())
    for shard in shards:
        shard.close()
    router.close()
