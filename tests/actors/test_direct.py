"""The direct data plane without Ray: a real ShardActor's DirectServer (in a thread of this process)
and ShardLink clients over its Unix socket and TCP listener."""

import asyncio
import socket

import pytest

from actors import direct_link, wire
from actors.direct_link import Channel, ShardLink
from actors.local import LocalHandle
from actors.shard_actor import ShardActor
from engine import operations as ops
from engine.errors import ConnectionLost, EngineError, ShardUnassigned, ShardUnavailable
from tests.factories import engine_config, message


class _Handle(LocalHandle):
    """An in-process handle that counts the calls that went over "Ray" (the fallback)."""

    def __init__(self, actor):
        super().__init__(actor)
        self.ray_executes = 0

    def __getattr__(self, name):
        if name == "execute":
            self.ray_executes += 1
        return super().__getattr__(name)


@pytest.fixture
def served(tmp_path):
    actor = ShardActor("direct", tune_gc=False, exit_on_fatal=False)
    config = engine_config(tmp_path)
    actor.assign(config, 0)
    yield actor, _Handle(actor), (config.storage_path, 0)
    actor.release()


def _store(user="u", session="s", content="hello", message_id=None):
    extra = {"message_id": message_id} if message_id else {}
    return [ops.CreateSession(user, session), ops.Append(user, session, [message(content, **extra)])]


async def test_calls_go_over_the_unix_socket_and_answer_like_execute(served):
    actor, handle, key = served
    link = ShardLink(handle, key)
    replies = await link.execute(_store(content="over the socket"))
    assert [reply.ok for reply in replies] == [True, True] and link.transport == "unix"
    history = (await link.execute([ops.History("u", "s", 10)]))[0].unwrap()
    assert [m["content"] for m in history.value["messages"]] == ["over the socket"]
    assert handle.ray_executes == 0 and actor._server.requests_served == 2


async def test_many_pipelined_calls_from_two_links_share_one_connection(served):
    actor, handle, key = served
    first, second = ShardLink(handle, key), ShardLink(handle, key)
    await first.execute([ops.CreateSession("u", "s")])
    calls = [link.execute([ops.Append("u", "s", [message(f"m{i}", message_id=f"id{i}")])])
             for i in range(200) for link in ((first, second)[i % 2],)]
    replies = await asyncio.gather(*calls)
    assert all(batch[0].ok for batch in replies)
    assert first._channel is second._channel
    stored = (await first.execute([ops.History("u", "s", 500)]))[0].unwrap().value["messages"]
    assert sorted(m["message_id"] for m in stored) == sorted(f"id{i}" for i in range(200))


async def test_tcp_is_used_for_another_node(served, monkeypatch):
    actor, handle, key = served
    actor.endpoint()  # the server is started without a node address outside Ray: start TCP by hand
    monkeypatch.setattr(direct_link, "_local_node_id", lambda: "elsewhere")
    actor._server = None
    monkeypatch.setattr("actors.direct_server.node_address", lambda: "127.0.0.1")
    link = ShardLink(handle, key)
    assert (await link.execute(_store()))[1].ok and link.transport == "tcp"


async def test_a_wrong_secret_is_refused_and_nothing_is_unpickled(served):
    actor, _, _ = served
    endpoint = actor.endpoint()
    forged = wire.Endpoint(endpoint.node_id, endpoint.unix_address, None, None, b"x" * 32, endpoint.generation)
    with pytest.raises(ConnectionLost):
        await Channel.connect(forged, True, 2.0)
    # A client that skips the handshake and sends a frame at once is dropped without an answer.
    reader, writer = await asyncio.open_unix_connection(endpoint.unix_address)
    await reader.readexactly(len(wire.MAGIC) + wire.NONCE_BYTES)
    writer.write(wire.encode(1, (None, [ops.ListUsers()])))
    assert await reader.read() == b""  # closed, no reply
    writer.close()
    assert actor._server.requests_served == 0


async def test_an_oversized_frame_drops_only_that_connection(served):
    actor, handle, key = served
    endpoint = actor.endpoint()
    channel = await Channel.connect(endpoint, True, 2.0)
    channel._writer.write(wire.HEADER.pack(wire.MAX_FRAME_BYTES + 1, 7))
    await asyncio.sleep(0.05)
    assert channel.closed
    link = ShardLink(handle, key)
    assert (await link.execute(_store()))[1].ok


