"""api.backend.PathBackend without Ray: typed routing, fan-out retries through a router restart,
deadlines, and restart handling end to end over in-process actors."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray import exceptions as ray_exceptions  # exception classes only: no Ray runtime starts

from api import ChatAppStorageConfig, FFChatAppBridge
from api.backend import PathBackend
from engine import operations as ops
from engine.errors import PathNotOpen, RequestTimeout, ShardUnavailable
from tests.factories import message

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray


class _Transport:
    """A scripted transport: fan_out raises the scripted errors in turn, then answers."""

    shard_count = 2

    def __init__(self, errors=(), delay_s=0.0):
        self.errors = list(errors)
        self.delay_s = delay_s
        self.fan_outs = 0
        self.reregistered = 0

    async def fan_out(self, request, phase_timeout_s, total_timeout_s):
        self.fan_outs += 1
        await asyncio.sleep(self.delay_s)
        if self.errors:
            raise self.errors.pop(0)
        return ("answered", phase_timeout_s, total_timeout_s)

    async def reregister(self):
        self.reregistered += 1

    async def execute(self, index, operations):
        return [ops.Reply(True, (index, type(op).__name__)) for op in operations]

    async def reassign(self, index):
        pass

    async def prepare(self, index):
        pass


async def test_session_and_user_operations_go_to_the_owning_shard():
    """A session operation reaches the shard its (user, session) hashes to; a user one the profile's shard."""
    backend = PathBackend(_Transport(), "ns", 1.0)
    shard, name = await backend.session(ops.GetSession("alice", "s1"))
    assert shard == backend.session_shard("alice", "s1") and name == "GetSession"
    assert (await backend.user(ops.GetUser("alice")))[0] == backend.user_shard("alice")


async def test_a_router_restart_is_re_registered_and_the_request_retried():
    """PathNotOpen (the router restarted) makes the backend re-register the path and retry."""
    transport = _Transport(errors=[PathNotOpen("restarted"), PathNotOpen("again")])
    backend = PathBackend(transport, "ns", 1.0)
    answer = await backend.fan_out(ops.ListUsersRequest())
    assert answer[0] == "answered" and transport.reregistered == 2 and transport.fan_outs == 3


async def test_an_unreachable_router_is_retried_until_the_deadline_then_shard_unavailable():
    """A retryable transport error is retried with backoff; past the deadline it is SHARD_UNAVAILABLE."""
    transport = _Transport(errors=[ray_exceptions.RayActorError()] * 1000)
    backend = PathBackend(transport, "ns", 0.3)
    started = time.monotonic()
    with pytest.raises(ShardUnavailable):
        await backend.fan_out(ops.ListUsersRequest())
    assert transport.fan_outs >= 3 and time.monotonic() - started <= 0.3 + 0.1


async def test_a_slow_router_ends_the_call_at_its_deadline_with_timeout():
    """The router's answer is awaited only until the deadline: then TIMEOUT."""
    backend = PathBackend(_Transport(delay_s=5), "ns", 0.2)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await backend.fan_out(ops.ListUsersRequest())
    assert time.monotonic() - started <= 0.2 + 0.1


async def test_the_router_gets_ninety_percent_of_the_time_left_and_the_search_phase_bound():
    """The router's whole fan-out gets 90% of the remaining time; a phase at most the given bound."""
    backend = PathBackend(_Transport(), "ns", 10.0)
    _, phase, total = await backend.fan_out(ops.ListUsersRequest(), phase_timeout_s=1.5)
    assert phase == 1.5 and 8.9 < total <= 9.0


async def test_a_restarted_shard_is_re_assigned_and_the_store_succeeds(tmp_path):
    """End to end in-process: the actor of a shard loses its shard (as after a restart); the next store
    re-assigns it through the router, replays the log and succeeds; nothing acknowledged is lost."""
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(tmp_path), shard_count=2), in_process=True)
    await bridge.initialize()
    try:
        data = bridge.get_data_layer()
        session_id = await data.storage.create_session("rs", "s")
        await data.store_chat_message("rs", session_id, message("before"))
        index = bridge.backend.session_shard("rs", session_id)
        bridge.backend.transport.shards[index].actor.release()
        stored = await data.store_chat_message("rs", session_id, message("after"))
        assert stored["success"], stored
        history = await data.get_chat_history("rs", session_id)
        assert [m["content"] for m in history["data"]["messages"]] == ["before", "after"]
        assert bridge.backend.clients[index].retries == 1
    finally:
        await bridge.close()
