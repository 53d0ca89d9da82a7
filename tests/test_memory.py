"""User memory: facts extracted from what users say, recalled into the prompt, listed and forgotten."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from parley.answers.remembered import recollection
from parley.assistants import BUILTIN, Assistant
from parley.context import MEMORY_HEADER
from parley.facts import extract, said_back
from parley.memory import MemoryFact, rank
from parley.providers.base import ProviderRequest, TextDelta
from parley.providers.scripted import ScriptedProvider
from parley.users import create_user
from tests.conftest import Server, serve
from tests.sse import new_thread, read_events


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        (
            "Hi, I'm Ana. I live in Lisbon and I work as a nurse.",
            {"name": "Name: Ana", "location": "Lives in Lisbon", "occupation": "Works as a nurse"},
        ),
        (
            "my name is ana and I'm allergic to peanuts, so be careful.",
            {"name": "Name: Ana", "allergy:peanuts": "Allergic to peanuts"},
        ),
        (
            "I love jazz and I hate country music.",
            {"likes:jazz": "Likes jazz", "likes:country-music": "Dislikes country music"},
        ),
        (
            "I'm vegetarian and I don't eat mushrooms.",
            {"diet:vegetarian": "Is vegetarian", "diet:no-mushrooms": "Does not eat or drink mushrooms"},
        ),
        (
            "You can call me Bob. My budget is 500 euros.",
            {"name": "Name: Bob", "budget": "Budget: 500 euros"},
        ),
        (
            "Good morning! I'm Rosa and I work as a nurse.",
            {"name": "Name: Rosa", "occupation": "Works as a nurse"},
        ),
        ("Please always answer in French.", {"reply-language": "Wants replies in French"}),
        ("My dog is called Rex.", {"relation:dog": "Dog's name: Rex"}),
        (
            "I prefer short answers. My favourite colour is teal.",
            {"prefers:short-answers": "Prefers short answers", "favourite:colour": "Favourite colour: teal"},
        ),
        (
            "Remember that my sister's wedding is on June 3.",
            {"note:their-sister-s-wedding-is-on-june-3": "Their sister's wedding is on June 3"},
        ),
    ],
)
def test_rules_extract_what_users_state_about_themselves(said: str, expected: dict[str, str]) -> None:
    assert {f.key: f.text for f in extract(said)} == expected


@pytest.mark.parametrize(
    "said",
    [
        "Do I like tea?",
        "What is my name?",
        "If I like it, I'll buy two.",
        "I'd like a coffee, please.",
        "Please call me tomorrow.",
        "Hi, I'm looking for a laptop.",
        "Good evening, I'm tired of this printer.",
        "I can't remember the title of that film.",
        "My friend said she lives in Paris.",
    ],
)
def test_rules_ignore_questions_requests_and_hypotheticals(said: str) -> None:
    assert extract(said) == []


def stored(text: str, kind: str, key: str, created: float = 0.0) -> MemoryFact:
    return MemoryFact(
        id=f"mem_{key}", kind=kind, key=key, value=text, text=text, created_at=created, updated_at=created
    )


def test_ranking_picks_the_facts_a_question_is_about_and_keeps_constraints() -> None:
    facts = [
        stored("Name: Ana", "name", "name"),
        stored("Allergic to peanuts", "constraint", "allergy:peanuts"),
        stored("Lives in Lisbon", "profile", "location"),
        stored("Likes jazz", "preference", "likes:jazz"),
        stored("Likes hiking in the mountains", "preference", "likes:hiking"),
        stored("Works as a nurse", "profile", "occupation"),
        stored("Favourite film: Alien", "preference", "favourite:film"),
        stored("Dog's name: Rex", "profile", "relation:dog"),
    ]
    assert {f.key for f in rank(facts, "what's the weather like where I live?", 3)} == {
        "location",
        "name",
        "allergy:peanuts",
    }
    assert "relation:dog" in {f.key for f in rank(facts, "what is my dog called?", 3)}
    assert "likes:jazz" in {f.key for f in rank(facts, "recommend some jazz albums", 3)}
    assert len(rank(facts, "hello", 8)) == 8


# -- over the API ------------------------------------------------------------------------


async def say(server: Server, thread: str, text: str) -> dict[str, Any]:
    frames = await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": text, "stream": True}
    )
    assert frames[-1].event == "run.completed", frames[-1].data
    await server.parley.context.idle()
    done: dict[str, Any] = frames[-1].json
    return done


async def memory(server: Server) -> list[dict[str, Any]]:
    response = await server.client.get("/v1/memory")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def latest_turn(request: ProviderRequest) -> str:
    """Remembered facts ride in the latest user turn (see ``parley.context``)."""
    return request.messages[-1].content


def whole(request: ProviderRequest) -> str:
    return "\n".join(m.content for m in request.messages)


async def test_facts_are_learned_linked_to_their_message_and_recalled_in_a_new_thread(
    settings_for: Any,
) -> None:
    provider = ScriptedProvider("echo")
    async with serve(settings_for(), providers={"scripted:echo": provider}) as server:
        first = await new_thread(server.client)
        await say(server, first, "Hi, I'm Ana. I'm allergic to peanuts.")
        facts = await memory(server)
        assert {f["text"] for f in facts} == {"Name: Ana", "Allergic to peanuts"}
        messages = (await server.client.get(f"/v1/threads/{first}/messages")).json()["data"]
        assert {f["message_id"] for f in facts} == {messages[0]["id"]}
        assert {f["thread_id"] for f in facts} == {first}

        second = await new_thread(server.client)
        await say(server, second, "What should I cook tonight?")
        prompt = latest_turn(provider.requests[-1])
        assert prompt == f"{MEMORY_HEADER}\n- Name: Ana\n- Allergic to peanuts\n\nWhat should I cook tonight?"

        await say(server, second, "Actually, my name is Anabela.")
        names = [f for f in await memory(server) if f["key"] == "name"]
        assert [f["text"] for f in names] == ["Name: Anabela"], "restated facts are updated, not duplicated"
        assert names[0]["thread_id"] == second


async def test_forgetting_a_fact_removes_it_from_memory_and_from_later_prompts(settings_for: Any) -> None:
    provider = ScriptedProvider("echo")
    async with serve(settings_for(), providers={"scripted:echo": provider}) as server:
        thread = await new_thread(server.client)
        await say(server, thread, "My name is Ana. I live in Porto.")
        facts = {f["key"]: f for f in await memory(server)}
        response = await server.client.delete(f"/v1/memory/{facts['location']['id']}")
        assert response.status_code == 204
        assert [f["key"] for f in await memory(server)] == ["name"]
        again = await server.client.delete(f"/v1/memory/{facts['location']['id']}")
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "not_found"

        other = await new_thread(server.client)
        await say(server, other, "Any plans for the weekend?")
        assert "Porto" not in whole(provider.requests[-1])
        assert "Name: Ana" in latest_turn(provider.requests[-1])

        assert (await server.client.delete("/v1/memory")).status_code == 204
        assert await memory(server) == []


async def test_no_one_sees_or_forgets_another_users_facts(server: Server) -> None:
    parley = server.parley
    bob = await create_user(parley.db, "bob")
    thread = await new_thread(server.client)
    await say(server, thread, "hello")
    messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
    [fact] = await parley.context.memory.remember(
        bob.user_id, thread, messages[0]["id"], extract("My name is Bob.")
    )
    assert await memory(server) == [], "the local admin does not see Bob's memory either"
    response = await server.client.delete(f"/v1/memory/{fact.id}")
    assert response.status_code == 404
    async with parley.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(MemoryFact)) == 1


async def test_a_user_can_turn_memory_off_and_on(settings_for: Any) -> None:
    provider = ScriptedProvider("echo")
    async with serve(settings_for(), providers={"scripted:echo": provider}) as server:
        thread = await new_thread(server.client)
        await say(server, thread, "My name is Ana.")
        off = await server.client.patch("/v1/memory/settings", json={"enabled": False})
        assert off.status_code == 200
        assert off.json()["enabled"] is False
        await say(server, thread, "I live in Porto.")
        assert [f["key"] for f in await memory(server)] == ["name"], "nothing learned while off"
        assert MEMORY_HEADER not in whole(provider.requests[-1]), "nothing recalled while off"
        on = await server.client.patch("/v1/memory/settings", json={"enabled": True})
        assert on.json()["enabled"] is True
        await say(server, thread, "I work as a baker.")
        assert {f["key"] for f in await memory(server)} == {"name", "occupation"}
        assert (await server.client.get("/v1/memory/settings")).json()["enabled"] is True


async def test_an_assistant_with_memory_off_neither_learns_nor_recalls(settings_for: Any) -> None:
    provider = ScriptedProvider("echo")
    async with serve(settings_for(), providers={"scripted:echo": provider}) as server:
        await say(server, await new_thread(server.client), "My name is Ana.")
        server.parley.assistants.add(
            Assistant(name="private", description="", instructions="Be brief.", options={"memory": False})
        )
        thread = await new_thread(server.client, "private")
        await say(server, thread, "I'm allergic to shellfish. What is my name?")
        assert [f["key"] for f in await memory(server)] == ["name"]
        assert MEMORY_HEADER not in whole(provider.requests[-1])


async def test_memory_off_for_the_whole_server(settings_for: Any) -> None:
    async with serve(settings_for(memory=False)) as server:
        await say(server, await new_thread(server.client), "My name is Ana.")
        assert await memory(server) == []
        assert (await server.client.get("/v1/memory/settings")).json() == {
            "object": "memory.settings",
            "enabled": False,
            "server_enabled": False,
        }


async def test_deleting_a_thread_forgets_what_was_learned_in_it(server: Server) -> None:
    kept, deleted = await new_thread(server.client), await new_thread(server.client)
    await say(server, kept, "My name is Ana.")
    await say(server, deleted, "I live in Porto.")
    assert (await server.client.delete(f"/v1/threads/{deleted}")).status_code == 204
    assert [f["key"] for f in await memory(server)] == ["name"]


async def test_bad_memory_requests_get_a_clear_4xx_and_change_nothing(server: Server) -> None:
    for body in ({"enabled": "maybe"}, {}, {"enabled": True, "extra": 1}):
        response = await server.client.patch("/v1/memory/settings", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_request"
    malformed = await server.client.patch(
        "/v1/memory/settings", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert (await server.client.get("/v1/memory/settings")).json()["enabled"] is True
    assert (await server.client.get("/v1/memory", params={"limit": 0})).status_code == 422
    assert (await server.client.get("/v1/memory", params={"before": "mem_nope"})).status_code == 404
    assert (await server.client.delete("/v1/memory/mem_nope")).status_code == 404


async def test_memory_lists_newest_first_in_pages(server: Server) -> None:
    thread = await new_thread(server.client)
    for statement in ("My name is Ana.", "I live in Porto.", "I work as a baker.", "I love jazz."):
        await say(server, thread, statement)
    first = (await server.client.get("/v1/memory", params={"limit": 3})).json()
    assert [f["key"] for f in first["data"]] == ["likes:jazz", "occupation", "location"]
    assert first["has_more"] is True
    rest = (
        await server.client.get("/v1/memory", params={"limit": 3, "before": first["data"][-1]["id"]})
    ).json()
    assert [f["key"] for f in rest["data"]] == ["name"]
    assert rest["has_more"] is False


class FactModel(ScriptedProvider):
    """A memory model answering with a fixed JSON document."""

    def __init__(self, answer: str) -> None:
        super().__init__("script", name="scripted:facts")
        self.answer = answer

    async def stream(self, request: ProviderRequest) -> Any:
        self.requests.append(request)
        yield TextDelta(self.answer)


@pytest.mark.parametrize(
    ("answer", "learned"),
    [
        (
            '{"facts": [{"kind": "constraint", "key": "allergy:latex", "value": "latex", '
            '"text": "Allergic to latex"}]}',
            {"allergy:latex"},
        ),
        ("I could not find any facts, sorry!", {"location"}),
    ],
    ids=["model", "bad-answer-falls-back-to-rules"],
)
async def test_a_memory_model_extracts_facts_and_rules_are_the_fallback(
    settings_for: Any, answer: str, learned: set[str]
) -> None:
    model = FactModel(answer)
    async with serve(
        settings_for(memory_model="scripted:facts"), providers={"scripted:facts": model}
    ) as server:
        await say(server, await new_thread(server.client), "I live in Porto and latex gives me a rash.")
        assert {f["key"] for f in await memory(server)} == learned
        assert model.requests[0].response_schema is not None


# -- a small model -----------------------------------------------------------------------


async def test_a_small_model_never_sees_the_users_facts_and_the_server_says_them_back(
    settings_for: Any,
) -> None:
    """SmolLM2, given "Name: Ana" in its prompt, greeted the user with "Hi, I'm Ana, the friendly
    AI chatbot", and asked "what is my name?" answered "I'm Anana". A model that cannot choose
    its tools gets no facts; a question about them is answered from what the user said, here
    and in other threads, and anything else is still the model's."""
    small = ScriptedProvider(turns=[[TextDelta("Hello there!")]] * 4, chooses_tools=False)
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small}) as server:
        first = await new_thread(server.client)
        introduced = await say(server, first, "Hi, I'm Ana. I'm allergic to peanuts.")
        second = await new_thread(server.client)
        hello = await say(server, second, "hi")
        cook = await say(server, second, "what should I cook tonight?")
        name = await say(server, second, "what is my name?")
        allergy = await say(server, second, "am I allergic to anything?")
        everything = await say(server, second, "what do you know about me?")
    # SmolLM2 answered an introduction with "Hi there! I'm Sam, the friendly AI chatbot".
    assert introduced["text"] == "Nice to meet you, Ana! I'll remember that you are allergic to peanuts."
    assert hello["text"] == BUILTIN["general"].options["greeting"], "small talk is the server's"
    assert all(MEMORY_HEADER not in whole(request) for request in small.requests)
    assert "Ana" not in whole(small.requests[0]), "the model's prompt has no name to take for its own"
    assert name["text"] == "You told me your name is Ana."
    assert allergy["text"] == "You told me you are allergic to peanuts."
    assert everything["text"] == "You told me:\n- your name is Ana\n- you are allergic to peanuts"
    assert cook["text"] == "Hello there!", "a question that asks for no fact is the model's"
    assert len(small.requests) == 1  # "what should I cook tonight?"


