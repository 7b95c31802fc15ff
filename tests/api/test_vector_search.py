"""Vector and hybrid search through the bridge with the built-in hashing embedder."""

import pytest
import pytest_asyncio

from api import FFChatAppBridge, InitializationError
from tests.factories import message


@pytest_asyncio.fixture(scope="module")
async def vector_bridge(_ray_session, tmp_path_factory):
    from tests.conftest import ensure_local_ray
    ensure_local_ray()
    bridge = await FFChatAppBridge.create_for_chat_app(str(tmp_path_factory.mktemp("vectors")), {
        "shard_count": 2, "embedder": "engine.embedders:hashing"})
    yield bridge
    await bridge.close()


async def test_capabilities_list_vector_and_hybrid(vector_bridge):
    """With an embedder, capabilities advertise text, vector and hybrid search."""
    assert (await vector_bridge.get_capabilities())["search_types"] == ["text", "vector", "hybrid"]


async def test_vector_search_ranks_by_meaning_of_words_and_fragments(vector_bridge):
    """Vector search finds messages sharing word fragments that text search cannot match."""
    data = vector_bridge.get_data_layer()
    session_id = await data.storage.create_session("vec", "trip")
    await data.store_chat_messages("vec", session_id, [
        message("Planning a trip with trams around Lisbon"), message("Quarterly tax report is due"),
        message("Which tramway lines run in Porto?")])
    text = await data.search_conversations("vec", "tramways")
    assert text["data"]["search_metadata"]["total_matches"] == 0
    result = await data.search_conversations("vec", "tramways", {"search_type": "vector", "limit": 2})
    assert result["success"], result
    meta = result["data"]["search_metadata"]
    assert meta["search_type"] == "vector" and meta["vector_pending"] == 0 and meta["total_matches"] == 3
    assert "tramway" in result["data"]["results"][0]["content"]
    assert result["data"]["performance_info"]["optimization_level"] == "vector"
    strict = await data.search_conversations("vec", "tramways", {"search_type": "vector",
                                                                 "similarity_threshold": 0.99})
    assert strict["data"]["search_metadata"]["total_matches"] == 0


async def test_hybrid_search_fuses_text_and_vector(vector_bridge):
    """Hybrid results carry fused RRF scores and include exact text matches first."""
    data = vector_bridge.get_data_layer()
    session_id = await data.storage.create_session("hyb", "mix")
    await data.store_chat_messages("hyb", session_id, [message("python asyncio tutorial"),
                                                       message("pythonic code review"),
                                                       message("gardening tips")])
    result = await data.search_conversations("hyb", "python", {"search_type": "hybrid", "limit": 3})
    assert result["success"], result
    results = result["data"]["results"]
    assert results[0]["content"] == "python asyncio tutorial"
    assert all(r["relevance_score"] <= 2 / 61 for r in results)
    assert result["data"]["search_metadata"]["search_type"] == "hybrid"


async def test_vector_search_is_unavailable_without_an_embedder(bridge):
    """Without an embedder, vector and hybrid search answer VECTOR_SEARCH_UNAVAILABLE."""
    data = bridge.get_data_layer()
    for search_type in ("vector", "hybrid"):
        result = await data.search_conversations("anyone", "q", {"search_type": search_type})
        assert result["metadata"]["error_code"] == "VECTOR_SEARCH_UNAVAILABLE"


async def test_unimportable_embedder_fails_initialize(ray_runtime, tmp_path):
    """An embedder that cannot be imported fails the factory with InitializationError naming the module."""
    with pytest.raises(InitializationError) as caught:
        await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"embedder": "no_such_module:embed",
                                                                  "shard_count": 1})
    assert caught.value.context["initialization_step"] == "factory_creation"
    assert caught.value.message.startswith("Failed to create chat app bridge: Failed to initialize chat storage "
                                           "bridge: ")
    assert caught.value.message.endswith("No module named 'no_such_module'")


async def test_unimportable_embedder_fails_at_the_embedder_check_step(ray_runtime, tmp_path):
    """initialize() imports the embedder and embeds ['ping'] itself: its failure is step embedder_check (§2)."""
    with pytest.raises(InitializationError) as caught:
        await FFChatAppBridge.create_for_chat_app(str(tmp_path), {"embedder": "no_such_module:embed",
                                                                  "shard_count": 1})
    assert caught.value.__cause__.context["initialization_step"] == "embedder_check"
