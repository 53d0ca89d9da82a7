"""Streaming under load: fast producers are coalesced, paced, and do not hold up other runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from httpx_sse import aconnect_sse

from parley import events as ev
from parley.agent import Agent
from parley.config import Settings
from parley.runs.state import RunState
from parley.store.db import WriteLock
from tests.conftest import Server, fresh_postgres, serve
from tests.sse import assert_contiguous, kinds, new_thread, read_events

TOKENS = 10_000
FAST = f"scripted:bench?tokens={TOKENS}&delay_ms=0"
# The chat guard drops the reply's leading space.
EXPECTED = "".join(f" tok{i}" for i in range(TOKENS)).lstrip()


async def test_a_fast_stream_is_coalesced_and_keeps_its_text(settings_for: Callable[..., Settings]) -> None:
    async with serve(settings_for(model=FAST)) as server:
        thread = await new_thread(server.client)
        url = f"/v1/threads/{thread}/runs"
        frames = await read_events(server.client, url, method="POST", json={"input": "go", "stream": True})
        assert_contiguous(frames)
        assert kinds(frames) == ["run.started", "message.delta", "run.completed"]
        deltas = [f.json["text"] for f in frames if f.event == "message.delta"]
        assert "".join(deltas) == EXPECTED == frames[-1].json["text"]
        # Text produced while a commit was in flight rode in the next event, not one per token.
        assert len(deltas) <= TOKENS // 3
        # What was streamed live is what the log replays.
        replay = await read_events(server.client, f"/v1/runs/{frames[0].json['run_id']}/events")
        assert replay == frames


async def test_another_event_closes_the_pending_delta(server: Server) -> None:
    async def produce(agent: Agent, state: RunState) -> None:
        log, run_id = agent.log, state.run.id
        log.append_text(run_id, "Let me ")
        log.append_text(run_id, "look.")
        log.append(run_id, ev.TOOL_CALL, {"id": "call_1", "name": "search", "arguments": {}})
        log.append_text(run_id, "Found it.")
        state.text = "Let me look.Found it."
        await log.flush()

    server.parley.worker.produce = produce
    thread = await new_thread(server.client)
    frames = await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "go", "stream": True}
    )
    assert_contiguous(frames)
    assert [(f.event, f.json.get("text")) for f in frames[:-1]] == [
        ("run.started", None),
        ("message.delta", "Let me look."),
        ("tool.call", None),
        ("message.delta", "Found it."),
    ]
    assert frames[-1].json["text"] == "Let me look.Found it."


async def test_continuing_text_shares_commits_and_keeps_every_token(server: Server) -> None:
    """A paced producer (a real model between tokens) gets its first text committed at once and
    its later text committed at most every TEXT_COMMIT_INTERVAL, not once per token."""
    commits: list[float] = []
    log = server.parley.log
    counted = log._on_commit
    log._on_commit = lambda n: (commits.append(time.monotonic()), counted and counted(n))
    spans: dict[str, float] = {}
    pieces = [f" t{i}" for i in range(60)]

    async def produce(agent: Agent, state: RunState) -> None:
        run_id = state.run.id
        agent.log.append_text(run_id, "Hello")
        await agent.log.flush()
        started, before = time.monotonic(), len(commits)
        for piece in pieces:
            agent.log.append_text(run_id, piece)
            await agent.log.pace(run_id)
            await asyncio.sleep(0.001)
        spans["seconds"], spans["commits"] = time.monotonic() - started, len(commits) - before
        state.text = "Hello" + "".join(pieces)
        await agent.log.flush()

    server.parley.worker.produce = produce
    thread = await new_thread(server.client)
    frames = await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "go", "stream": True}
    )
    assert_contiguous(frames)
    deltas = [f.json["text"] for f in frames if f.event == "message.delta"]
    assert deltas[0] == "Hello"
    assert "".join(deltas) == "Hello" + "".join(pieces) == frames[-1].json["text"]
    # One commit per token would be 60; spaced commits are bounded by the time taken.
    assert spans["commits"] <= spans["seconds"] / ev.TEXT_COMMIT_INTERVAL + 2


async def test_finished_runs_leave_memory_oldest_first_and_replay_from_the_database(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run's committed events stay in memory a while for fast replays, then only the
    database has them: runs leave in the order they finished, whatever order they started in."""
    monkeypatch.setattr(ev, "_TAIL_LINGER_SECONDS", 0.3)
    log = server.parley.log
    streamed: dict[str, list[object]] = {}
    for _ in range(3):
        thread = await new_thread(server.client)
        frames = await read_events(
            server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "hi", "stream": True}
        )
        streamed[frames[0].json["run_id"]] = frames
    first, second, third = streamed
    assert {first, second, third} <= set(log._tail)
    await asyncio.sleep(0.35)
    thread = await new_thread(server.client)  # a later run's commits look for runs to drop
    await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "hi", "stream": True}
    )
    assert not {first, second, third} & (set(log._tail) | set(log._finished))
    for run_id, frames in streamed.items():
        assert await read_events(server.client, f"/v1/runs/{run_id}/events") == frames


