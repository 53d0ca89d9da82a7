"""Grounded answers: retrieval before the model, sources on the run, citations, "I don't know"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from parley.assistants import BUILTIN, Assistant
from parley.config import Settings
from parley.knowledge.grounding import NO_ANSWER, SNIPPET_CHARS, small_talk, small_talk_reply, snippet
from parley.providers.base import TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.conftest import Server, serve
from tests.knowledge_data import FAQ, GUIDE, make_demo_cvs
from tests.sse import assert_contiguous, kinds, new_thread, read_events, start_run

ROOT = Path(__file__).resolve().parents[1]
FAQ_FILE = ROOT / "parley" / "knowledge" / "demo" / "parley-faq.md"


def settings(settings_for: Callable[..., Settings], tmp_path: Path, **overrides: object) -> Settings:
    (tmp_path / "faq.md").write_text(FAQ)
    return settings_for(embeddings="hash", knowledge={"parley-faq": [tmp_path / "faq.md"]}, **overrides)


async def test_the_support_assistant_retrieves_cites_and_records_its_sources(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    async with serve(settings(settings_for, tmp_path)) as server:
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "What is your refund policy?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert_contiguous(frames)
    assert [f.event for f in frames[:2]] == ["run.started", "retrieval"]
    sources = frames[1].json["sources"]
    assert sources[0]["title"] == "What is the refund policy?"
    assert set(sources[0]) == {"document", "chunk", "score", "title", "snippet"}
    assert sources[0]["snippet"].startswith("Q: What is the refund policy? A: Annual plans are refunded")
    # The best source is an FAQ entry: its answer is the answer, cited; no model writes it.
    text = frames[-1].json["text"]
    assert text == (
        "Annual plans are refunded in full within 30 days of purchase.\nMonthly plans are not refunded [1]."
    )
    assert frames[-1].event == "run.completed"
    assert frames[-1].json["sources"] == sources


async def test_context_goes_into_the_user_turn_and_the_message_keeps_the_sources(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    model = ScriptedProvider(turns=[[TextDelta("Tomatoes need six hours of sun a day [1].")]])
    config = settings_for(
        embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}, model="scripted:test"
    )
    async with serve(config, {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "How much sun do tomatoes need?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
    request = model.requests[0]
    assert request.messages[0].role == "system"
    assert "support assistant" in request.messages[0].content
    user_turn = request.messages[-1]
    assert user_turn.role == "user"
    assert "[1] Gardening guide > Tomatoes\nTomatoes need six hours" in user_turn.content
    assert user_turn.content.rstrip().endswith("say you don't know.")
    assert frames[-1].json["text"] == "Tomatoes need six hours of sun a day [1]."  # supported and cited
    assert messages[0]["content"] == "How much sun do tomatoes need?"  # history keeps the user's own words
    assert messages[1]["sources"] == frames[-1].json["sources"] != []


async def test_a_supported_sentence_without_a_citation_gets_its_source_cited(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    model = ScriptedProvider(turns=[[TextDelta("Prune roses in late winter.")]])
    config = settings_for(
        embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}, model="scripted:test"
    )
    async with serve(config, {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "When should I prune roses?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    text = frames[-1].json["text"]
    number = next(
        n for n, s in enumerate(frames[-1].json["sources"], start=1) if s["title"].endswith("Roses")
    )
    assert text == f"Prune roses in late winter [{number}]."
    assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == text


async def test_below_the_relevance_floor_it_says_it_does_not_know_without_the_model(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Lima, obviously.")]])
    async with serve(
        settings(settings_for, tmp_path, model="scripted:test"), {"scripted:test": model}
    ) as server:
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "What is the capital of Peru?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        final = (await server.client.get(f"/v1/runs/{run['id']}")).json()
    assert [f.event for f in frames] == ["run.started", "retrieval", "message.delta", "run.completed"]
    assert frames[1].json == {"sources": []}
    assert frames[-1].json["text"].startswith(NO_ANSWER)
    assert final["status"] == "completed"
    assert final["output"] == frames[-1].json["text"]
    assert model.requests == []  # nothing was invented


async def test_small_talk_gets_a_reply_without_the_model(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Invented.")]])
    async with serve(
        settings(settings_for, tmp_path, model="scripted:test"), {"scripted:test": model}
    ) as server:
        replies = {}
        for assistant, text in [
            ("support", "Hello!"),
            ("support", "thank you so much"),
            ("support", "ok, bye"),
            ("recruiter", "hi there, how are you?"),
        ]:
            thread = await new_thread(server.client, assistant)
            run = await start_run(server.client, thread, text)
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
            assert kinds(frames) == ["run.started", "retrieval", "message.delta", "run.completed"]
            replies[text] = frames[-1].json["text"]
    assert replies == {
        "Hello!": BUILTIN["support"].options["greeting"],
        "thank you so much": "You're welcome! Ask me anything else you need.",
        "ok, bye": "Goodbye! Come back whenever you have a question.",
        "hi there, how are you?": BUILTIN["recruiter"].options["greeting"],
    }
    assert model.requests == []


async def test_a_small_model_asked_who_it_is_gets_the_assistants_own_greeting(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """SmolLM2 answered "hi, who are you?" with "I'should be your friendly parceler", and "hello"
    with "Welcome to my world of magic": with a model too small to choose tools, the server says
    what the assistant is, and answers small talk. A capable model answers for itself, and a
    question that only starts like one is the model's."""

    async def ask(server: Server, text: str) -> str:
        thread = await new_thread(server.client, "general")
        run = await start_run(server.client, thread, text)
        return str((await read_events(server.client, f"/v1/runs/{run['id']}/events"))[-1].json["text"])

    small = ScriptedProvider(turns=[[TextDelta("A parceler.")]], chooses_tools=False)
    async with serve(
        settings(settings_for, tmp_path, model="scripted:small"), {"scripted:small": small}
    ) as server:
        texts = {
            t: await ask(server, t)
            for t in (
                "hi, who are you?",
                "what can you do?",
                "hello",
                "thanks!",
                "who are you talking about?",
            )
        }
    capable = ScriptedProvider(turns=[[TextDelta("I am a large model.")]])
    (tmp_path / "capable").mkdir()
    config = settings(settings_for, tmp_path / "capable", model="scripted:capable")
    async with serve(config, {"scripted:capable": capable}) as server:
        said = await ask(server, "who are you?")
    greeting = BUILTIN["general"].options["greeting"]
    assert texts == {
        "hi, who are you?": greeting,
        "what can you do?": greeting,
        "hello": greeting,
        "thanks!": "You're welcome! Ask me anything else you need.",
        "who are you talking about?": "A parceler.",
    }
    assert "small model" in greeting
    assert len(small.requests) == 1
    assert said == "I am a large model."


