"""The native API's edges: threads, messages, errors, health, metrics, request ids."""

from __future__ import annotations

import pytest

from tests.conftest import Server
from tests.sse import new_thread, read_events, start_run


async def test_threads_crud_and_pagination(server: Server) -> None:
    ids = [await new_thread(server.client) for _ in range(5)]
    page = (await server.client.get("/v1/threads", params={"limit": 2})).json()
    assert [t["id"] for t in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = (
        await server.client.get("/v1/threads", params={"limit": 10, "before": page["data"][-1]["id"]})
    ).json()
    assert [t["id"] for t in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False

    renamed = await server.client.patch(f"/v1/threads/{ids[0]}", json={"title": "Groceries"})
    assert renamed.json()["title"] == "Groceries"
    assert (await server.client.get(f"/v1/threads/{ids[0]}")).json()["title"] == "Groceries"

    run = await start_run(server.client, ids[0], "hello")
    await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert (await server.client.delete(f"/v1/threads/{ids[0]}")).status_code == 204
    assert (await server.client.get(f"/v1/threads/{ids[0]}")).status_code == 404
    assert (await server.client.get(f"/v1/runs/{run['id']}")).status_code == 404
    assert (await server.client.get(f"/v1/runs/{run['id']}/events")).status_code == 404


async def test_a_thread_is_titled_by_its_first_message(server: Server) -> None:
    thread = await new_thread(server.client)
    await start_run(server.client, thread, "Plan a trip to Lisbon\nwith kids")
    assert (await server.client.get(f"/v1/threads/{thread}")).json()["title"] == "Plan a trip to Lisbon"


async def test_messages_paginate_oldest_first(server: Server) -> None:
    thread = await new_thread(server.client)
    for text in ("one", "two", "three"):
        run = await start_run(server.client, thread, text)
        await read_events(server.client, f"/v1/runs/{run['id']}/events")
    first = (await server.client.get(f"/v1/threads/{thread}/messages", params={"limit": 4})).json()
    assert [m["content"] for m in first["data"]] == ["one", "one", "two", "two"]
    assert first["has_more"]
    rest = (
        await server.client.get(f"/v1/threads/{thread}/messages", params={"after": first["data"][-1]["id"]})
    ).json()
    assert [(m["role"], m["content"]) for m in rest["data"]] == [("user", "three"), ("assistant", "three")]


async def test_malformed_json_is_a_400_and_stores_nothing(server: Server) -> None:
    thread = await new_thread(server.client)
    response = await server.client.post(
        f"/v1/threads/{thread}/runs", content=b'{"input": "hi"', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_request"),
        ({"input": ""}, 422, "invalid_request"),
        ({"input": "hi", "multitask": "sometimes"}, 422, "invalid_request"),
        ({"input": "hi", "surprise": 1}, 422, "invalid_request"),
        ({"input": "x" * 40_000}, 413, "input_too_large"),
    ],
)
async def test_bad_run_bodies_are_refused_and_store_nothing(
    server: Server, body: dict, status: int, code: str
) -> None:
    thread = await new_thread(server.client)
    response = await server.client.post(f"/v1/threads/{thread}/runs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"] == []


async def test_a_body_over_the_request_limit_is_413(server: Server) -> None:
    thread = await new_thread(server.client)
    response = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "x" * 2_000_000})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/threads/thr_nope",
        "/v1/threads/thr_nope/messages",
        "/v1/runs/run_nope",
        "/v1/runs/run_nope/events",
    ],
)
async def test_unknown_ids_are_404(server: Server, path: str) -> None:
    response = await server.client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_runs_on_unknown_threads_and_unknown_assistants(server: Server) -> None:
    response = await server.client.post("/v1/threads/thr_nope/runs", json={"input": "hi"})
    assert response.status_code == 404
    assert (await server.client.post("/v1/runs/run_nope/cancel")).status_code == 404
    response = await server.client.post("/v1/threads", json={"assistant": "nobody"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_assistant"


async def test_health_readiness_and_metrics(server: Server) -> None:
    assert (await server.client.get("/healthz")).json() == {"status": "ok"}
    ready = await server.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "executor": "ok"}
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, "count me")
    events = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    text = (await server.client.get("/metrics")).text
    assert 'parley_runs_total{assistant="general",status="completed"} 1.0' in text
    assert "parley_time_to_first_token_seconds_count" in text
    counters = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in ("parley_events_written_total", "parley_event_commits_total")
    }
    assert counters["parley_events_written_total"] >= len(events) >= 3
    assert 1 <= counters["parley_event_commits_total"] <= counters["parley_events_written_total"]
    assert 'parley_http_requests_total{method="POST",route="/v1/threads",status="201"}' in text


async def test_request_id_is_accepted_and_returned(server: Server) -> None:
    response = await server.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await server.client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_openapi_docs_are_served(server: Server) -> None:
    assert (await server.client.get("/docs")).status_code == 200
    schema = (await server.client.get("/openapi.json")).json()
    assert "/v1/threads/{thread_id}/runs" in schema["paths"]
    assert "/v1/runs/{run_id}/events" in schema["paths"]


async def test_assistants_are_listed_with_their_model(server: Server) -> None:
    data = (await server.client.get("/v1/assistants")).json()["data"]
    general = next(a for a in data if a["name"] == "general")
    assert general["model"] == "scripted:echo"