async def test_release_rotates_the_secret_and_a_held_connection_learns_the_actor_moved_on(served, tmp_path):
    actor, handle, key = served
    link = ShardLink(handle, key)
    await link.execute(_store())
    old = actor.endpoint()
    actor.release()
    assert actor.endpoint().secret != old.secret and actor.endpoint().generation != old.generation
    await asyncio.sleep(0.05)
    held = link._channel
    assert held.closed  # the actor closed it
    with pytest.raises(ShardUnassigned):  # reconnected with the new secret: the actor serves nothing now
        await link.execute([ops.ListUsers()])
    assert link._channel is not held
    other = engine_config(tmp_path / "other")
    actor.assign(other, 0)
    with pytest.raises(ShardUnavailable):  # a stale holder never reaches another path's data
        await link.execute([ops.ListUsers()])
    with pytest.raises(ConnectionLost):
        await Channel.connect(old, True, 2.0)


async def test_no_reachable_endpoint_falls_back_to_ray_calls(served, monkeypatch):
    actor, handle, key = served
    monkeypatch.setattr(direct_link, "_local_node_id", lambda: "elsewhere")  # no TCP listener outside Ray
    link = ShardLink(handle, key)
    assert (await link.execute(_store()))[1].ok
    assert link.transport == "ray" and "could not be set up" in link.fallback_reason
    assert handle.ray_executes == 1


async def test_a_stalled_call_ends_when_the_actor_is_another_incarnation(served, monkeypatch):
    """A call the server never answers (a dead node keeps TCP silent) is failed with ConnectionLost
    as soon as Ray reports another incarnation of the actor."""
    actor, handle, key = served
    monkeypatch.setattr(direct_link, "STALL_CHECK_S", 0.05)
    link = ShardLink(handle, key)
    await link.execute(_store())
    hung = asyncio.Event()

    def never(operations, shard_key):
        hung.set()
        import time
        time.sleep(0.3)  # the server thread is busy; meanwhile the actor "restarts"
        return [ops.Reply(True, None)] * len(operations)
    actor._server._execute = never
    call = asyncio.ensure_future(link.execute([ops.ListUsers()]))
    await asyncio.sleep(0.01)
    actor._server._generation = "another-incarnation"  # what Ray reports; the socket stays silent
    with pytest.raises(ConnectionLost, match="restarted, was replaced"):
        await call


def test_the_server_listens_on_the_node_address_not_every_interface(served, monkeypatch):
    actor, _, _ = served
    monkeypatch.setattr("actors.direct_server.node_address", lambda: "127.0.0.1")
    actor._server = None
    endpoint = actor.endpoint()
    assert endpoint.host == "127.0.0.1"
    with socket.create_connection((endpoint.host, endpoint.port), timeout=2):
        pass


async def test_the_router_answers_fan_outs_on_its_own_loop_and_its_errors_cross_intact(tmp_path):
    from actors.direct_link import RouterLink
    from actors.router_actor import RouterActor
    from engine.errors import PathNotOpen
    actors = [ShardActor(i, tune_gc=False, exit_on_fatal=False) for i in range(2)]
    router = RouterActor(spawn=None, alive_nodes=list, direct=False)
    config = engine_config(tmp_path, shard_count=1)
    await router.open_path(ops.OpenPathRequest("ns", config, 2, False, False, [LocalHandle(a) for a in actors], "b1"))
    try:
        actors[0].execute([ops.CreateUser("u"), ops.CreateSession("u", "a"), ops.Append("u", "a", [message("apple")])])
        link = RouterLink(LocalHandle(router), True)
        request = ops.SearchRequest("u", 0, "text", ["apple"], 0, 10)
        found = await link.fan_out("ns", request, 5.0, 5.0, "b1", True)
        assert link.transport == "unix" and found.total == 1 and found.results[0]["content"] == "apple"
        with pytest.raises(PathNotOpen):  # a bridge the router does not know re-registers
            await link.fan_out("ns", request, 5.0, 5.0, "stranger", True)
        assert router._server.requests_served == 2
    finally:
        await router.close_path("ns", "b1")