def test_small_talk_is_only_small_talk() -> None:
    assert [
        small_talk(t)
        for t in ("hey", "Good morning!", "thanks a lot", "bye for now", "how are you?", "hi, who are you?")
    ] == [
        "greeting",
        "greeting",
        "thanks",
        "farewell",
        "greeting",
        "greeting",
    ]
    # Questions, however short or friendly, are looked up (and declined when nothing fits).
    for text in (
        "Who knows Python?",
        "hello, who knows Python?",
        "hi, what is your refund policy",
        "what can you do about my refund?",
        "who are you talking about?",
        "help",
        "",
    ):
        assert small_talk(text) is None, text
    custom = Assistant(name="hr", description="Answers questions about our leave policy.", instructions="")
    assert small_talk_reply("greeting", custom) == (
        "Hello! I'm the hr assistant. Answers questions about our leave policy. What would you like to know?"
    )


async def test_a_small_model_asked_for_arithmetic_gets_the_servers_result(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """SmolLM2 answered "what is 12 times 7?" with "12 x 7 = 90 days … 72 total days". With a
    model too small to choose tools, the server works out what is only arithmetic; anything
    else with numbers in it is still the model's."""
    small = ScriptedProvider(turns=[[TextDelta("Twelve a day.")]], chooses_tools=False)
    async with serve(
        settings(settings_for, tmp_path, model="scripted:small"), {"scripted:small": small}
    ) as server:
        thread = await new_thread(server.client, "general")
        texts = []
        for text in (
            "what is 12 times 7?",
            "how much is 15% of 80?",
            "what is 5 / 0",
            "what is 12 times a day?",
        ):
            run = await start_run(server.client, thread, text, multitask="enqueue")
            texts.append((await read_events(server.client, f"/v1/runs/{run['id']}/events"))[-1].json["text"])
    assert texts == [
        "12 \u00d7 7 = 84",
        "15% of 80 = 12",
        "5 \u00f7 0 has no answer: a number cannot be divided by zero.",
        "Twelve a day.",
    ]
    assert len(small.requests) == 1


async def test_an_assistant_whose_knowledge_base_is_missing_declines(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(embeddings="hash")) as server:
        thread = await new_thread(server.client, "recruiter")
        run = await start_run(server.client, thread, "Who knows Python?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert frames[-1].event == "run.completed"
    assert frames[-1].json["text"] == 'I don\'t know: my knowledge base says nothing about "Python".'


async def test_assistants_without_knowledge_are_unchanged(server) -> None:
    thread = await new_thread(server.client, "general")
    run = await start_run(server.client, thread, "hello there")
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert kinds(frames) == ["run.started", "message.delta", "run.completed"]
    assert frames[-1].json["text"] == "hello there"
    assert frames[-1].json["sources"] == []


async def test_the_demo_faq_is_synced_at_start_and_again_is_unchanged(
    settings_for: Callable[..., Settings],
) -> None:
    config = settings_for(embeddings="hash", knowledge={"parley-faq": [FAQ_FILE]})
    async with serve(config) as server:
        bases = (await server.client.get("/v1/knowledge-bases")).json()["data"]
        assert [(b["name"], b["documents"]) for b in bases] == [("parley-faq", 1)]
        docs = (await server.client.get(f"/v1/knowledge-bases/{bases[0]['id']}/documents")).json()["data"]
        assert docs[0]["format"] == "faq"
        assert docs[0]["chunks"] >= 30
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "How do I cancel a run?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        assert frames[1].json["sources"][0]["title"] == "How do I cancel a run that is taking too long?"
    async with serve(config) as server:
        again = (await server.client.get("/v1/knowledge-bases")).json()["data"]
        assert [(b["id"], b["revision"]) for b in again] == [(bases[0]["id"], bases[0]["revision"])]


def test_a_snippet_is_the_start_of_the_passage_cut_at_a_word() -> None:
    assert snippet("Annual plans\n\n  are   refunded.") == "Annual plans are refunded."
    long = " ".join(f"word{i}" for i in range(200))
    cut = snippet(long)
    assert len(cut) <= SNIPPET_CHARS
    assert cut.endswith("\u2026")
    assert long.startswith(cut[:-1])
    assert long[len(cut) - 1] == " "  # ends on a whole word
    unbroken = "x" * 1000
    assert snippet(unbroken) == "x" * (SNIPPET_CHARS - 1) + "\u2026"


async def test_the_recruiter_answers_from_the_demo_cvs_the_repo_generates(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    cvs = tmp_path / "demo-cvs"
    make_demo_cvs(cvs)
    async with serve(settings_for(embeddings="hash", knowledge={"demo-cvs": [cvs]})) as server:
        bases = (await server.client.get("/v1/knowledge-bases")).json()["data"]
        assert [(b["name"], b["documents"]) for b in bases] == [("demo-cvs", 10)]
        docs = (await server.client.get(f"/v1/knowledge-bases/{bases[0]['id']}/documents")).json()["data"]
        assert {d["format"] for d in docs} == {"pdf"}
        assert all(d["chunks"] >= 1 for d in docs)
        thread = await new_thread(server.client, "recruiter")
        run = await start_run(server.client, thread, "Which candidate is a registered nurse in Sweden?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert [f.event for f in frames[:2]] == ["run.started", "retrieval"]
    sources = frames[1].json["sources"]
    assert 1 <= len(sources) <= 5  # the recruiter's top_k
    assert sources[0]["title"].startswith("Sofia Lindqvist")
    assert frames[-1].event == "run.completed"
    assert "Sofia Lindqvist" in frames[-1].json["text"]  # scripted:echo repeats the excerpts it was given
    assert frames[-1].json["sources"] == sources
