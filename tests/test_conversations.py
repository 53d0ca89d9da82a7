"""The Conversations API (``/v1/conversations``), driven by the official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from parley.config import Settings
from parley.providers.base import TextDelta, ToolCallDelta
from parley.providers.scripted import ScriptedProvider
from tests.conftest import Server
from tests.test_responses import WEATHER, scripted, sdk, threads_of


async def test_a_conversation_is_created_read_updated_and_deleted(server: Server) -> None:
    client = await sdk(server)
    conversation = await client.conversations.create(
        items=[{"role": "user", "content": "Remember the number 7."}], metadata={"topic": "numbers"}
    )
    assert conversation.metadata == {"topic": "numbers"}
    assert (await client.conversations.retrieve(conversation.id)).id == conversation.id
    updated = await client.conversations.update(conversation.id, metadata={"topic": "digits"})
    assert updated.metadata == {"topic": "digits"}
    # It is a thread of the user's: the web UI lists it.
    assert [t["id"] for t in await threads_of(server)] == [conversation.id]
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)
    assert await threads_of(server) == []


async def test_responses_in_a_conversation_add_their_items(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("Noted.")], [TextDelta("It was 7.")]])
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        conversation = await client.conversations.create(items=[{"role": "system", "content": "Be terse."}])
        first = await client.responses.create(
            model="general", input="Remember the number 7.", conversation=conversation.id
        )
        assert first.conversation is not None
        assert first.conversation.id == conversation.id
        second = await client.responses.create(
            model="general", input="Which number was it?", conversation={"id": conversation.id}
        )
        assert second.output_text == "It was 7."
        sent = [(m.role, m.content) for m in provider.requests[-1].messages]
        assert sent[-4:-1] == [
            ("system", "Be terse."),
            ("user", "Remember the number 7."),
            ("assistant", "Noted."),
        ]
        assert sent[-1][0] == "user"
        assert sent[-1][1].endswith("Which number was it?")  # after memory facts
        items = await client.conversations.items.list(conversation.id, order="asc")
        seen = [(i.role, i.content[0].text) for i in items.data]  # type: ignore[union-attr]
        assert seen == [
            ("system", "Be terse."),
            ("user", "Remember the number 7."),
            ("assistant", "Noted."),
            ("user", "Which number was it?"),
            ("assistant", "It was 7."),
        ]
        # Newest first by default, in pages.
        page = await client.conversations.items.list(conversation.id, limit=2)
        assert [i.content[0].text for i in page.data] == ["It was 7.", "Which number was it?"]  # type: ignore[union-attr]
        assert page.has_more
        rest = await client.conversations.items.list(conversation.id, limit=10, after=page.data[-1].id)
        assert [i.role for i in rest.data] == ["assistant", "user", "system"]  # type: ignore[union-attr]
        assert not rest.has_more
        everything = [item.id async for item in client.conversations.items.list(conversation.id, limit=2)]
        assert len(everything) == 5


async def test_items_are_added_read_and_deleted(server: Server) -> None:
    client = await sdk(server)
    conversation = await client.conversations.create()
    added = await client.conversations.items.create(
        conversation.id,
        items=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"sky": "sunny"}'},
        ],
    )
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output"]
    call = added.data[1]
    fetched = await client.conversations.items.retrieve(call.id, conversation_id=conversation.id)
    assert fetched.type == "function_call"
    assert (fetched.call_id, fetched.name) == ("call_1", "get_weather")  # type: ignore[union-attr]
    after = await client.conversations.items.delete(call.id, conversation_id=conversation.id)
    assert after.id == conversation.id
    left = await client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in left.data] == ["message", "function_call_output"]
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(call.id, conversation_id=conversation.id)
    with pytest.raises(openai.UnprocessableEntityError):
        await client.conversations.items.create(
            conversation.id, items=[{"type": "web_search_call", "id": "x"}]
        )
    assert len((await client.conversations.items.list(conversation.id)).data) == 2


async def test_a_tool_round_trip_inside_a_conversation(settings_for: Callable[..., Settings]) -> None:
    provider = ScriptedProvider(
        turns=[[ToolCallDelta(0, "call_7", "get_weather", '{"city": "Oslo"}')], [TextDelta("Sunny.")]]
    )
    async with scripted(settings_for, provider) as server:
        client = await sdk(server)
        conversation = await client.conversations.create()
        first = await client.responses.create(
            model="general",
            input="Weather in Oslo?",
            tools=[WEATHER],
            conversation=conversation.id,  # type: ignore[list-item]
        )
        call = next(i for i in first.output if i.type == "function_call")
        second = await client.responses.create(
            model="general",
            tools=[WEATHER],  # type: ignore[list-item]
            conversation=conversation.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        )
        assert second.output_text == "Sunny."
        items = await client.conversations.items.list(conversation.id, order="asc")
        assert [i.type for i in items.data] == ["message", "function_call", "function_call_output", "message"]


async def test_a_bad_conversation_request_stores_nothing(server: Server) -> None:
    client = await sdk(server)
    with pytest.raises(openai.UnprocessableEntityError):
        await client.conversations.create(items=[{"role": "user", "content": [{"type": "input_image"}]}])
    with pytest.raises(openai.UnprocessableEntityError):
        await client.conversations.create(metadata={"k": "v" * 600})
    assert await threads_of(server) == []
