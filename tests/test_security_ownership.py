"""Invariant 5: no user reaches another user's objects; every endpoint that takes an id says 404.

``MATRIX`` lists every such endpoint once. When a router adds an endpoint that takes an
id (or names an object in its body), add a row; the placeholders are the ids of the
objects user A owns (see ``objects_of_a``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import Server
from tests.identity import client_as
from tests.sse import new_thread, read_events, start_run


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)
    upload: bool = False


MATRIX: dict[str, Row] = {
    "read a thread": Row("GET", "/v1/threads/{thread}"),
    "rename a thread": Row("PATCH", "/v1/threads/{thread}", json={"title": "taken"}),
    "delete a thread": Row("DELETE", "/v1/threads/{thread}"),
    "read messages": Row("GET", "/v1/threads/{thread}/messages"),
    "start a run": Row("POST", "/v1/threads/{thread}/runs", json={"input": "hello"}),
    "read a run": Row("GET", "/v1/runs/{run}"),
    "stream events": Row("GET", "/v1/runs/{run}/events"),
    "resume events": Row("GET", "/v1/runs/{run}/events", params={"after": "1"}),
    "cancel a run": Row("POST", "/v1/runs/{run}/cancel"),
    "read a file": Row("GET", "/v1/files/{file}"),
    "delete a file": Row("DELETE", "/v1/files/{file}"),
    "upload into a thread": Row("POST", "/v1/files", upload=True),
    "seed 002: thread for a user": Row("POST", "/api/threads", json={"user_id": "{user_id}"}),
    "seed 002: post a message": Row("POST", "/api/threads/{thread}/messages", json={"content": "hi"}),
    "seed 002: read a run": Row("GET", "/api/runs/{run}"),
    "seed 002: stream events": Row("GET", "/api/runs/{run}/events"),
    "seed 002: cancel a run": Row("POST", "/api/runs/{run}/cancel"),
    "seed 001: read a job": Row("GET", "/messages/{job}"),
    "read a knowledge base": Row("GET", "/v1/knowledge-bases/{kb}"),
    "delete a knowledge base": Row("DELETE", "/v1/knowledge-bases/{kb}"),
    "list a knowledge base's documents": Row("GET", "/v1/knowledge-bases/{kb}/documents"),
    "add a document": Row(
        "POST", "/v1/knowledge-bases/{kb}/documents", json={"title": "t", "text": "mine now"}
    ),
    "delete a document": Row("DELETE", "/v1/knowledge-bases/{kb}/documents/{document}"),
    "search a knowledge base": Row("GET", "/v1/knowledge-bases/{kb}/search", params={"q": "secret"}),
    "forget a remembered fact": Row("DELETE", "/v1/memory/{fact}"),
    "rate an answer": Row("POST", "/v1/messages/{message}/feedback", json={"rating": -1}),
    "seed 003: chat in a conversation": Row(
        "POST", "/chat", json={"message": "hi", "conversation_id": "{thread}"}
    ),
    "seed 003: rate an answer": Row("POST", "/feedback", json={"message_id": "{message}", "rating": -1}),
    "seed 000: read a session": Row("GET", "/api/sessions/{thread}"),
    "seed 000: post a message": Row("POST", "/api/chat/{thread}/message", json={"message": "hi"}),
    "seed 000: stream a session": Row("GET", "/api/stream/{thread}"),
    "seed 000: read a cart": Row("GET", "/api/cart/{thread}"),
    "seed 000: empty a cart": Row("DELETE", "/api/cart/{thread}"),
    "seed 000: search as a session": Row(
        "POST", "/api/functions/search_products", json={"session_id": "{thread}", "query": "chair"}
    ),
    "seed 000: add to a cart": Row(
        "POST",
        "/api/functions/add_to_cart",
        json={"session_id": "{thread}", "product_id": "{product}", "quantity": 1},
    ),
    "seed 000: remove from a cart": Row(
        "POST", "/api/functions/remove_from_cart", json={"session_id": "{thread}", "product_id": "{product}"}
    ),
}


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def objects_of_a(client: httpx.AsyncClient) -> dict[str, Any]:
    thread = await new_thread(client)
    run = await start_run(client, thread, "my secret plans")
    await read_events(client, f"/v1/runs/{run['id']}/events")
    file = await client.post(
        "/v1/files", files={"file": ("plans.txt", b"the secret plans")}, data={"thread_id": thread}
    )
    assert file.status_code == 201, file.text
    job = await client.post("/messages", json={"message": "remember my secret"})
    assert job.status_code == 202, job.text
    me = await client.post("/api/users", json={"name": "a"})
    messages = (await client.get(f"/v1/threads/{thread}/messages")).json()["data"]
    answer = next(m for m in messages if m["role"] == "assistant")
    found = await client.post("/api/functions/search_products", json={"session_id": thread, "query": "chair"})
    product = found.json()["data"]["products"][0]["id"]
    added = await client.post(
        "/api/functions/add_to_cart", json={"session_id": thread, "product_id": product, "quantity": 1}
    )
    assert added.json()["success"], added.text
    kb = (await client.post("/v1/knowledge-bases", json={"name": "secrets"})).json()["id"]
    document = await client.post(
        f"/v1/knowledge-bases/{kb}/documents", json={"title": "Plans", "text": "The secret plans are here."}
    )
    assert document.status_code == 201, document.text
    told = await start_run(client, thread, "My name is Alice.", multitask="enqueue")
    await read_events(client, f"/v1/runs/{told['id']}/events")
    facts: list[dict[str, Any]] = []
    for _ in range(100):  # facts are extracted in the background after the run
        facts = (await client.get("/v1/memory")).json()["data"]
        if facts:
            break
        await asyncio.sleep(0.05)
    assert facts, "the memory of alice's name"
    return {
        "fact": facts[0]["id"],
        "kb": kb,
        "document": document.json()["id"],
        "message": answer["id"],
        "product": product,
        "thread": thread,
        "run": run["id"],
        "file": file.json()["id"],
        "job": job.json()["job_id"],
        "user_id": me.json()["user_id"],
    }


async def call(client: httpx.AsyncClient, row: Row, ids: dict[str, Any]) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": _fill(row.params, ids)}
    if row.json is not None:
        kwargs["json"] = _fill(row.json, ids)
    if row.upload:
        kwargs["files"] = {"file": ("mine.txt", b"not yours")}
        kwargs["data"] = {"thread_id": ids["thread"]}
    return await client.request(row.method, _fill(row.path, ids), **kwargs)


def _code(body: dict[str, Any]) -> object:
    """The error code: Parley's ``{"error": {"code"}}``, or seed 001's ``{"success": false, "code"}``."""
    error = body.get("error")
    return error.get("code") if isinstance(error, dict) else body.get("code")


async def test_user_b_gets_404_for_everything_of_user_a(server: Server) -> None:
    async with client_as(server, "alice") as alice, client_as(server, "bob") as bob:
        ids = await objects_of_a(alice)
        before = (await alice.get(f"/v1/threads/{ids['thread']}/messages")).json()["data"]
        wrong = {}
        for name, row in MATRIX.items():
            response = await call(bob, row, ids)
            if response.status_code != 404 or _code(response.json()) != "not_found":
                wrong[name] = (response.status_code, response.text[:200])
        assert wrong == {}

        # Nothing of alice's changed, and bob stored nothing.
        thread = (await alice.get(f"/v1/threads/{ids['thread']}")).json()
        assert thread["title"] == "my secret plans"
        assert (await alice.get(f"/v1/runs/{ids['run']}")).json()["status"] == "completed"
        assert (await alice.get(f"/v1/files/{ids['file']}")).status_code == 200
        messages = (await alice.get(f"/v1/threads/{ids['thread']}/messages")).json()["data"]
        assert messages == before
        assert [m["content"] for m in messages][:2] == ["my secret plans", "my secret plans"]
        assert (await bob.get("/v1/files")).json()["data"] == []
        assert len((await alice.get(f"/api/cart/{ids['thread']}")).json()["items"]) == 1
        assert len((await alice.get(f"/v1/knowledge-bases/{ids['kb']}/documents")).json()["data"]) == 1
        assert ids["fact"] in [f["id"] for f in (await alice.get("/v1/memory")).json()["data"]]
        assert (await bob.get("/v1/knowledge-bases")).json()["data"] == []
        assert (await bob.get("/v1/memory")).json()["data"] == []


async def test_lists_show_only_the_callers_own_objects(server: Server) -> None:
    async with client_as(server, "alice") as alice, client_as(server, "bob") as bob:
        await objects_of_a(alice)
        assert (await bob.get("/v1/threads")).json()["data"] == []
        assert (await bob.get("/v1/files")).json()["data"] == []
        assert (await bob.get("/chat/history")).json() == {"messages": [], "jobs": [], "files": []}
        assert len((await alice.get("/v1/threads")).json()["data"]) == 2
        assert len((await alice.get("/v1/files")).json()["data"]) == 1
        cleared = (await bob.delete("/chat/clear")).json()
        assert cleared == {"cleared": True, "messages": 0, "files": 0}
        assert len((await alice.get("/chat/history")).json()["jobs"]) == 1


async def test_paging_from_another_users_thread_is_like_paging_from_an_unknown_one(server: Server) -> None:
    """A cursor that names another user's thread reveals nothing: the answer is the one an
    unknown (or deleted) thread id gets, the caller's own next page."""
    async with client_as(server, "alice") as alice, client_as(server, "bob") as bob:
        ids = await objects_of_a(alice)
        await new_thread(bob)
        theirs = await bob.get("/v1/threads", params={"before": ids["thread"]})
        unknown = await bob.get("/v1/threads", params={"before": "thr_01m952fd0g0dshtyg682tk17gm"})
        assert theirs.status_code == unknown.status_code == 200
        assert theirs.json() == unknown.json()