async def test_a_silently_dropped_connection_falls_back_to_ray_and_health_can_say_why(served, monkeypatch):
    """Frames that vanish without the connection closing (a partition, a middlebox): the call ends
    with ConnectionLost once Ray says the actor sat idle, later calls go over Ray with the reason."""
    actor, handle, key = served
    monkeypatch.setattr(direct_link, "STALL_CHECK_S", 0.05)
    link = ShardLink(handle, key)
    await link.execute(_store())
    monkeypatch.setattr(actor._server, "_received", lambda writer, request_id, body: None)  # swallowed
    with pytest.raises(ConnectionLost):
        await link.execute([ops.ListUsers()])
    assert link.transport == "ray" and "silently dropped" in link.fallback_reason
    assert (await link.execute([ops.ListUsers()]))[0].ok and handle.ray_executes == 1


async def test_a_reply_that_cannot_be_read_fails_its_call_alone(served, monkeypatch):
    actor, handle, key = served
    link = ShardLink(handle, key)
    await link.execute(_store())
    real = wire.decode
    calls = iter([None, ValueError("not readable here")])  # the request reads, its reply does not

    def decode_once(body):
        failure = next(calls, None)
        if failure is not None:
            raise failure
        return real(body)
    monkeypatch.setattr(wire, "decode", decode_once)
    with pytest.raises(EngineError, match="could not be read"):
        await link.execute([ops.ListUsers()])
    assert (await link.execute([ops.ListUsers()]))[0].ok and link.transport == "unix"


async def test_connections_that_never_authenticate_are_capped(served):
    actor, handle, key = served
    endpoint = actor.endpoint()
    idle = [await asyncio.open_unix_connection(endpoint.unix_address) for _ in range(wire.MAX_HANDSHAKES)]
    try:
        reader, writer = await asyncio.open_unix_connection(endpoint.unix_address)
        assert await reader.read() == b""  # closed at once: the listener holds no more of them
        writer.close()
        crowded = ShardLink(handle, key)  # a bridge arriving now still gets its answer, over Ray
        assert (await crowded.execute(_store()))[1].ok and handle.ray_executes == 1
        assert crowded.transport == "ray" and "before greeting" in crowded.fallback_reason
    finally:
        for _, held in idle:
            held.close()
    await asyncio.sleep(0.05)
    assert (await ShardLink(handle, key).execute(_store()))[1].ok


async def test_a_reply_too_large_for_a_frame_is_fetched_over_ray_and_the_connection_stays(served, monkeypatch):
    actor, handle, key = served
    link = ShardLink(handle, key)
    await link.execute([ops.CreateSession("u", "s"), ops.Append("u", "s", [message("x" * 5000)])])
    monkeypatch.setattr(wire, "MAX_FRAME_BYTES", 4000)
    page = (await link.execute([ops.History("u", "s", 10)]))[0].unwrap()
    assert page.value["messages"][0]["content"] == "x" * 5000 and handle.ray_executes == 1
    big = [ops.Append("u", "s", [message("y" * 5000)])]  # a request too large: sent over Ray as well
    assert (await link.execute(big))[0].ok and handle.ray_executes == 2
    assert link.transport == "unix" and (await link.execute([ops.ListUsers()]))[0].ok


async def test_back_from_ray_the_socket_waits_for_the_calls_still_on_ray(served):
    """Each transport keeps its own order, not each other's: a batch must not reach the socket
    while an earlier one is still on its way over Ray."""
    actor, handle, key = served
    link = ShardLink(handle, key)
    order = []
    release = asyncio.get_running_loop().create_future()

    async def slow_ray_call():
        await release
        order.append("over ray")
        return actor.execute([ops.ListUsers()], key)
    ray_call = asyncio.ensure_future(link._over_ray(slow_ray_call()))
    await asyncio.sleep(0)
    direct = asyncio.ensure_future(link.execute([ops.ListUsers()]))
    await asyncio.sleep(0.05)
    assert not direct.done()  # the socket is up, but a Ray call is still in flight
    release.set_result(None)
    await ray_call
    assert (await direct)[0].ok and order == ["over ray"] and link.transport == "unix"
