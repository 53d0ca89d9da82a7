"""Scale-out with real processes: two API processes (``PARLEY_WORKER=off``) and two workers
sharing one PostgreSQL database, with wake-ups over PostgreSQL LISTEN/NOTIFY or over Redis.

What a user of a cluster relies on: any API process serves any run; one run per thread at a
time, whichever process takes the request; a worker killed mid-stream loses no received event
and leaves no run unfinished; a cancel reaches the upstream wherever the run executes; a new
process does not disturb live runs; rate limits hold across processes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from parley.providers.fakes import FakeOpenAI, Fault, Reply
from parley.testing import Cluster, free_port
from tests.conftest import REDIS_URL, _need, fresh_postgres, within_one_window
from tests.sse import Frame, read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LEASE_SECONDS = 3
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
WORDS = " ".join(f"w{i}" for i in range(40))


def _env(database_url: str, data_dir: Path, bus: str, **extra: str) -> dict[str, str]:
    env = {
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_MODEL": "scripted:echo?delay_ms=15",
        "PARLEY_LEASE_SECONDS": str(LEASE_SECONDS),
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_LOG_JSON": "true",
        "PARLEY_BUS": bus,
        "PARLEY_SHUTDOWN_GRACE_SECONDS": "2",
        "PARLEY_KNOWLEDGE": "{}",  # no demo knowledge syncing in the background
        **extra,
    }
    if bus == "redis":
        env["PARLEY_REDIS_URL"] = _need(REDIS_URL, "Redis")
    return env


async def _cluster(tmp_path: Path, bus: str, **extra: str) -> AsyncIterator[Cluster]:
    async with fresh_postgres() as url:
        cluster = Cluster(_env(url, tmp_path, bus, **extra), log_dir=tmp_path)
        try:
            yield await cluster.start(apis=2, workers=2)
        finally:
            cluster.stop()


@pytest.fixture(params=["postgres", "redis"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    async for running in _cluster(tmp_path, request.param):
        yield running


async def _thread(client: httpx.AsyncClient, api: str) -> str:
    response = await client.post(f"{api}/v1/threads", json={})
    response.raise_for_status()
    thread_id: str = response.json()["id"]
    return thread_id


async def _run(client: httpx.AsyncClient, api: str, thread: str, text: str, **body: object) -> str:
    response = await client.post(f"{api}/v1/threads/{thread}/runs", json={"input": text, **body})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


async def test_a_run_created_on_one_api_process_streams_whole_from_the_other(cluster: Cluster) -> None:
    first, second = (api.url for api in cluster.apis)
    async with httpx.AsyncClient(timeout=30) as client:
        thread = await _thread(client, first)
        run_id = await _run(client, first, thread, "hello from the first process")
        frames = await read_events(client, f"{second}/v1/runs/{run_id}/events")
        assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
        assert frames[0].event == "run.started"
        assert frames[-1].event == "run.completed"
        text = "".join(f.json["text"] for f in frames if f.event == "message.delta")
        assert "hello from the first process" in text
        assert frames[-1].json["text"] == text
        # Both processes show the same finished run and the thread's messages.
        for api in (first, second):
            assert (await client.get(f"{api}/v1/runs/{run_id}")).json()["status"] == "completed"
        history = (await client.get(f"{second}/v1/threads/{thread}/messages")).json()["data"]
        assert [m["role"] for m in history] == ["user", "assistant"]


async def test_enqueued_runs_of_one_thread_sent_to_both_apis_never_overlap(cluster: Cluster) -> None:
    apis = [api.url for api in cluster.apis]
    async with httpx.AsyncClient(timeout=30) as client:
        thread = await _thread(client, apis[0])
        run_ids = [
            await _run(client, apis[i % 2], thread, f"message {i} {WORDS}", multitask="enqueue")
            for i in range(6)
        ]
        for run_id in run_ids:
            await read_events(client, f"{apis[1]}/v1/runs/{run_id}/events")
        runs = [(await client.get(f"{apis[0]}/v1/runs/{run_id}")).json() for run_id in run_ids]
    assert [r["status"] for r in runs] == ["completed"] * 6
    # In the order they were sent, each started after the one before had finished.
    for earlier, later in itertools.pairwise(runs):
        assert earlier["finished_at"] <= later["started_at"], (earlier, later)


async def test_a_cancel_sent_to_the_other_api_closes_the_upstream_within_a_second(tmp_path: Path) -> None:
    async with FakeOpenAI(default=Reply(WORDS, delay=0.05, fault=Fault("hang", after=5))) as upstream:
        extra = {
            "PARLEY_MODEL": f"openai:gpt-4o-mini?base_url={upstream.url}/v1",
            "OPENAI_API_KEY": "sk-test",
        }
        async for cluster in _cluster(tmp_path, "postgres", **extra):
            first, second = (api.url for api in cluster.apis)
            async with httpx.AsyncClient(timeout=30) as client:
                thread = await _thread(client, first)
                run_id = await _run(client, first, thread, "talk for ever")
                async with aconnect_sse(client, "GET", f"{second}/v1/runs/{run_id}/events") as source:
                    async for sse in source.aiter_sse():
                        if sse.event == "message.delta":
                            break
                asked = time.monotonic()
                cancelled = await client.post(f"{second}/v1/runs/{run_id}/cancel")
                assert cancelled.json()["status"] == "cancelled"
                closed = await upstream.wait_closed(timeout=5)
                assert closed.closed_at is not None
                assert closed.closed_at - asked <= 1.0
                frames = await read_events(client, f"{first}/v1/runs/{run_id}/events")
                assert frames[-1].event == "run.cancelled"


async def test_a_killed_worker_loses_nothing_and_its_runs_end(tmp_path: Path) -> None:
    """SIGKILL of a worker at 20 random points, with readers attached: every event a reader
    received is in the log, seqs have no gap, and every run is terminal within the lease + 10 s."""
    rng = random.Random(20261206)
    received: dict[str, list[Frame]] = {}
    async for cluster in _cluster(tmp_path, "postgres"):
        apis = [api.url for api in cluster.apis]
        # Idle connections are dropped before the server's 5 s keep-alive closes them: a request
        # sent on one as the server closes it fails (httpx.ReadError), and rounds wait that long.
        limits = httpx.Limits(keepalive_expiry=1)
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60), limits=limits) as client:
            for round_ in range(20):
                fresh = []
                for i in range(2):
                    api = apis[(round_ + i) % 2]
                    run_id = await _run(client, api, await _thread(client, api), WORDS)
                    received[run_id] = []
                    fresh.append(run_id)
                readers = [
                    asyncio.create_task(_read(client, apis[(round_ + 1) % 2], run_id, received[run_id]))
                    for run_id in fresh
                ]
                kill_at = rng.randint(0, 30)
                deadline = time.monotonic() + 20
                while len(received[fresh[0]]) < kill_at and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                victim = rng.randrange(len(cluster.workers))
                cluster.workers[victim].kill()
                killed_at = time.monotonic()
                cluster.workers[victim] = cluster.add_worker()
                cluster.workers.pop()  # add_worker appended it too
                await asyncio.wait_for(asyncio.gather(*readers), LEASE_SECONDS + 10 + 30)
                for run_id in fresh:
                    assert received[run_id][-1].event in TERMINAL, run_id
                assert time.monotonic() - killed_at <= LEASE_SECONDS + 10 + 30
                await cluster.workers[victim].ready()
            disturbed = 0
            for run_id, frames in received.items():
                run = (await client.get(f"{apis[0]}/v1/runs/{run_id}")).json()
                disturbed += run["status"] == "interrupted" or run["attempt"] > 1
                log = await read_events(client, f"{apis[0]}/v1/runs/{run_id}/events")
                assert [f.seq for f in log] == list(range(1, len(log) + 1)), run_id
                assert sum(f.event in TERMINAL for f in log) == 1, run_id
                assert [(f.id, f.event, f.data) for f in frames] == [
                    (f.id, f.event, f.data) for f in log[: len(frames)]
                ], run_id
            # The kills really did land on runs in progress (interrupted, or queued again).
            assert disturbed >= 5, disturbed


async def _read(client: httpx.AsyncClient, api: str, run_id: str, frames: list[Frame]) -> None:
    """Follow a run to its terminal event, reconnecting with Last-Event-ID when a read breaks
    (a bounded number of times: a server that keeps breaking the stream fails the test)."""
    for _ in range(50):
        headers = {"Last-Event-ID": frames[-1].id} if frames else {}
        try:
            async with aconnect_sse(
                client, "GET", f"{api}/v1/runs/{run_id}/events", headers=headers
            ) as source:
                async for sse in source.aiter_sse():
                    frames.append(Frame(sse.id, sse.event, sse.data))
        except httpx.TransportError:
            await asyncio.sleep(0.1)
        if frames and frames[-1].event in TERMINAL:
            return
    raise AssertionError(f"run {run_id}: no terminal event after 50 reads")


async def test_starting_processes_does_not_disturb_live_runs(tmp_path: Path) -> None:
    async for cluster in _cluster(tmp_path, "postgres", PARLEY_MODEL="scripted:echo?delay_ms=60"):
        api = cluster.apis[0].url
        async with httpx.AsyncClient(timeout=30) as client:
            run_ids = [await _run(client, api, await _thread(client, api), WORDS) for _ in range(4)]
            await asyncio.sleep(0.5)
            newcomers = [cluster.add_api(), cluster.add_worker()]
            await asyncio.gather(*(p.ready() for p in newcomers))
            for run_id in run_ids:
                frames = await read_events(client, f"{newcomers[0].url}/v1/runs/{run_id}/events")
                assert frames[-1].event == "run.completed", run_id
                assert [f.event for f in frames].count("run.started") == 1
                assert (await client.get(f"{api}/v1/runs/{run_id}")).json()["attempt"] == 1


async def test_a_worker_runs_on_the_event_loop_parley_serve_runs_on(tmp_path: Path) -> None:
    """uvicorn runs ``parley serve`` on uvloop where it is installed; ``parley worker`` ran on
    asyncio's own loop, so a run executed on a slower loop there than in ``parley serve``."""
    expected = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    async with fresh_postgres() as url:
        cluster = Cluster(_env(url, tmp_path, "postgres", PARLEY_LOG_LEVEL="INFO"), log_dir=tmp_path)
        try:
            await cluster.start(apis=0, workers=1)
        finally:
            cluster.stop()
    lines = [
        json.loads(line)
        for line in (tmp_path / "worker-0.log").read_text().splitlines()
        if line.startswith("{")
    ]
    ready = [line for line in lines if line.get("event") == "parley_worker_ready"]
    assert [line["loop"] for line in ready] == [expected], lines