async def test_a_new_runs_first_token_does_not_wait_for_a_long_stream(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(model=FAST)) as server:
        long_thread, short_thread = await new_thread(server.client), await new_thread(server.client)
        streaming = asyncio.Event()
        long_done: list[float] = []

        async def long_run() -> None:
            body = {"input": "go", "stream": True}
            async with aconnect_sse(
                server.client, "POST", f"/v1/threads/{long_thread}/runs", json=body
            ) as source:
                async for sse in source.aiter_sse():
                    if sse.event == "message.delta":
                        streaming.set()
                    if sse.event == "run.completed":
                        long_done.append(time.perf_counter())

        task = asyncio.create_task(long_run())
        await asyncio.wait_for(streaming.wait(), 30)
        first_token = await first_token_at(server, short_thread)
        await task
        assert long_done, "the long run did not complete"
        assert first_token < long_done[0], "the second run's first token waited for the whole first run"


async def first_token_at(server: Server, thread: str) -> float:
    body = {"input": "go", "stream": True}
    async with aconnect_sse(server.client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                return time.perf_counter()
    raise AssertionError("the second run streamed no text")


async def test_the_write_lock_serves_urgent_writers_first() -> None:
    lock = WriteLock()
    order: list[str] = []

    async def write(name: str, urgent: bool) -> None:
        async with lock.hold(urgent=urgent):
            order.append(name)
            await asyncio.sleep(0)

    async with lock.hold():
        tasks = [
            asyncio.create_task(write("run 1", False)),
            asyncio.create_task(write("run 2", False)),
            asyncio.create_task(write("events", True)),
        ]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["events", "run 1", "run 2"]


async def test_a_cancelled_waiter_does_not_keep_the_write_lock() -> None:
    lock = WriteLock()
    entered = asyncio.Event()

    async def write() -> None:
        async with lock.hold():
            entered.set()

    async with lock.hold():
        waiter = asyncio.create_task(write())
        await asyncio.sleep(0)
        waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert not entered.is_set()
    await asyncio.wait_for(write(), 1)
    assert entered.is_set()


async def test_a_waiter_cancelled_as_the_lock_reaches_it_passes_it_on() -> None:
    lock = WriteLock()
    entered: list[str] = []

    async def write(name: str) -> None:
        async with lock.hold():
            entered.append(name)

    async with lock.hold():
        first = asyncio.create_task(write("first"))
        await asyncio.sleep(0)
    first.cancel()  # the lock was just handed to it; it has not run yet
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(write("second"), 1)
    assert entered == ["second"]


async def test_runs_go_on_after_the_database_dropped_every_connection(tmp_path: Path) -> None:
    """The event log keeps a connection for its commits: one the server closed is replaced."""
    import asyncpg  # type: ignore[import-untyped]

    async with (
        fresh_postgres() as url,
        serve(Settings(data_dir=tmp_path, database_url=url, model="scripted:echo")) as server,
    ):
        body = {"input": "before the restart", "stream": True}
        thread = await new_thread(server.client)
        frames = await read_events(server.client, f"/v1/threads/{thread}/runs", method="POST", json=body)
        assert frames[-1].event == "run.completed"

        admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1  # the event log's kept connection among them
        await asyncio.sleep(0.2)

        body = {"input": "after the restart", "stream": True}
        frames = await read_events(server.client, f"/v1/threads/{thread}/runs", method="POST", json=body)
        assert_contiguous(frames)
        assert kinds(frames)[-1] == "run.completed"
        assert frames[-1].json["text"] == "after the restart"
