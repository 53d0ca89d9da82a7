"""The run engine's leases (``parley.runs``): what the reaper resolves and what it leaves alone,
the fence on a worker that lost its lease, durable cancel requests and after-run work, and the
graceful shutdown of a real ``parley serve`` on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse
from sqlalchemy import select, update

from parley.config import Settings
from parley.store.schema import Event, Run, Thread, new_id, now
from parley.testing import Process
from tests.conftest import Server, fresh_postgres, serve
from tests.sse import kinds, new_thread, read_events, start_run

SLOW = "scripted:echo?delay_ms=50"
WORDS = " ".join(f"w{i}" for i in range(100))


async def _abandoned(
    server: Server, *, events: int, lease_until: float, worker_id: str, cancel: str | None = None
) -> str:
    """A run left ``running`` by another process: its lease, its worker, the events it wrote."""
    thread = await new_thread(server.client)
    run_id = new_id("run")
    async with server.parley.db.transaction() as session:
        owner = (await session.execute(select(Thread.user_id).where(Thread.id == thread))).scalar_one()
        session.add(
            Run(
                id=run_id,
                thread_id=thread,
                user_id=owner,
                assistant="general",
                status="running",
                attempt=1,
                input="left behind",
                started_at=now(),
                lease_until=lease_until,
                worker_id=worker_id,
                cancel_requested=cancel,
            )
        )
        await session.flush()  # the run first: its events refer to it
        for seq in range(1, events + 1):
            session.add(
                Event(run_id=run_id, seq=seq, type="run.started" if seq == 1 else "message.delta", data="{}")
            )
    return run_id


async def _status(server: Server, run_id: str) -> Run:
    async with server.parley.db.session() as session:
        return (await session.execute(select(Run).where(Run.id == run_id))).scalar_one()


async def test_an_expired_lease_is_resolved_by_the_recovery_policy(server: Server) -> None:
    gone = "another-host:4242:deadbeef"
    produced = await _abandoned(server, events=3, lease_until=time.time() - 1, worker_id=gone)
    silent = await _abandoned(server, events=0, lease_until=time.time() - 1, worker_id=gone)
    cancelled = await _abandoned(
        server, events=2, lease_until=time.time() - 1, worker_id=gone, cancel="cancelled"
    )
    await server.parley.reaper.reap()
    frames = await read_events(server.client, f"/v1/runs/{produced}/events")
    assert frames[-1].event == "run.failed"
    assert frames[-1].json["error"]["code"] == "interrupted"
    assert (await _status(server, produced)).status == "interrupted"
    assert kinds(await read_events(server.client, f"/v1/runs/{cancelled}/events"))[-1] == "run.cancelled"
    # Nothing produced: queued again, and this process's worker runs it as attempt 2.
    frames = await read_events(server.client, f"/v1/runs/{silent}/events")
    assert frames[0].json["attempt"] == 2
    assert frames[-1].event == "run.completed"


async def test_a_live_lease_of_another_process_is_left_alone(server: Server) -> None:
    live = await _abandoned(server, events=2, lease_until=time.time() + 60, worker_id="another-host:1:cafe")
    await server.parley.reaper.reap()
    assert (await _status(server, live)).status == "running"


async def test_a_process_of_this_host_that_died_has_its_runs_resolved_at_once(server: Server) -> None:
    """A live lease whose worker was a process of this host that no longer exists (a restart)."""
    dead_pid = 2**22 + 12345  # above any pid this machine hands out
    run_id = await _abandoned(
        server, events=1, lease_until=time.time() + 60, worker_id=f"{os.uname().nodename}:{dead_pid}:0000"
    )
    await server.parley.reaper.reap()
    assert (await _status(server, run_id)).status == "interrupted"


async def test_a_worker_that_lost_its_lease_stops_writing(tmp_path: Path) -> None:
    """Another worker took the run over (the attempt moved on): this worker's events are not
    stored, and it stops the run within one heartbeat without ending it."""
    async with fresh_postgres() as url:
        settings = Settings(
            data_dir=tmp_path, database_url=url, model=SLOW, log_json=True, lease_seconds=3.0, bus="local"
        )
        async with serve(settings) as server:
            run = await start_run(server.client, await new_thread(server.client), WORDS)
            await asyncio.sleep(0.5)
            async with server.parley.db.transaction() as session:
                await session.execute(
                    update(Run)
                    .where(Run.id == run["id"])
                    .values(attempt=Run.attempt + 1, worker_id="other:1:x")
                )
            worker = server.parley.worker
            assert worker is not None
            deadline = time.monotonic() + 3.0  # a heartbeat every lease / 3
            while worker.running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert worker.running == 0
            async with server.parley.db.session() as session:
                stored = len(
                    (await session.execute(select(Event.seq).where(Event.run_id == run["id"]))).all()
                )
            await asyncio.sleep(0.5)
            async with server.parley.db.session() as session:
                later = len((await session.execute(select(Event.seq).where(Event.run_id == run["id"]))).all())
                row = (await session.execute(select(Run).where(Run.id == run["id"]))).scalar_one()
            assert later == stored  # nothing more from the stale writer
            assert row.status == "running"  # the run is the new attempt's to end, not this worker's
            assert row.worker_id == "other:1:x"


async def test_a_cancel_is_a_durable_request_the_worker_honours(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(model=SLOW)) as server:
        run = await start_run(server.client, await new_thread(server.client), WORDS)
        await asyncio.sleep(0.3)
        response = await server.client.post(f"/v1/runs/{run['id']}/cancel")
        assert response.json()["status"] == "cancelled"
        row = await _status(server, run["id"])
        assert row.cancel_requested == "cancelled"
        assert row.lease_until is None  # the worker let go of it
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        assert frames[-1].event == "run.cancelled"
        assert 1 < len(frames) < 100  # it had started, and stopped long before its 100 words


async def test_after_run_work_left_by_a_dead_process_is_taken_over(
    settings_for: Callable[..., Settings],
) -> None:
    async with serve(settings_for(model="scripted:echo")) as server:
        thread = await new_thread(server.client)
        frames = await read_events(
            server.client,
            f"/v1/threads/{thread}/runs",
            method="POST",
            json={"input": "I live in Lyon", "stream": True},
        )
        run_id = frames[0].json["run_id"]
        await server.parley.context.idle()
        assert not (await _status(server, run_id)).upkeep_pending  # done by this process
        # As if the process had died before its memory work: owed, and finished a while ago.
        async with server.parley.db.transaction() as session:
            await session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(upkeep_pending=True, finished_at=time.time() - 3600)
            )
        assert await server.parley.reaper.upkeep() == 1
        await server.parley.context.idle()
        assert not (await _status(server, run_id)).upkeep_pending


@pytest.mark.slow
async def test_sigterm_ends_running_runs_with_a_terminal_event_before_closing(tmp_path: Path) -> None:
    env = {
        "PARLEY_DATA_DIR": str(tmp_path),
        "PARLEY_MODEL": "scripted:echo?delay_ms=100",
        "PARLEY_SHUTDOWN_GRACE_SECONDS": "1",
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_KNOWLEDGE": "{}",  # no demo knowledge syncing in the background
    }
    server = Process("serve", env, log_path=tmp_path / "serve.log")
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            thread = (await client.post("/v1/threads", json={})).json()["id"]
            received: list[str] = []
            run_id = ""
            async with aconnect_sse(
                client, "POST", f"/v1/threads/{thread}/runs", json={"input": WORDS, "stream": True}
            ) as source:
                async for sse in source.aiter_sse():
                    received.append(sse.event)
                    run_id = run_id or json.loads(sse.data)["run_id"]
                    if len(received) == 3:
                        server.proc.send_signal(signal.SIGTERM)
            # The stream ended with the run's terminal event, not a cut connection.
            assert received[-1] == "run.failed"
        # Shut down as asked: the process exits normally, as after Ctrl-C.
        assert server.wait(timeout=15) == 0
    finally:
        if server.proc.poll() is None:
            server.kill()
    # Its log is JSON to the last line: nothing wrote past it, such as Python's resource tracker
    # warning about the ingest workers' semaphores once they are gone (within half a second).
    await asyncio.sleep(2)
    for line in (tmp_path / "serve.log").read_text().splitlines():
        assert line.startswith("{"), line
        json.loads(line)
    # Restarted, the server shows the run ended as interrupted.
    again = Process("serve", env, log_path=tmp_path / "serve.log")
    try:
        await again.ready()
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
            assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "interrupted"
    finally:
        again.terminate()


def test_parley_worker_refuses_sqlite_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "PARLEY_DATA_DIR": str(tmp_path), "PARLEY_DATABASE_URL": ""}
    env.pop("PARLEY_DATABASE_URL")
    done = subprocess.run(
        [sys.executable, "-m", "parley", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "parley worker needs PostgreSQL" in done.stderr


def test_the_agent_and_knowledge_do_not_import_the_run_engine() -> None:
    """The agent gets its collaborators passed in: importing it (or the knowledge bases, the
    context builder) loads no part of the run engine, so nothing can reach through it."""
    code = (
        "import sys, parley.agent, parley.knowledge.grounding, parley.knowledge.bases, parley.context; "
        "print(sorted(m for m in sys.modules if m.startswith(('parley.runs.', 'parley.executor'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "['parley.runs.state']"