def _key(cluster: Cluster, user: str) -> dict[str, str]:
    created = subprocess.run(
        [sys.executable, "-m", "parley", "keys", "create", "--user", user],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return {"X-API-Key": created.stdout.strip()}


async def test_a_rate_limit_holds_across_two_api_processes(tmp_path: Path) -> None:
    async for cluster in _cluster(tmp_path, "redis", PARLEY_RATE_LIMIT="7/minute"):
        apis = [api.url for api in cluster.apis]
        headers = _key(cluster, "alice")
        await within_one_window()
        async with httpx.AsyncClient(timeout=30) as client:
            statuses = [
                (await client.get(f"{apis[i % 2]}/v1/threads", headers=headers)).status_code
                for i in range(12)
            ]
    assert statuses == [200] * 7 + [429] * 5, statuses


async def test_a_token_budget_holds_across_two_api_processes(tmp_path: Path) -> None:
    limit = 160
    budget = {"PARLEY_DAILY_TOKEN_BUDGET": str(limit), "PARLEY_BUDGET_OUTPUT_TOKENS": "50"}
    async for cluster in _cluster(tmp_path, "postgres", **budget):
        apis = [api.url for api in cluster.apis]
        headers = _key(cluster, "alice")
        async with httpx.AsyncClient(timeout=30, headers=headers) as client:
            threads = [await _thread(client, apis[i % 2]) for i in range(12)]
            responses = await asyncio.gather(
                *(
                    client.post(f"{apis[i % 2]}/v1/threads/{t}/runs", json={"input": "hello there friend"})
                    for i, t in enumerate(threads)
                )
            )
            created = [r.json()["id"] for r in responses if r.status_code == 201]
            refused = [r for r in responses if r.status_code == 429]
            finals = [
                (await read_events(client, f"{apis[0]}/v1/runs/{run_id}/events"))[-1] for run_id in created
            ]
        completed = [f.json["usage"] for f in finals if f.event == "run.completed"]
        assert completed
        assert refused or len(completed) < len(created)
        assert sum(u["input_tokens"] + u["output_tokens"] for u in completed) <= limit


ROOT = Path(__file__).resolve().parents[1]


def _has_local_services() -> bool:
    return bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))) and bool(shutil.which("redis-server"))


