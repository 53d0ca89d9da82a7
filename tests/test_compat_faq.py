"""Seed 004's API: ``POST /api/v1/ask`` and ``GET /api/v1/history`` over the support assistant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import pytest

from parley.config import Settings
from parley.providers.base import ProviderError, TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.conftest import Server, serve
from tests.knowledge_data import FAQ


@pytest.fixture
def faq_settings(settings_for: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    (tmp_path / "faq.md").write_text(FAQ)

    def make(**overrides: object) -> Settings:
        return settings_for(embeddings="hash", knowledge={"parley-faq": [tmp_path / "faq.md"]}, **overrides)

    return make


@pytest.fixture
async def faq_server(faq_settings: Callable[..., Settings]) -> AsyncIterator[Server]:
    async with serve(faq_settings()) as handle:
        yield handle


async def test_ask_answers_from_the_faq_and_history_lists_it(faq_server: Server) -> None:
    c = faq_server.client
    first = await c.post("/api/v1/ask", json={"question": "What is the refund policy?"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"answer", "question_id", "timestamp", "processing_time"}
    assert (
        "Annual plans are refunded in full within 30 days" in body["answer"]
    )  # scripted:echo shows the context
    assert isinstance(body["question_id"], int)
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert isinstance(body["processing_time"], int)
    assert body["processing_time"] >= 0

    second = await c.post(
        "/api/v1/ask", json={"question": "How do I reset my password?", "context_method": "keyword"}
    )
    assert second.json()["question_id"] > body["question_id"]

    history = (await c.get("/api/v1/history")).json()
    assert (history["count"], history["total"]) == (2, 2)
    assert [e["question"] for e in history["entries"]] == [
        "How do I reset my password?",
        "What is the refund policy?",
    ]
    entry = history["entries"][1]
    assert set(entry) == {"id", "question", "answer", "timestamp", "processing_time"}
    assert (entry["id"], entry["answer"]) == (body["question_id"], body["answer"])

    only = (await c.get("/api/v1/history", params={"search": "refund", "n": 10})).json()
    assert (only["count"], only["total"]) == (1, 2)
    assert only["entries"][0]["question"] == "What is the refund policy?"
    assert (await c.get("/api/v1/history", params={"n": 1})).json()["count"] == 1

    # Each question is a run of the support assistant, visible in the native API too.
    threads = (await c.get("/v1/threads")).json()["data"]
    assert {t["assistant"] for t in threads} == {"support"}
    assert len(threads) == 2


async def test_an_unrelated_question_gets_i_dont_know(faq_server: Server) -> None:
    response = await faq_server.client.post("/api/v1/ask", json={"question": "Who won the 1998 world cup?"})
    assert response.status_code == 200
    assert response.json()["answer"].startswith("I don't know")


async def test_context_method_all_gives_the_model_the_first_entries(
    faq_settings: Callable[..., Settings],
) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Open Settings and choose Security [1].")]])
    async with serve(faq_settings(model="scripted:test"), {"scripted:test": model}) as server:
        response = await server.client.post(
            "/api/v1/ask", json={"question": "Tell me about bread baking", "context_method": "all"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == "Open Settings and choose Security [1]."
    prompt = model.requests[0].messages[-1].content
    assert "[1] Q: How do I reset my password?" in prompt
    assert "[3] Q: Which payment methods" in prompt


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"question": "hi"}, 400),
        ({"question": "   a   "}, 400),
        ({"question": "x" * 1001}, 400),
        ({}, 422),
        ({"question": 42}, 422),
        ({"question": "What is the refund policy?", "context_method": "vector"}, 422),
    ],
)
async def test_invalid_questions_are_refused_and_not_logged(
    faq_server: Server, body: dict, status: int
) -> None:
    response = await faq_server.client.post("/api/v1/ask", json=body)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert (await faq_server.client.get("/api/v1/history")).json()["total"] == 0


async def test_malformed_json_is_a_400(faq_server: Server) -> None:
    response = await faq_server.client.post(
        "/api/v1/ask", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("params", [{"n": 0}, {"n": 101}, {"search": "a"}, {"n": "ten"}])
async def test_invalid_history_queries_are_422(faq_server: Server, params: dict) -> None:
    assert (await faq_server.client.get("/api/v1/history", params=params)).status_code == 422


async def test_503_when_no_model_is_available(faq_settings: Callable[..., Settings]) -> None:
    down = ScriptedProvider(
        turns=[[ProviderError("connection refused", retryable=True, code="provider_unavailable")]]
    )
    async with serve(faq_settings(model="scripted:down"), {"scripted:down": down}) as server:
        # An FAQ entry's answer needs no model (the server composes it); "all" context does.
        response = await server.client.post(
            "/api/v1/ask", json={"question": "What is the refund policy?", "context_method": "all"}
        )
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "model_unavailable"
        assert (await server.client.get("/api/v1/history")).json()["total"] == 0
    async with serve(faq_settings(model="nosuch:model")) as server:
        response = await server.client.post("/api/v1/ask", json={"question": "What is the refund policy?"})
        assert response.status_code == 503, response.text


SEED_README_ASK = r"""curl -X POST http://localhost:8000/api/v1/ask \
     -H "Content-Type: application/json" \
     -d '{"question": "What is your refund policy?"}'"""


async def test_the_seed_readme_ask_command_works_as_written_on_the_default_knowledge(
    settings_for: Callable[..., Settings],
) -> None:
    """Seed 004's README command on a server with the default (demo) knowledge: Parley's FAQ has
    no refund policy, so the answer says it does not know and what it can answer instead."""
    import asyncio
    import json
    import subprocess

    async with serve(settings_for(embeddings="hash", knowledge=None)) as server:
        command = SEED_README_ASK.replace("http://localhost:8000", server.url)
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", command], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert set(body) == {"answer", "question_id", "timestamp", "processing_time"}
    assert body["answer"].startswith("I don't know")
