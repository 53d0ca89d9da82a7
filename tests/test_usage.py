"""``GET /v1/usage``: tokens, cost and latency per user, assistant, model and day;
administrators see everyone's, users their own."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import update

from parley.store.schema import Run
from parley.usage import day_of
from tests.conftest import Server, serve
from tests.identity import client_as
from tests.sse import new_thread, read_events

CONFIG = """
[assistants.poet]
description = "writes verse"
instructions = "Answer in verse."
model = "scripted:bench?tokens=7"
"""


async def run(client: httpx.AsyncClient, text: str, assistant: str = "general") -> dict[str, Any]:
    thread = await new_thread(client, assistant)
    frames = await read_events(
        client, f"/v1/threads/{thread}/runs", method="POST", json={"input": text, "stream": True}
    )
    run_id = frames[0].json["run_id"]
    result: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}")).json()
    return result


async def test_usage_per_user_assistant_model_and_day(settings_for, tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    async with (
        serve(settings_for(config_file=config)) as server,
        client_as(server, "ana") as ana,
        client_as(server, "bob") as bob,
    ):
        runs = {
            "ana": [await run(ana, "one two three"), await run(ana, "four five", "poet")],
            "bob": [await run(bob, "six seven eight nine")],
        }
        yesterday = time.time() - 86400
        async with server.parley.db.transaction() as session:
            await session.execute(
                update(Run).where(Run.id == runs["bob"][0]["id"]).values(created_at=yesterday)
            )
        runs["bob"][0]["created_at"] = yesterday
        everyone = [r for rs in runs.values() for r in rs]

        admin = (await server.client.get("/v1/usage", params={"group_by": "user"})).json()
        names = {entry["user"]["name"]: entry for entry in admin["data"]}
        assert set(names) == {"ana", "bob"}
        for name, mine in runs.items():
            assert names[name]["runs"] == names[name]["completed"] == len(mine)
            assert names[name]["input_tokens"] == sum(r["usage"]["input_tokens"] for r in mine)
            assert names[name]["output_tokens"] == sum(r["usage"]["output_tokens"] for r in mine)
        latencies = [r["usage"]["latency_ms"] for r in everyone]
        assert admin["totals"]["runs"] == 3
        assert admin["totals"]["latency_ms"]["mean"] == pytest.approx(np.mean(latencies))
        assert admin["totals"]["latency_ms"]["p95"] == pytest.approx(np.percentile(latencies, 95))
        assert admin["totals"]["cost_usd"] == 0.0

        by_model = (await server.client.get("/v1/usage", params={"group_by": "assistant,model"})).json()[
            "data"
        ]
        assert [(e["assistant"], e["model"], e["runs"]) for e in by_model] == [
            ("general", "scripted:echo", 2),
            ("poet", "scripted:bench?tokens=7", 1),
        ]
        assert by_model[1]["output_tokens"] == 7

        days = (await server.client.get("/v1/usage", params={"group_by": "day"})).json()["data"]
        assert [(e["day"], e["runs"]) for e in days] == [(day_of(yesterday), 1), (day_of(time.time()), 2)]

        own = (await ana.get("/v1/usage", params={"group_by": "user,model"})).json()
        assert [(e["user"]["name"], e["runs"]) for e in own["data"]] == [("ana", 1), ("ana", 1)]
        assert own["totals"]["runs"] == 2
        assert (await ana.get("/v1/usage", params={"user": names["bob"]["user"]["id"]})).status_code == 404
        only_bob = (await server.client.get("/v1/usage", params={"user": names["bob"]["user"]["id"]})).json()
        assert only_bob["totals"]["runs"] == 1

        today = day_of(time.time())
        window = (await server.client.get("/v1/usage", params={"from": today, "to": today})).json()
        assert window["totals"]["runs"] == 2
        assert window["from"] == f"{today}T00:00:00Z"


async def test_bad_usage_queries_are_refused(server: Server) -> None:
    for params in [
        {"group_by": "colour"},
        {"group_by": "day,day"},
        {"from": "2026-02-01", "to": "2026-01-01"},
        {"from": "2020-01-01", "to": "2026-01-01"},
        {"from": "yesterday"},
        {"from": "9999-12-31"},
        {"to": "0001-01-01"},
        {"user": "ana"},
        {"user": 2**40},
    ]:
        response = await server.client.get("/v1/usage", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid_request"
