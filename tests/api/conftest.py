"""API fixtures: bridges on temp paths, in-process (no Ray) or inside the shared Ray runtime.

A test module that sets `IN_PROCESS = True` gets bridges whose router and shards run inside the
test process (actors/local.py): the api layer is unit-tested without Ray, and `ray.init` raises
there. The other modules are end-to-end tests on the shared local Ray runtime.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from api import ChatAppStorageConfig, FFChatAppBridge
from tests.conftest import ensure_local_ray


def in_process(request) -> bool:
    return bool(getattr(request.module, "IN_PROCESS", False))


@pytest.fixture(autouse=True)
def _no_ray_in_unit_tests(request, monkeypatch):
    """In an IN_PROCESS module, starting Ray is a test failure."""
    if in_process(request):
        import ray

        def refuse(*args, **kwargs):
            raise AssertionError("an in-process api test tried to start Ray")
        monkeypatch.setattr(ray, "init", refuse)


@pytest_asyncio.fixture(scope="module")
async def bridge(_ray_session, tmp_path_factory, request):
    """One bridge per test module (2 shards, flush durability) so actor start-up is paid once."""
    path = tmp_path_factory.mktemp("bridge")
    config = ChatAppStorageConfig(str(path), shard_count=2, cache_size_mb=50)
    if not in_process(request):
        ensure_local_ray()
    bridge = FFChatAppBridge(config, in_process=in_process(request))
    await bridge.initialize()
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
