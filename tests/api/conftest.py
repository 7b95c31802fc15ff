"""API fixtures: bridges on temp paths inside the shared Ray runtime."""

from __future__ import annotations

import pytest
import pytest_asyncio

from api import FFChatAppBridge
from tests.conftest import ensure_local_ray


@pytest_asyncio.fixture(scope="module")
async def bridge(_ray_session, tmp_path_factory):
    """One bridge per test module (2 shards, flush durability) so actor start-up is paid once."""
    ensure_local_ray()
    path = tmp_path_factory.mktemp("bridge")
    bridge = await FFChatAppBridge.create_for_chat_app(str(path), {"shard_count": 2, "cache_size_mb": 50})
    yield bridge
    await bridge.close()


@pytest.fixture
def data(bridge):
    return bridge.get_data_layer()


_counter = [0]


@pytest_asyncio.fixture
async def session(data):
    """A fresh (user, session) pair for one test."""
    _counter[0] += 1
    user_id = f"user{_counter[0]}"
    session_id = await data.storage.create_session(user_id, "Test session")
    return user_id, session_id
