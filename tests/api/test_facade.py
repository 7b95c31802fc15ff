"""The storage facade: upstream return conventions, validation and StorageError codes."""

import pytest

from api import ChatMessage, ChatSession, SearchError, StorageError

IN_PROCESS = True  # unit tests of the api layer: router and shards run in this process, no Ray


async def test_users_create_get_update_list_delete(data):
    """Profiles keep every key; updates merge preferences; unknown users give False/None."""
    storage = data.storage
    assert await storage.create_user("fac-u", {"username": "al", "plan": "pro", "user_id": "ignored"}) is True
    assert await storage.create_user("fac-u") is False
    profile = await storage.get_user_profile("fac-u")
    assert profile["user_id"] == "fac-u" and profile["username"] == "al" and profile["plan"] == "pro"
    assert profile["preferences"] == {} and profile["metadata"] == {}
    assert await storage.update_user_profile("fac-u", {"preferences": {"theme": "dark"}}) is True
    assert (await storage.get_user_profile("fac-u"))["preferences"] == {"theme": "dark"}
    assert await storage.update_user_profile("fac-nobody", {"x": 1}) is False
    assert await storage.get_user_profile("fac-nobody") is None
    assert await storage.user_exists("fac-u") and not await storage.user_exists("fac-nobody")
    assert "fac-u" in await storage.list_users()
    assert await storage.delete_user("fac-u") is True and await storage.delete_user("fac-u") is False


async def test_sessions_and_messages(data):
    """Sessions get default titles, stats are exact, messages come back as ChatMessage oldest first."""
    storage = data.storage
    session_id = await storage.create_session("fac-s", session_type="debate")
    assert session_id.startswith("chat_session_")
    session = await storage.get_session("fac-s", session_id)
    assert isinstance(session, ChatSession) and session.title == "Debate Session" and session.session_name == "Debate Session"
    assert await storage.create_session("fac-s", session_id=session_id) == ""
    assert await storage.user_exists("fac-s")
    assert await storage.add_message("fac-s", session_id, ChatMessage(role="user", content="first")) is True
    assert await storage.add_message("fac-s", session_id, {"role": "assistant", "content": "second"}) is True
    assert await storage.add_message("fac-s", "missing", {"role": "user", "content": "x"}) is False
    messages = await storage.get_messages("fac-s", session_id)
    assert [m.content for m in messages] == ["first", "second"] and all(isinstance(m, ChatMessage) for m in messages)
    assert await storage.get_messages("fac-s", session_id, limit=0) == []
    assert [m.content for m in await storage.get_messages("fac-s", session_id, limit=1, offset=1)] == ["second"]
    assert await storage.get_messages("fac-s", "missing") == []
    stats = await storage.get_session_stats("fac-s", session_id)
    assert stats["message_count"] == 2 and stats["total_size_bytes"] == len("first") + len("second")
    assert await storage.update_session("fac-s", session_id, {"title": "Renamed", "metadata": {"a": 1}})
    assert (await storage.get_session("fac-s", session_id)).title == "Renamed"
    assert await storage.update_session_metadata("fac-s", session_id, {"b": 2})
    assert (await storage.get_session("fac-s", session_id)).metadata == {"a": 1, "b": 2}
    listed = await storage.list_sessions("fac-s")
    assert [s.session_id for s in listed] == [session_id] and listed[0].message_count == 2
    found = await storage.search_messages("fac-s", "second")
    assert [m.content for m in found] == ["second"]
    assert await storage.delete_session("fac-s", session_id) is True
    assert await storage.delete_session("fac-s", session_id) is False


async def test_facade_errors_raise_storage_error_with_codes(data, bridge):
    """Invalid input raises StorageError/SearchError with the matching code."""
    storage = data.storage
    with pytest.raises(StorageError) as caught:
        await storage.create_user("bad/id")
    assert caught.value.error_code == "INVALID_ID"
    with pytest.raises(StorageError) as caught:
        await storage.get_session_stats("fac-x", "missing")
    assert caught.value.error_code == "SESSION_NOT_FOUND"
    with pytest.raises(StorageError) as caught:
        await storage.add_message("fac-x", "s", {"role": "user"})
    assert caught.value.error_code == "INVALID_MESSAGE"
    with pytest.raises(SearchError) as caught:
        await storage.search_messages("fac-x", "  ")
    assert caught.value.error_code == "INVALID_ARGUMENT"
    assert await storage.search_messages("fac-ghost", "anything") == []