async def _lines_until(stream: asyncio.StreamReader, marker: str, seen: list[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not any(marker in line for line in seen):
            line = await stream.readline()
            if not line:
                raise AssertionError("make cluster ended early:\n" + "".join(seen))
            seen.append(line.decode())


async def test_make_cluster_serves_any_run_from_any_api_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """``make cluster`` as its user meets it: two API URLs and two workers' metrics printed, a run
    created on one API streams from the other, and Ctrl-C stops every process and service."""
    if not _has_local_services():
        _need(None, "PostgreSQL and Redis binaries (for make cluster)")
    ports = [free_port() for _ in range(4)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "VENV": sys.prefix,
        "API_PORTS": f"{ports[0]} {ports[1]}",
        "WORKER_METRICS_PORTS": f"{ports[2]} {ports[3]}",
        "PARLEY_DATA_DIR": str(tmp_path),
        "PARLEY_MODEL": "scripted:echo?delay_ms=5",
        "PARLEY_KNOWLEDGE": "{}",
    }
    script = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "cluster.sh"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert script.stdout is not None
    seen: list[str] = []
    try:
        await _lines_until(script.stdout, "Ctrl-C stops everything", seen, timeout=240)
        apis = [line.split()[-1] for line in seen if line.startswith("cluster: API")]
        metrics = [line.split()[-1] for line in seen if line.startswith("cluster: worker")]
        assert apis == [f"http://127.0.0.1:{p}" for p in ports[:2]], seen
        assert metrics == [f"http://127.0.0.1:{p}/metrics" for p in ports[2:]], seen
        database = next(
            line.split()[2].rstrip(",") for line in seen if line.startswith("cluster: PostgreSQL")
        )
        async with httpx.AsyncClient(timeout=30) as client:
            run_id = await _run(client, apis[0], await _thread(client, apis[0]), "one two three")
            frames = await read_events(client, f"{apis[1]}/v1/runs/{run_id}/events")
            assert frames[-1].event == "run.completed"
            assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == "one two three"
            for url in metrics:
                assert "parley_runs_active" in (await client.get(url)).text
        os.killpg(script.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole job
        await _lines_until(script.stdout, "cluster: stopping", seen, timeout=30)
        assert await asyncio.wait_for(script.wait(), 90) is not None
    finally:
        if script.returncode is None:
            os.killpg(script.pid, signal.SIGKILL)
            await script.wait()
    # Every process and service is gone: nothing answers on their ports.
    database_port = int(database.rsplit(":", 1)[1].split("/")[0])
    for port in [*ports, database_port]:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
