"""Attachments are context: a file attached to a message or a thread is read into the run, cited by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest

from parley.answers.attachments import wants_summary
from parley.config import Settings
from parley.providers.scripted import ScriptedProvider
from tests import corpus
from tests.conftest import Server, serve
from tests.identity import client_as, key_for
from tests.sse import new_thread, read_events, start_run

NOTES = (
    "Project Heron kickoff notes.\n\n"
    "The heron migration moves the billing service to the new cluster in March.\n\n"
    "Owner: Dana Okafor. Budget: 42,000 euros. Risks: the payment gateway certificate expires in April.\n"
)


@asynccontextmanager
async def recording(settings_for: Callable[..., Settings]) -> AsyncIterator[tuple[Server, ScriptedProvider]]:
    """A server whose model echoes the user turn and keeps the requests it was sent."""
    model = ScriptedProvider("echo", name="scripted:test")
    async with serve(settings_for(model="scripted:test"), {"scripted:test": model}) as server:
        yield server, model


async def upload(client: httpx.AsyncClient, name: str, content: bytes, **data: str) -> dict[str, Any]:
    response = await client.post("/v1/files", files={"file": (name, content)}, data=data)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def run_frames(client: httpx.AsyncClient, thread: str, text: str, **body: Any) -> list[Any]:
    run = await start_run(client, thread, text, **body)
    return await read_events(client, f"/v1/runs/{run['id']}/events")


async def test_a_file_attached_to_a_message_is_summarised_and_cited_by_name(
    settings_for: Callable[..., Settings],
) -> None:
    async with recording(settings_for) as (server, model):
        file = await upload(server.client, "heron-notes.txt", NOTES.encode())
        thread = await new_thread(server.client, "general")
        frames = await run_frames(
            server.client, thread, "Summarise the attached file", metadata={"files": [file["id"]]}
        )
    assert [f.event for f in frames[:2]] == ["run.started", "retrieval"]
    sources = frames[1].json["sources"]
    assert [s["title"] for s in sources] == ["heron-notes.txt"]
    assert sources[0]["document"] == file["id"]
    assert sources[0]["snippet"].startswith("Project Heron kickoff notes.")
    completed = frames[-1]
    assert completed.event == "run.completed"
    assert completed.json["sources"] == sources
    prompt = model.requests[0].messages[-1].content
    assert "Owner: Dana Okafor. Budget: 42,000 euros." in prompt
    assert "[1] heron-notes.txt" in prompt
    assert "Question: Summarise the attached file" in prompt
    assert "billing service to the new cluster" in completed.json["text"]  # echo: the model saw the file


async def test_the_default_echo_model_answers_from_the_attached_file(server: Server) -> None:
    file = await upload(server.client, "heron-notes.txt", NOTES.encode())
    thread = await new_thread(server.client)
    frames = await run_frames(server.client, thread, "tl;dr", metadata={"files": [file["id"]]})
    text = frames[-1].json["text"]
    assert "Dana Okafor" in text
    assert "heron-notes.txt" in text


async def test_a_question_gets_the_passages_of_the_file_that_match_it(
    settings_for: Callable[..., Settings],
) -> None:
    long_notes = "\n\n".join(
        [f"Section {n}. Routine status paragraph number {n} about weekly chores." for n in range(40)]
        + ["The vault combination is kept by the facilities manager, Priya Raman."]
    )
    async with recording(settings_for) as (server, model):
        file = await upload(server.client, "handbook.md", long_notes.encode())
        thread = await new_thread(server.client)
        frames = await run_frames(
            server.client, thread, "Who keeps the vault combination?", metadata={"files": [file["id"]]}
        )
    assert [s["title"] for s in frames[1].json["sources"]] == ["handbook.md"]  # the one chunk that matches
    prompt = model.requests[0].messages[-1].content
    assert "kept by the facilities manager, Priya Raman" in prompt
    assert "Section 0." not in prompt


async def test_a_file_uploaded_to_a_thread_is_used_by_its_later_runs(
    settings_for: Callable[..., Settings],
) -> None:
    async with recording(settings_for) as (server, model):
        thread = await new_thread(server.client)
        file = await upload(server.client, "heron-notes.txt", NOTES.encode(), thread_id=thread)
        assert file["thread_id"] == thread
        first = await run_frames(server.client, thread, "When does the certificate expire?")
        second = await run_frames(server.client, thread, "What is the weather like?")
        elsewhere = await run_frames(
            server.client, await new_thread(server.client), "When does the certificate expire?"
        )
    assert [s["title"] for s in first[1].json["sources"]] == ["heron-notes.txt"]
    assert "certificate expires in April" in model.requests[0].messages[-1].content
    assert "retrieval" not in [f.event for f in second]  # nothing in the file is about the weather
    assert "retrieval" not in [f.event for f in elsewhere]  # another thread: not attached there


async def test_a_file_attached_to_a_message_stays_with_the_conversation(
    settings_for: Callable[..., Settings],
) -> None:
    async with recording(settings_for) as (server, _):
        file = await upload(server.client, "heron-notes.txt", NOTES.encode())
        thread = await new_thread(server.client)
        await run_frames(
            server.client, thread, "Summarise the attached file", metadata={"files": [file["id"]]}
        )
        later = await run_frames(server.client, thread, "When does the gateway certificate expire?")
        listed = (await server.client.get("/v1/files", params={"thread_id": thread})).json()["data"]
    assert [f["id"] for f in listed] == [file["id"]]
    assert [s["title"] for s in later[1].json["sources"]] == ["heron-notes.txt"]
    assert "expires in April" in later[-1].json["text"]


async def test_a_file_cannot_be_uploaded_to_someone_elses_thread(server: Server) -> None:
    async with client_as(server, "alice") as alice, client_as(server, "bob") as bob:
        bobs_thread = await new_thread(bob)
        response = await alice.post(
            "/v1/files", files={"file": ("a.txt", b"alice's words")}, data={"thread_id": bobs_thread}
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
        assert (await alice.get("/v1/files")).json()["data"] == []
        missing = await alice.post(
            "/v1/files", files={"file": ("a.txt", b"alice's words")}, data={"thread_id": "thr_nope"}
        )
        assert missing.status_code == 404


async def test_another_users_file_is_never_read(settings_for: Callable[..., Settings]) -> None:
    async with (
        recording(settings_for) as (server, model),
        client_as(server, "alice") as alice,
        client_as(server, "bob") as bob,
    ):
        secret = await upload(bob, "bob-secret.txt", b"Bob's locker code is 7319.")
        thread = await new_thread(alice)
        frames = await run_frames(
            alice, thread, "Summarise the attached file", metadata={"files": [secret["id"], "file_nope"]}
        )
    assert frames[-1].event == "run.completed"
    assert "retrieval" not in [f.event for f in frames]
    assert frames[-1].json["sources"] == []
    assert "7319" not in model.requests[0].messages[-1].content
    assert "7319" not in frames[-1].json["text"]


async def test_an_image_attachment_is_ignored_without_error(server: Server) -> None:
    image = await upload(server.client, "photo.png", corpus.image("PNG"))
    notes = await upload(server.client, "heron-notes.txt", NOTES.encode())
    thread = await new_thread(server.client)
    only_image = await run_frames(
        server.client, thread, "What is in this picture?", metadata={"files": [image["id"]]}
    )
    both = await run_frames(
        server.client, thread, "Summarise the attached files", metadata={"files": [image["id"], notes["id"]]}
    )
    assert only_image[-1].event == "run.completed"
    assert "retrieval" not in [f.event for f in only_image]
    assert [s["title"] for s in both[1].json["sources"]] == ["heron-notes.txt"]
    assert both[-1].event == "run.completed"


async def test_an_assistant_with_a_knowledge_base_answers_from_an_attachment_instead_of_declining(
    settings_for: Callable[..., Settings], tmp_path: Any
) -> None:
    (tmp_path / "faq.md").write_text(
        "Q: What is the refund policy?\nA: Annual plans are refunded within 30 days.\n"
    )
    model = ScriptedProvider("echo", name="scripted:test")
    settings = settings_for(
        model="scripted:test", embeddings="hash", knowledge={"parley-faq": [tmp_path / "faq.md"]}
    )
    async with serve(settings, {"scripted:test": model}) as server:
        file = await upload(server.client, "heron-notes.txt", NOTES.encode())
        thread = await new_thread(server.client, "support")
        frames = await run_frames(
            server.client, thread, "What is the budget of Project Heron?", metadata={"files": [file["id"]]}
        )
    titles = [s["title"] for s in frames[1].json["sources"]]
    assert titles[0] == "heron-notes.txt"
    assert "42,000 euros" in frames[-1].json["text"]
    assert model.requests  # answered by the model, not declined


async def test_chat_completions_attach_a_file_content_part(settings_for: Callable[..., Settings]) -> None:
    async with recording(settings_for) as (server, model):
        async with client_as(server, "sdk-user") as raw:
            file = await upload(raw, "heron-notes.txt", NOTES.encode())
        client = openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key=await key_for(server, "sdk-user"), max_retries=0
        )
        completion = await client.chat.completions.create(
            model="general",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this document about?"},
                        {"type": "file", "file": {"file_id": file["id"]}},
                    ],
                }
            ],
        )
        async with client_as(server, "sdk-user") as raw:
            run = (await raw.get(f"/v1/runs/{(completion.model_extra or {})['parley']['run_id']}")).json()
    assert run["metadata"] == {"files": [file["id"]]}
    assert "Dana Okafor" in model.requests[0].messages[-1].content
    text = completion.choices[0].message.content or ""
    assert "heron-notes.txt" in text


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file": {"file_id": "file_unknown"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "hi.txt"}},
        "bobs",
    ],
    ids=["unknown-id", "inline-data", "someone-elses"],
)
async def test_chat_completions_refuse_a_file_that_is_not_the_callers(
    server: Server, part: dict[str, Any] | str
) -> None:
    async with client_as(server, "bob") as bob:
        bobs = await upload(bob, "bob.txt", b"Bob's words.")
    if part == "bobs":
        part = {"type": "file", "file": {"file_id": bobs["id"]}}
    async with client_as(server, "alice") as alice:
        response = await alice.post(
            "/v1/chat/completions",
            json={"model": "general", "messages": [{"role": "user", "content": [part]}]},
        )
        assert response.status_code in (404, 422), response.text
        assert response.json()["error"]["message"]
        assert (await alice.get("/v1/threads")).json()["data"] == []


def test_summary_requests_are_told_from_questions() -> None:
    for text in [
        "Summarise the attached file",
        "summarize this",
        "What is this document about?",
        "what's the attached pdf about",
        "tl;dr",
        "Give me an overview",
        "What are the key points?",
    ]:
        assert wants_summary(text), text
    for text in ["Who owns the project?", "When does the certificate expire?", "What is the budget?"]:
        assert not wants_summary(text), text
