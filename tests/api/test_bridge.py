"""Bridge lifecycle, factories, accessors, capabilities, health check, persistence and exclusivity."""

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from api import ChatAppStorageConfig, ConfigurationError, FFChatAppBridge, InitializationError
from tests.factories import message

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_factories_return_initialised_bridges(ray_runtime, tmp_path):
    """Every factory returns a ready bridge; presets apply their settings."""
    bridge = await FFChatAppBridge.create_from_preset("development", str(tmp_path / "a"))
    try:
        assert bridge._initialized and bridge.config.cache_size_mb == 50
        assert bridge.get_standardized_config()["runtime"]["shard_count"] == 2
    finally:
        await bridge.close()
    bridge = await FFChatAppBridge.create_for_use_case("simple_chat", str(tmp_path / "b"))
    try:
        assert bridge.config.enable_vector_search is False
    finally:
        await bridge.close()
    bridge = await FFChatAppBridge.create_from_preset_legacy("speed", str(tmp_path / "c"), {"shard_count": 1})
    try:
        assert bridge.config.performance_mode == "speed" and bridge.config.history_page_size == 25
    finally:
        await bridge.close()


async def test_factory_errors(ray_runtime, tmp_path):
    """Configuration errors propagate unchanged from every factory."""
    with pytest.raises(ConfigurationError):
        await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"cache_size_mb": 1})
    with pytest.raises(ConfigurationError):
        await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"unknown_thing": 1})
    with pytest.raises(ConfigurationError) as caught:
        await FFChatAppBridge.create_from_preset("nope", str(tmp_path))
    assert caught.value.message == "Template 'nope' not found"
    with pytest.raises(ConfigurationError) as caught:
        FFChatAppBridge._get_preset_config("turbo")
    assert caught.value.suggestions == ["Use one of: speed, balanced, quality"]
    with pytest.raises(ConfigurationError):
        FFChatAppBridge({"storage_path": "x"})


