"""api.langchain.FFChatMessageHistory, tested as LangChain tests chat histories: messages of every type
round-trip without loss, in order, in one round trip per list; clear; the sync API from another
thread; and a chain with message history (RunnableWithMessageHistory over a fake chat model) whose
history survives closing and reopening the bridge."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402

from api import ChatAppStorageConfig, FFChatAppBridge  # noqa: E402
from api.langchain import FFChatMessageHistory  # noqa: E402

IN_PROCESS = True  # the adapter is api code: its tests run without Ray


async def _bridge(path) -> FFChatAppBridge:
    bridge = FFChatAppBridge(ChatAppStorageConfig(str(path), shard_count=2), in_process=True)
    await bridge.initialize()
    return bridge


def _conversation():
    return [SystemMessage("You plan trips.", id="m-sys"),
            HumanMessage("Trams in Lisbon?", id="m-1", additional_kwargs={"locale": "pt"}),
            AIMessage("", id="m-2", tool_calls=[{"name": "lookup", "args": {"q": "tram 28"}, "id": "call-1"}],
                      response_metadata={"model": "fake"}),
            ToolMessage("Line 28 goes uphill.", tool_call_id="call-1", id="m-3"),
            AIMessage([{"type": "text", "text": "Take line 28."}], id="m-4"),
            HumanMessage("Thanks!")]  # no id: one is given


async def test_every_message_type_round_trips_without_loss_in_order(tmp_path):
    bridge = await _bridge(tmp_path)
    try:
        history = FFChatMessageHistory(bridge, "alice", "trip")
        assert await history.aget_messages() == []  # the session does not exist yet
        sent = _conversation()
        await history.aadd_messages(sent[:1])  # creates the session on first use
        client = bridge.backend.clients[bridge.backend.session_shard("alice", "trip")]
        batches_before = client.batches_sent
        await history.aadd_messages(sent[1:])
        assert client.batches_sent - batches_before == 1  # the list went in one round trip
        got = await history.aget_messages()
        assert [type(m) for m in got] == [type(m) for m in sent]
        for stored, original in zip(got[:-1], sent[:-1]):
            assert stored == original, (stored, original)
        assert got[-1].content == "Thanks!" and got[-1].id
        assert got[2].tool_calls[0]["args"] == {"q": "tram 28"} and got[1].additional_kwargs == {"locale": "pt"}
        found = await bridge.get_data_layer().search_conversations("alice", "uphill")
        assert found["data"]["search_metadata"]["total_matches"] == 1  # the text is searchable
    finally:
        await bridge.close()


async def test_clear_empties_the_history_and_the_next_add_starts_again(tmp_path):
    bridge = await _bridge(tmp_path)
    try:
        history = FFChatMessageHistory(bridge, "bob", "s")
        await history.aadd_messages([HumanMessage("one"), AIMessage("two")])
        await history.aclear()
        assert await history.aget_messages() == []
        await history.aadd_messages([HumanMessage("three")])
        assert [m.content for m in await history.aget_messages()] == ["three"]
    finally:
        await bridge.close()


async def test_the_sync_api_works_from_another_thread_and_refuses_the_bridges_own_loop(tmp_path):
    bridge = await _bridge(tmp_path)
    try:
        history = FFChatMessageHistory(bridge, "carol", "s")

        def from_a_thread():
            history.add_user_message("sync hello")
            history.add_ai_message("sync reply")
            return [m.content for m in history.messages]
        assert await asyncio.to_thread(from_a_thread) == ["sync hello", "sync reply"]
        with pytest.raises(RuntimeError, match="aget_messages"):
            history.messages  # on the bridge's loop: would deadlock, so it refuses
        await asyncio.to_thread(history.clear)
        assert await history.aget_messages() == []
    finally:
        await bridge.close()


async def test_a_chain_with_message_history_remembers_across_a_bridge_restart(tmp_path):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), MessagesPlaceholder("history"),
                                               ("human", "{question}")])

    async def ask(bridge, question, answer):
        chain = RunnableWithMessageHistory(prompt | FakeListChatModel(responses=[answer]),
                                           lambda session_id: FFChatMessageHistory(bridge, "dave", session_id),
                                           input_messages_key="question", history_messages_key="history")
        reply = await chain.ainvoke({"question": question}, config={"configurable": {"session_id": "chat-1"}})
        return reply.content

    bridge = await _bridge(tmp_path)
    try:
        assert await ask(bridge, "Best tram?", "28") == "28"
    finally:
        await bridge.close()
    bridge = await _bridge(tmp_path)  # a new bridge on the same path: the history is on disk
    try:
        assert await ask(bridge, "And at night?", "The 12") == "The 12"
        history = await FFChatMessageHistory(bridge, "dave", "chat-1").aget_messages()
        assert [(m.type, m.content) for m in history] == [("human", "Best tram?"), ("ai", "28"),
                                                         ("human", "And at night?"), ("ai", "The 12")]
    finally:
        await bridge.close()
