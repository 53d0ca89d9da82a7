"""Structured logs: JSON lines, a request id per request, the run id on every executor line."""

from __future__ import annotations

import json

import pytest
import structlog

from parley.logs import configure
from tests.conftest import Server
from tests.sse import new_thread, read_events


async def test_logs_are_json_with_request_and_run_ids(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", json_logs=True)
    try:
        thread = await new_thread(server.client)
        response = await server.client.post(
            f"/v1/threads/{thread}/runs", json={"input": "log me"}, headers={"X-Request-ID": "req-42"}
        )
        run_id = response.json()["id"]
        await read_events(server.client, f"/v1/runs/{run_id}/events")
    finally:
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        # Back to structlog's defaults: a logger left writing to capsys's stream fails once it closes.
        structlog.reset_defaults()
    access = [line for line in lines if line.get("event") == "request" and line.get("request_id") == "req-42"]
    assert access
    assert access[0]["status"] == 201
    completed = [line for line in lines if line.get("event") == "run_completed"]
    assert completed
    assert completed[0]["run_id"] == run_id
    assert completed[0]["request_id"] == "req-42"  # the request that started the run
