"""Seed 003's README flow with curl (as written, or with a real key), and its API's edges."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server, serve
from tests.identity import client_as, key_for

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "parley.toml"

# The README's three commands, as written there.
CHAT = r"""curl -N -H "x-api-key: test-key-123" \
  -H "Content-Type: application/json" \
  -d '{"message": "Tell me about transformers"}' \
  http://localhost:8000/chat"""
FEEDBACK = r"""curl -H "x-api-key: test-key-123" \
  -H "Content-Type: application/json" \
  -d '{"message_id": "<message-id>", "rating": 1}' \
  http://localhost:8000/feedback"""
STATS = r"""curl -H "x-api-key: test-key-123" \
  http://localhost:8000/feedback/stats"""


CONFIG = """
[experiments.prompt-style]
[[experiments.prompt-style.variants]]
name = "control"
instructions = "You are a helpful AI assistant. Provide detailed and informative responses."
[[experiments.prompt-style.variants]]
name = "concise"
instructions = "You are a helpful AI assistant. Be concise and to the point."
"""


def data_frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]


async def curl(server: Server, command: str, key: str, **values: str) -> str:
    command = command.replace("http://localhost:8000", server.url).replace("test-key-123", key)
    for placeholder, value in values.items():
        command = command.replace(f"<{placeholder.replace('_', '-')}>", value)
    result = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_the_seed_readme_curl_flow_works(settings_for, tmp_path: Path) -> None:
    """Only the host, the port, the key and the message id differ from the README."""
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    async with serve(settings_for(config_file=config)) as server:
        key = await key_for(server, "keyur")
        frames = data_frames(await curl(server, CHAT, key))
        assert "".join(f["token"] for f in frames if "token" in f) == "Tell me about transformers"
        done = frames[-1]
        assert done["done"] is True
        assert done["variant"] in ("control", "concise")
        assert done["model"] == "scripted:echo"
        assert done["tokens_out"] == 4
        assert done["latency_ms"] >= 0
        assert done["cost"] == 0.0
        feedback = json.loads(await curl(server, FEEDBACK, key, message_id=done["message_id"]))
        assert feedback == {"status": "success", "message": "Feedback recorded"}
        stats = json.loads(await curl(server, STATS, key))
        other = "concise" if done["variant"] == "control" else "control"
        rated = {"total_feedback": 1, "thumbs_up": 1, "thumbs_down": 0, "approval_rate": 100.0}
        unrated = {"total_feedback": 0, "thumbs_up": 0, "thumbs_down": 0, "approval_rate": 0}
        assert sorted(stats["stats"], key=lambda row: row["variant"] != done["variant"]) == [
            {"experiment": "prompt-style", "variant": done["variant"], **rated},
            {"experiment": "prompt-style", "variant": other, **unrated},  # every running variant is listed
        ]
        thread = (await server.client.get(f"/v1/threads/{done['conversation_id']}/messages")).json()["data"]
        assert [m["role"] for m in thread] == ["user", "assistant"]
        assert thread[1]["id"] == done["message_id"]


async def test_the_seed_readme_commands_work_as_written_on_the_make_run_server(settings_for) -> None:
    """`x-api-key: test-key-123` is no Parley key: on a loopback server it is the local user's
    request. ``make run``'s config (examples/parley.toml) ships a demo like the seed's concise/detailed one."""
    async with serve(settings_for(config_file=EXAMPLE_CONFIG)) as server:
        frames = data_frames(await curl(server, CHAT, "test-key-123"))
        done = frames[-1]
        assert done["done"] is True
        assert done["variant"] in ("clear", "concise")
        feedback = json.loads(await curl(server, FEEDBACK, "test-key-123", message_id=done["message_id"]))
        assert feedback == {"status": "success", "message": "Feedback recorded"}
        stats = json.loads(await curl(server, STATS, "test-key-123"))["stats"]
    assert {(row["experiment"], row["variant"]) for row in stats} == {
        ("answer-style", "clear"),
        ("answer-style", "concise"),
    }
    [mine] = [row for row in stats if row["total_feedback"]]
    assert (mine["variant"], mine["thumbs_up"]) == (done["variant"], 1)


async def chat(client: httpx.AsyncClient, message: str, conversation: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if conversation:
        body["conversation_id"] = conversation
    response = await client.post("/chat", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = data_frames(response.text)
    assert frames[-1].get("done") is True, frames
    return frames[-1]


async def test_a_conversation_continues_and_stays_its_owners(settings_for, tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    async with serve(settings_for(config_file=config)) as server:
        async with client_as(server, "ana") as ana, client_as(server, "bob") as bob:
            first = await chat(ana, "hello")
            second = await chat(ana, "and again", first["conversation_id"])
            assert second["conversation_id"] == first["conversation_id"]
            assert second["variant"] == first["variant"]
            stolen = await bob.post(
                "/chat", json={"message": "hi", "conversation_id": first["conversation_id"]}
            )
            assert stolen.status_code == 404
            rated = await bob.post("/feedback", json={"message_id": first["message_id"], "rating": 1})
            assert rated.status_code == 404
            for bad in (
                {"message_id": first["message_id"], "rating": 5},
                {"message_id": first["message_id"]},
            ):
                assert (await ana.post("/feedback", json=bad)).status_code == 422
            assert (
                await ana.post("/feedback", json={"message_id": first["message_id"], "rating": 1})
            ).json()["message"] == "Feedback recorded"
            changed = await ana.post("/feedback", json={"message_id": first["message_id"], "rating": -1})
            assert changed.json() == {"status": "success", "message": "Feedback updated"}
            bobs = await chat(bob, "bob here")
            await bob.post("/feedback", json={"message_id": bobs["message_id"], "rating": 1})
            mine = (await ana.get("/feedback/stats")).json()["stats"]
            assert [(s["total_feedback"], s["thumbs_down"]) for s in mine if s["total_feedback"]] == [(1, 1)]
            assert len(mine) == 2  # the unrated variant is listed too
        everyone = (await server.client.get("/feedback/stats")).json()["stats"]
        assert sum(s["total_feedback"] for s in everyone) == 2


async def test_bad_chat_requests_are_refused(server: Server) -> None:
    assert (await server.client.post("/chat", json={"message": ""})).status_code == 422
    assert (await server.client.post("/chat", json={"message": "x" * 10_001})).status_code == 422
    assert (await server.client.post("/chat", json={"text": "hi"})).status_code == 422
    missing = await server.client.post("/chat", json={"message": "hi", "conversation_id": "thr_nosuch"})
    assert missing.status_code == 404
    await key_for(server, "someone")
    # A Parley-shaped key that is wrong (a key of another shape is no key on loopback).
    async with httpx.AsyncClient(base_url=server.url, headers={"x-api-key": "prl_not-a-key"}) as stranger:
        assert (await stranger.post("/chat", json={"message": "hi"})).status_code == 401
    threads = (await server.client.get("/v1/threads")).json()["data"]
    assert threads == []
