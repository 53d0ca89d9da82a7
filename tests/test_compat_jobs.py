"""Seed 001's job API: messages and file analyses as jobs, polled to a result, per user."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from parley.providers.base import ProviderError
from parley.providers.scripted import ScriptedProvider
from tests import corpus
from tests.conftest import Server, serve
from tests.identity import client_as


async def poll(client: httpx.AsyncClient, job_id: str) -> tuple[list[str], dict[str, Any]]:
    """Poll a job like the seed's frontend does; returns the statuses seen and the final job."""
    seen: list[str] = []
    for _ in range(500):
        job = (await client.get(f"/messages/{job_id}")).json()
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        if job["status"] in ("done", "error"):
            return seen, job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never finished: {seen}")


async def test_a_message_is_a_job_polled_to_its_result(settings_for) -> None:
    async with serve(settings_for(model="scripted:echo?delay_ms=40")) as server:
        response = await server.client.post("/messages", json={"message": "what is the capital of France"})
        assert response.status_code == 202
        job = response.json()
        assert job["status"] in ("pending", "processing")  # an idle session starts it at once
        assert job["type"] == "message"
        seen, final = await poll(server.client, job["job_id"])
        assert seen[-1] == "done"
        assert "processing" in seen
        assert set(seen) <= {"pending", "processing", "done"}
        assert final["result"] == "what is the capital of France"
        assert final["error"] is None


async def test_messages_share_one_session_and_queue_in_order(server: Server) -> None:
    jobs = [
        (await server.client.post("/messages", json={"message": f"message {i}"})).json() for i in range(3)
    ]
    finals = [(await poll(server.client, j["job_id"]))[1] for j in jobs]
    assert [f["result"] for f in finals] == ["message 0", "message 1", "message 2"]
    history = (await server.client.get("/chat/history")).json()
    assert [(m["role"], m["content"]) for m in history["messages"]] == [
        (role, f"message {i}") for i in range(3) for role in ("user", "assistant")
    ]
    assert [j["job_id"] for j in history["jobs"]] == [j["job_id"] for j in jobs]
    assert (await server.client.get("/v1/threads")).json()["data"][0]["title"] == "Chat"


async def test_a_file_upload_is_analysed_as_a_job(server: Server) -> None:
    response = await server.client.post(
        "/files", files={"file": ("minutes.pdf", corpus.text_pdf("Budget approved for Q3"))}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["type"] == "file"
    assert job["file"]["name"] == "minutes.pdf"
    assert job["file_id"] == job["file"]["id"]
    _, final = await poll(server.client, job["job_id"])
    assert final["status"] == "done"
    assert "Budget approved for Q3" in final["result"]
    assert 'Analyse the file "minutes.pdf"' in final["input"]
    history = (await server.client.get("/chat/history")).json()
    assert [f["id"] for f in history["files"]] == [job["file_id"]]
    assert history["files"][0]["thread_id"] is not None


async def test_a_refused_upload_makes_no_job_and_no_session(server: Server) -> None:
    response = await server.client.post("/files", files={"file": ("cv.pdf", corpus.WINDOWS_EXE)})
    assert response.status_code == 415
    body = response.json()
    assert body["success"] is False  # the seed's documented error shape
    assert "Windows" in body["error"]
    assert body["code"] == "unsupported_file_type"
    assert (await server.client.get("/chat/history")).json() == {"messages": [], "jobs": [], "files": []}
    assert (await server.client.get("/v1/threads")).json()["data"] == []
    refused = await server.client.post("/messages", json={})
    assert refused.status_code == 422
    assert refused.json() == {"success": False, "error": "message: Field required", "code": "invalid_request"}
    assert (await server.client.post("/messages", json={"message": ""})).status_code == 422
    assert (await server.client.get("/messages/run_nope")).status_code == 404


async def test_a_failing_provider_ends_the_job_with_error(settings_for) -> None:
    failing = ScriptedProvider(turns=[[ProviderError("the model is down", code="upstream_down")]])
    settings = settings_for(
        model="scripted:down", fallback_message="The assistant is resting; try again soon."
    )
    async with serve(settings, providers={"scripted:down": failing}) as server:
        job = (await server.client.post("/messages", json={"message": "hello"})).json()
        _, final = await poll(server.client, job["job_id"])
        assert final["status"] == "error"
        assert final["result"] is None
        # The user sees the operator's friendly message, never the upstream's raw error.
        assert final["error"]["message"] == "The assistant is resting; try again soon."


async def test_clear_deletes_messages_jobs_and_files(server: Server) -> None:
    job = (await server.client.post("/messages", json={"message": "remember me"})).json()
    await poll(server.client, job["job_id"])
    upload = (await server.client.post("/files", files={"file": ("a.txt", b"some notes")})).json()
    await poll(server.client, upload["job_id"])
    directory = server.parley.files.directory
    assert len(list(directory.iterdir())) == 1
    cleared = (await server.client.delete("/chat/clear")).json()
    assert cleared == {"cleared": True, "messages": 4, "files": 1}
    assert (await server.client.get("/chat/history")).json() == {"messages": [], "jobs": [], "files": []}
    assert list(directory.iterdir()) == []
    assert (await server.client.get(f"/messages/{job['job_id']}")).status_code == 404
    again = (await server.client.post("/messages", json={"message": "fresh start"})).json()
    assert (await poll(server.client, again["job_id"]))[1]["result"] == "fresh start"


async def test_each_user_has_their_own_session(server: Server) -> None:
    async with client_as(server, "alice") as alice, client_as(server, "bob") as bob:
        await poll(alice, (await alice.post("/messages", json={"message": "alice here"})).json()["job_id"])
        await poll(bob, (await bob.post("/messages", json={"message": "bob here"})).json()["job_id"])
        assert [m["content"] for m in (await alice.get("/chat/history")).json()["messages"]] == [
            "alice here"
        ] * 2
        assert [m["content"] for m in (await bob.get("/chat/history")).json()["messages"]] == ["bob here"] * 2