async def test_a_small_model_asked_what_it_was_never_told_says_so(settings_for: Any) -> None:
    """Asked "what is my name?" by someone who never said it, SmolLM2 answered "My name is
    Parley". With memory off the user's own words in this conversation still count."""
    small = ScriptedProvider(turns=[[TextDelta("My name is Parley.")]] * 3, chooses_tools=False)
    settings = settings_for(model="scripted:small", memory=False)
    async with serve(settings, providers={"scripted:small": small}) as server:
        thread = await new_thread(server.client)
        unknown = await say(server, thread, "what is my name?")
        introduced = await say(server, thread, "My name is Bo. I work as a nurse.")
        known = await say(server, thread, "what's my name?")
    assert unknown["text"] == "I don't know your name: you haven't told me in this conversation."
    assert introduced["text"] == "Nice to meet you, Bo! Noted: you work as a nurse."  # memory is off
    assert known["text"] == "You told me your name is Bo."
    assert small.requests == []


def test_a_question_asks_for_a_fact_only_by_the_facts_own_words() -> None:
    stated = extract(
        "Hi, I'm Marta. My dog is called Pixel. I'm allergic to sesame. I live in Tallinn. "
        "I work as a marine biologist."
    )
    answered = {
        question: recollection(question, stated, remembering=True)
        for question in (
            "What is my name?",
            "What is my dog called?",
            "Which food am I allergic to?",
            "am I allergic to sesame?",  # whether it holds: its value counts
            "where do I live?",
            "What do I do for a living?",
            "how do I make sesame noodles?",  # the allergy's value, not a question about it
            "what is a good name for my dog?",  # asks for something new
            "tell me a joke about my dog",
            "What is the capital of France?",
        )
    }
    assert answered == {
        "What is my name?": "You told me your name is Marta.",
        "What is my dog called?": "You told me your dog's name is Pixel.",
        "Which food am I allergic to?": "You told me you are allergic to sesame.",
        "am I allergic to sesame?": "You told me you are allergic to sesame.",
        "where do I live?": "You told me you live in Tallinn.",
        "What do I do for a living?": "You told me you work as a marine biologist.",
        "how do I make sesame noodles?": None,
        "what is a good name for my dog?": None,
        "tell me a joke about my dog": None,
        "What is the capital of France?": None,
    }


