"""The first minutes of a server: demo knowledge by default, readable logs, one "ready" line."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import structlog

from parley.config import Settings
from parley.logs import configure
from parley.startup import DEMO_FAQ, knowledge_paths
from tests.conftest import serve
from tests.sse import new_thread, read_events, start_run


def test_the_demo_knowledge_is_the_servers_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert knowledge_paths(settings) == {"parley-faq": [DEMO_FAQ], "demo-cvs": [tmp_path / "demo-cvs"]}
    assert knowledge_paths(Settings(_env_file=None, knowledge={})) == {}  # type: ignore[call-arg]


async def test_support_and_recruiter_answer_from_the_demo_knowledge_with_no_settings(
    settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", json_logs=True)
    try:
        async with serve(settings_for(embeddings="hash", knowledge=None)) as server:
            bases = (await server.client.get("/v1/knowledge-bases")).json()["data"]
            thread = await new_thread(server.client, "recruiter")
            run = await start_run(server.client, thread, "Which candidate is a registered nurse in Sweden?")
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    finally:
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        structlog.reset_defaults()
    assert {b["name"]: b["documents"] for b in bases} == {"parley-faq": 1, "demo-cvs": 10}
    assert frames[1].json["sources"][0]["title"].startswith("Sofia Lindqvist")
    counts = {
        line["assistant"]: line["documents"] for line in lines if line["event"] == "assistant_knowledge"
    }
    assert counts == {"support": 1, "recruiter": 10}
    syncing = {line["kb"]: line["files"] for line in lines if line["event"] == "knowledge_syncing"}
    assert syncing == {"parley-faq": 1, "demo-cvs": 10}
    progress = [line["files"] for line in lines if line["event"] == "knowledge_progress"]
    assert progress == ["2/10", "4/10", "6/10", "8/10"]  # the CVs, a line every quarter


async def test_a_restarted_server_loads_its_assistants_knowledge_before_the_first_question(
    settings_for: Callable[..., Settings],
) -> None:
    """Indexes load on first use, but a process that answers (an embedded worker) loads the
    assistants' bases once started: its first question does not wait for them."""
    settings = settings_for(embeddings="hash", knowledge=None)
    async with serve(settings):
        pass  # the first start syncs the demo knowledge
    async with serve(settings) as server:  # nothing to sync now: nothing written, nothing loaded by it
        names = {b["id"]: b["name"] for b in (await server.client.get("/v1/knowledge-bases")).json()["data"]}
        assert {names[kb] for kb in server.parley.knowledge.loaded} == {"parley-faq", "demo-cvs"}


async def test_an_assistant_with_empty_knowledge_says_so_in_its_greeting_and_the_log(
    settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    configure("INFO", json_logs=True)
    try:
        async with serve(settings_for(embeddings="hash", knowledge={})) as server:
            thread = await new_thread(server.client, "support")
            run = await start_run(server.client, thread, "Hello!")
            frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    finally:
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        structlog.reset_defaults()
    reply = frames[-1].json["text"]
    assert "is empty" in reply
    assert "parley ingest FILES --kb parley-faq" in reply
    empty = [line for line in lines if line["event"] == "assistant_knowledge_empty"]
    assert {line["assistant"] for line in empty} == {"support", "recruiter"}
    assert all(line["level"] == "warning" for line in empty)


def _serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_DATA_DIR=str(tmp_path / "data"),
        PARLEY_MODEL="scripted:echo",
        PARLEY_EMBEDDINGS="hash",
        PARLEY_PORT="0",
    )
    return env


async def _wait_for(read: Callable[[], str], needle: str, seconds: float = 60) -> str:
    seen = ""
    deadline = asyncio.get_running_loop().time() + seconds
    while needle not in seen:
        assert asyncio.get_running_loop().time() < deadline, seen
        seen += await asyncio.to_thread(read)
    return seen


async def test_serve_logs_json_lines_and_says_once_where_it_is_ready(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "serve", env=_serve_env(tmp_path), stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    stderr = process.stderr
    lines: list[dict[str, object]] = []
    try:
        while not any(line.get("event") == "assistant_knowledge" for line in lines):
            raw = await asyncio.wait_for(stderr.readline(), 60)
            assert raw, lines
            lines.append(json.loads(raw))  # every line is JSON: no progress bar in between
        [ready] = [line for line in lines if line["event"] == "parley_ready"]
        url = str(ready["url"])
        assert ready["message"] == (
            f"Parley is ready: {url} (assistants: general, shop, support, recruiter; model: scripted:echo)"
        )
        events = [line["event"] for line in lines]
        assert events.index("parley_ready") < events.index("knowledge_synced")  # it answered meanwhile
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/static/app.css")).status_code == 200
            assert (await client.get("/healthz")).status_code == 200
        process.terminate()
        rest = (await asyncio.wait_for(stderr.read(), 60)).decode()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    paths = [json.loads(line).get("path") for line in rest.splitlines() if line.startswith("{")]
    assert "/healthz" in paths
    assert "/static/app.css" not in paths  # no log line per static file


async def test_a_killed_server_leaves_no_worker_process_behind(tmp_path: Path) -> None:
    """Its ingest workers (a process pool, started for the demo knowledge) exit with it: an
    orphan would hold the server's stderr open, and whoever reads its log would wait forever."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "serve",
        env={**_serve_env(tmp_path), "PARLEY_INGEST_WORKERS": "process"},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        seen = ""
        while '"knowledge_synced"' not in seen:  # the demo FAQ and CVs were parsed in the pool
            raw = await asyncio.wait_for(process.stderr.readline(), 60)
            assert raw, seen
            seen += raw.decode()
        process.kill()
        await asyncio.wait_for(process.stderr.read(), 20)  # the end of the log: no one holds it open
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_serve_on_a_terminal_logs_readable_lines(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "serve", env=_serve_env(tmp_path), stderr=follower
    )
    os.close(follower)
    try:
        seen = await _wait_for(lambda: os.read(leader, 4096).decode(errors="replace"), "assistant_knowledge")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        os.close(leader)
    text = seen.replace("\r", "")
    assert not any(line.startswith("{") for line in text.splitlines())  # no JSON on a terminal
    ready = [line for line in text.splitlines() if "Parley is ready" in line]
    assert len(ready) == 1
    assert "Parley is ready: http://127.0.0.1:" in ready[0]
    assert "(assistants: general, shop, support, recruiter; model: scripted:echo)" in ready[0]
    assert "knowledge_synced" in text
