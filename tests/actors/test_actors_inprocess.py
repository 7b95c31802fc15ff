"""Actor classes called directly in-process (no Ray): thin wrappers that behave like the engine."""

import asyncio

import pytest

from actors.local import LocalHandle
from actors.router_actor import RouterActor
from actors.shard_actor import ShardActor
from engine import operations as ops
from engine.errors import EngineError, PathNotOpen, ShardLocked, ShardUnassigned, UserNotFound
from tests.factories import engine_config, message


def test_shard_actor_assign_execute_release(tmp_path):
    """An actor serves nothing until assigned; assign opens the shard (its checkpoint and the log after
    it); release closes it (writing a checkpoint) and returns the actor to the pool."""
    actor = ShardActor(0, tune_gc=False)
    with pytest.raises(ShardUnassigned):
        actor.execute([ops.ListUsers()])
    assert actor.assign(engine_config(tmp_path), 0)["epoch"] == 1
    results = actor.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("hi")])])
    assert [ok for ok, _ in results] == [True, True]
    probe = actor.probe()
    assert probe["log_open"] and probe["writable"] and probe["messages"] == 1 and probe["restarts"] == 0
    assert actor.assign(engine_config(tmp_path), 0)["epoch"] == 1
    with pytest.raises(EngineError):  # another path's shard (one path's shards may share an actor)
        actor.assign(engine_config(tmp_path / "other"), 1)
    assert actor.release() is True and actor.probe()["assigned"] is False
    report = actor.assign(engine_config(tmp_path), 0)  # from the checkpoint the release's close wrote
    assert report["records"] == 0 and "resumed after a checkpoint" in " ".join(report["notes"])
    assert actor.probe()["messages"] == 1
    actor.release()


def test_release_asks_to_be_replaced_when_the_process_keeps_the_shards_memory(tmp_path, monkeypatch):
    """Released, an actor frees its shards' state and trims the heap; if the process still holds more
    than RELEASE_SLACK_BYTES above its size before its first shard, release() is False and the pool
    replaces it (a pooled process must not keep a closed path's memory)."""
    import actors.shard_actor as shard_actor
    readings = iter([100 * 2**20, 100 * 2**20 + shard_actor.RELEASE_SLACK_BYTES + 1])
    monkeypatch.setattr(shard_actor, "_rss", lambda: next(readings))
    actor = ShardActor(0, tune_gc=False)
    actor.assign(engine_config(tmp_path), 0)  # reads the idle size
    assert actor.release() is False
    readings = iter([100 * 2**20, 100 * 2**20 + shard_actor.RELEASE_SLACK_BYTES])
    actor.assign(engine_config(tmp_path), 0)
    assert actor.release() is True


def test_two_actors_cannot_own_one_shard(tmp_path):
    """A second actor assigned the same shard gets ShardLocked while the first holds it."""
    first, second = ShardActor(0, tune_gc=False), ShardActor(1, tune_gc=False)
    first.assign(engine_config(tmp_path), 0)
    with pytest.raises(ShardLocked):
        second.assign(engine_config(tmp_path), 0)
    first.release()
    second.assign(engine_config(tmp_path), 0)
    second.release()


def test_router_opens_paths_and_merges_search(tmp_path):
    """The router registers a path on given actors, merges search in BM25 order, and releases on close."""
    async def scenario():
        actors = [ShardActor(0, tune_gc=False), ShardActor(1, tune_gc=False)]
        router = RouterActor(spawn=None, alive_nodes=list)
        config = engine_config(tmp_path, shard_count=1)
        opened = await router.open_path(ops.OpenPathRequest("ns", config, 2, False, False,
                                                            [LocalHandle(a) for a in actors]))
        assert len(opened.shards) == 2 and opened.config.shard_count == 2 and opened.attached == 1
        actors[0].execute([ops.CreateUser("u"), ops.CreateSession("u", "a"),
                           ops.Append("u", "a", [message("apple apple"), message("pear")])])
        actors[1].execute([ops.CreateSession("u", "b"), ops.Append("u", "b", [message("apple")])])
        user_shard = 0  # the profile was created on shard 0 above

        def search(user_id):
            return router.fan_out("ns", ops.SearchRequest(user_id, user_shard, "text", ["apple"], 0, 10), 5.0, 5.0)
        result = await search("u")
        assert [h["content"] for h in result.results] == ["apple apple", "apple"] and result.total == 2
        with pytest.raises(UserNotFound):
            await search("ghost")
        with pytest.raises(PathNotOpen):
            await router.fan_out("other", ops.ListUsersRequest(), 5.0, 5.0)
        assert await router.close_path("ns") == 0
        assert all(a.probe()["assigned"] is False for a in actors)
    asyncio.run(scenario())


def test_none_durability_reaches_the_os_within_about_a_second(tmp_path):
    """In `none` mode the actor's flusher writes buffered records without any further call."""
    import os
    import time
    actor = ShardActor(0, tune_gc=False)
    actor.assign(engine_config(tmp_path, durability="none"), 0)
    actor.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("buffered")])])
    directory = os.path.join(tmp_path, "shard-0000")

    def on_disk() -> int:  # bytes of records (each segment starts with a 20-byte header)
        return sum(os.path.getsize(os.path.join(directory, n)) - 20 for n in os.listdir(directory)
                   if n.startswith("seg-"))
    assert on_disk() == 0
    deadline = time.monotonic() + 3
    while on_disk() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert on_disk() > 0
    actor.release()