async def test_a_small_models_claims_about_what_the_user_said_are_checked(settings_for: Any) -> None:
    """Asked something about themselves the server could not answer ("What city am I in?"),
    SmolLM2 copied the server's "You told me …" replies from the history and made the rest up:
    "You told me you are in New York." A claim the user's words do not support is not shown."""
    small = ScriptedProvider(
        turns=[
            [TextDelta("You told me you are in New York.")],
            [TextDelta("You told me:\n- your name is Marta\n- you are a pilot")],
            [TextDelta("You told me you can't eat anything.")],
        ],
        chooses_tools=False,
    )
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small}) as server:
        thread = await new_thread(server.client)
        await say(server, thread, "Hi, I'm Marta.")
        city = await say(server, thread, "What city am I in?")
        listed = await say(server, thread, "tell me everything I said")
        asked = await say(server, thread, "what can't I eat?")
    assert city["text"] == "I don't know that about you: you haven't told me."
    assert asked["text"] == city["text"], "the user's question is not something they said"
    assert listed["text"].rstrip() == "You told me:\n- your name is Marta"


def test_a_fact_is_said_back_in_the_second_person() -> None:
    """Stored in the third person ("Their boss calls them Teddy"), said to the user in the second."""
    said = [
        said_back(f.text)
        for f in extract("I'm vegetarian. My dog is called Pixel. Remember that my boss calls me Teddy.")
    ]
    assert said == ["you are vegetarian", "your dog's name is Pixel", "your boss calls you Teddy"]