async def test_unwritable_path_fails_initialize(ray_runtime, tmp_path):
    """A path that cannot be created fails in initialize() with InitializationError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InitializationError) as caught:
        await FFChatAppBridge.create_for_chat_app(str(blocker / "data"), {"shard_count": 1})
    assert caught.value.context["initialization_step"] == "factory_creation"


async def test_accessors_before_and_after_lifecycle(ray_runtime, tmp_path):
    """Accessors raise before initialise and after close; close is idempotent; data calls say BRIDGE_CLOSED."""
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(tmp_path), shard_count=1))
    with pytest.raises(RuntimeError, match="Bridge not initialized. Call initialize"):
        bridge.get_data_layer()
    results = await asyncio.gather(bridge.initialize(), bridge.initialize())
    assert results == [True, True]
    data = bridge.get_data_layer()
    assert data is bridge.get_data_layer() and bridge._storage_manager is data.storage
    capabilities = await bridge.get_capabilities()
    assert capabilities["search_types"] == ["text"] and capabilities["shard_count"] == 1
    assert capabilities["supported_formats"] == ["json", "jsonl"]
    standard = bridge.get_standardized_config()
    assert standard["initialized"] is True and standard["initialization_time"] > 0
    assert set(standard["runtime"]) == {"shard_count", "durability", "ray_address", "namespace", "embedder",
                                        "max_message_bytes", "request_timeout_s"}
    await bridge.close()
    await bridge.close()
    with pytest.raises(RuntimeError, match="Bridge is closed"):
        bridge.get_data_layer()
    result = await data.store_chat_message("u", "s", message("x"))
    assert result["metadata"]["error_code"] == "BRIDGE_CLOSED"
    with pytest.raises(InitializationError, match="Bridge is closed"):
        await bridge.initialize()
    health = await bridge.health_check()
    assert health["status"] == "error"


async def test_async_with_and_resource_warning(ray_runtime, tmp_path):
    """`async with` closes the bridge; a bridge collected while open warns."""
    async with FFChatAppBridge(ChatAppStorageConfig(str(tmp_path / "w"), shard_count=1)) as bridge:
        assert bridge._initialized
    assert bridge.is_closed
    leaked = await FFChatAppBridge.create_for_chat_app(str(tmp_path / "leak"), {"shard_count": 1})
    backend = leaked.backend
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del leaked
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    await backend.transport.router.close_path.remote(backend.namespace)


async def test_health_check_probes_every_shard(bridge):
    """health_check answers with per-shard facts and writes nothing."""
    health = await bridge.health_check()
    assert health["status"] == "healthy", health
    assert health["storage_accessible"] and health["write_permissions"] and health["disk_space_sufficient"]
    assert len(health["shards"]) == 2 and all(s["status"] == "healthy" for s in health["shards"])
    assert {"shard", "status", "response_time_ms", "sessions", "messages", "cache_bytes", "restarts",
            "error"} <= set(health["shards"][0])
    assert health["configuration_valid"] is True and health["check_duration_ms"] > 0


async def test_reopen_on_same_path_sees_all_data(ray_runtime, tmp_path):
    """A bridge closed and reopened on the same path sees every message, in order."""
    path = str(tmp_path / "persist")
    bridge = await FFChatAppBridge.create_for_chat_app(path, {"shard_count": 2, "durability": "fsync"})
    data = bridge.get_data_layer()
    session_id = await data.storage.create_session("p", "persist")
    await data.store_chat_messages("p", session_id, [message(f"m{i}") for i in range(20)])
    await bridge.close()
    again = await FFChatAppBridge.create_for_chat_app(path)
    try:
        history = await again.get_data_layer().get_chat_history("p", session_id, limit=100)
        assert [m["content"] for m in history["data"]["messages"]] == [f"m{i}" for i in range(20)]
        assert again.get_standardized_config()["runtime"]["shard_count"] == 2
    finally:
        await again.close()
    with pytest.raises(ConfigurationError, match="does not match the 2 shards"):
        await FFChatAppBridge.create_for_chat_app(path, {"shard_count": 3})
    template_default = await FFChatAppBridge.create_from_preset("lightweight", path)
    try:
        assert template_default.get_standardized_config()["runtime"]["shard_count"] == 2
    finally:
        await template_default.close()


async def test_two_bridges_on_one_path_share_actors_and_caches(ray_runtime, tmp_path):
    """Bridges on one path share actors: writes through one are read by the other; the last close stops them."""
    path = str(tmp_path / "shared")
    first = await FFChatAppBridge.create_for_chat_app(path, {"shard_count": 2})
    second = await FFChatAppBridge.create_for_chat_app(path)
    session_id = await first.get_data_layer().storage.create_session("s", "shared")
    await first.get_data_layer().store_chat_message("s", session_id, message("from first"))
    history = await second.get_data_layer().get_chat_history("s", session_id)
    assert history["data"]["messages"][0]["content"] == "from first"
    await first.close()
    assert (await second.get_data_layer().get_chat_history("s", session_id))["success"]
    await second.close()


_OTHER_RUNTIME = textwrap.dedent("""
    import asyncio, os, sys
    sys.path.insert(0, {repo!r})
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    import ray
    ray.init(address="local", num_cpus=1, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    from api import FFChatAppBridge, InitializationError
    async def main():
        try:
            bridge = await FFChatAppBridge.create_for_chat_app({path!r})
        except InitializationError as exc:
            print("REFUSED", exc.context.get("original_error", ""))
            return
        print("OPENED")
        await bridge.close()
    asyncio.run(main())
    ray.shutdown()
""")


async def test_second_runtime_cannot_open_a_held_path(ray_runtime, tmp_path):
    """One Ray runtime at a time serves a storage path: a second runtime fails in initialize()."""
    path = str(tmp_path / "held")
    bridge = await FFChatAppBridge.create_for_chat_app(path, {"shard_count": 1})
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OTHER_RUNTIME.format(repo=REPO, path=path), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        assert b"REFUSED" in output, output
    finally:
        await bridge.close()


def test_get_user_info_has_upstream_keys_for_the_os_user(monkeypatch):
    """get_user_info() reports the OS user as upstream's user context does: a system user, no override."""
    bridge = FFChatAppBridge(ChatAppStorageConfig("./never_opened"))
    monkeypatch.setattr(os, "getlogin", lambda: "alice")
    assert bridge.get_current_user() == "alice"
    assert bridge.get_user_info() == {"user_id": "alice", "is_default": False, "is_override": False,
                                      "authentication_method": "system", "is_authenticated": True}


def test_get_user_info_falls_back_to_upstream_default_user(monkeypatch):
    """With no login name, no getpass user and no USER/USERNAME, the user is upstream's default 'test123'."""
    import getpass

    def no_user(*args):
        raise OSError("no user")
    monkeypatch.setattr(os, "getlogin", no_user)
    monkeypatch.setattr(getpass, "getuser", no_user)
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("USERNAME", raising=False)
    bridge = FFChatAppBridge(ChatAppStorageConfig("./never_opened"))
    assert bridge.get_current_user() == "test123"
    assert bridge.get_user_info() == {"user_id": "test123", "is_default": True, "is_override": False,
                                      "authentication_method": "default", "is_authenticated": False}


async def test_closed_bridge_answers_bridge_closed_before_validating_input(ray_runtime, tmp_path):
    """After close(), a call with an invalid id is BRIDGE_CLOSED (data layer) or StorageError(BRIDGE_CLOSED)
    (facade), not INVALID_ID: closed means closed, whatever the input."""
    from api import StorageError
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"shard_count": 1})
    data = bridge.get_data_layer()
    await bridge.close()
    result = await data.store_chat_message("bad user!", "s", message("x"))
    assert (result["success"], result["metadata"]["error_code"]) == (False, "BRIDGE_CLOSED")
    history = await data.get_chat_history("", "s")
    assert history["metadata"]["error_code"] == "BRIDGE_CLOSED"
    with pytest.raises(StorageError) as caught:
        await data.storage.create_user("bad user!")
    assert caught.value.error_code == "BRIDGE_CLOSED"
