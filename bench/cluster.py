"""Scale-out: what running API and workers as separate processes costs and buys, on PostgreSQL.

In one run, side by side (``python -m bench.cluster [--samples 200] [--sustained 100] [--runs 300]
[--idle-seconds 60] [--only ttft,throughput,idle,recovery,steps]``):

1. **Added time to first token** when the API and the worker are different processes: one
   ``parley serve`` (embedded worker) against one ``parley serve`` with ``PARLEY_WORKER=off`` plus
   one ``parley worker``, each on its own database of the same PostgreSQL, probes interleaved.
   At 1 stream, and with ``--sustained`` streams kept open on each topology: chat users reading
   a reply as a model writes it (the ``drip`` assistant: a word a second, a new reply when one
   ends).
2. **Throughput**: completed runs per second with 1 and with 2 workers behind one API process
   (the scripted provider, no delay: the engine's own cost).
3. **An idle cluster's database load**: transactions per second of an idle 2 API + 2 worker
   cluster (``pg_stat_database``: every statement Parley issues when idle is its own transaction).
4. **Recovery**: seconds from a worker's SIGKILL until every run it held is resolved (ended, or
   queued again for the other worker) and until all are terminal, with the default 15 s lease.
5. **Steps** (``--only steps``, not in the default run): where a probe's time to first token
   goes in each topology, from the database's stamps: run created, claimed, ``run.started``
   and first text written, and the client's receipt; with ``--sustained`` streams kept open
   on each topology, as in 1. (``--sustained 0``: the probes alone).

Needs PostgreSQL (``PARLEY_TEST_POSTGRES_URL``, or Debian's, started throwaway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from bench._util import machine, pct, postgres
from parley.bus.postgres import asyncpg_dsn
from parley.testing import Cluster

TERMINAL = {"completed", "failed", "cancelled", "interrupted"}


@asynccontextmanager
async def database(server_url: str) -> AsyncIterator[str]:
    import asyncpg  # type: ignore[import-untyped]

    name = f"bench_{uuid.uuid4().hex[:12]}"
    dsn = asyncpg_dsn(server_url)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@asynccontextmanager
async def cluster(
    server_url: str, apis: int, workers: int, *, serves: int = 0, **env: str
) -> AsyncIterator[Cluster]:
    """``apis`` API-only processes, ``serves`` with an embedded worker, ``workers`` workers."""
    async with database(server_url) as url:
        data = tempfile.mkdtemp(prefix="parley-bench-")
        settings = {
            "PARLEY_DATABASE_URL": url,
            "PARLEY_DATA_DIR": data,
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_MODEL": "scripted:echo?delay_ms=0",
            "PARLEY_RATE_LIMIT": "100000/second",
            "PARLEY_KNOWLEDGE": "{}",  # no demo knowledge syncing in the background
            **env,
        }
        running = Cluster(settings)
        try:
            yield await running.start(apis=apis, workers=workers, serves=serves)
        finally:
            running.stop()


async def probe(client: httpx.AsyncClient, api: str, text: str = "go") -> tuple[str, float, float]:
    """A new thread's run, streamed: its thread id, and the wall-clock times of the request and
    of the first text. The stream is read to its end, so a probe never overlaps the next one."""
    thread = (await client.post(f"{api}/v1/threads", json={})).json()["id"]
    sent = time.time()
    first: float | None = None
    async with aconnect_sse(
        client, "POST", f"{api}/v1/threads/{thread}/runs", json={"input": text, "stream": True}
    ) as source:
        async for sse in source.aiter_sse():
            if sse.event == "message.delta" and first is None:
                first = time.time()
    if first is None:
        raise RuntimeError("no text streamed")
    return thread, sent, first


async def ttft(client: httpx.AsyncClient, api: str) -> float:
    """Milliseconds from the request to the first text."""
    _, sent, first = await probe(client, api)
    return (first - sent) * 1000


#: The kept-open streams' assistant: a model that writes a word a second.
DRIP = """
[assistants.drip]
description = "Writes a word a second (bench.cluster's open streams)."
model = "scripted:echo?delay_ms=1000"
"""


async def keep_streaming(client: httpx.AsyncClient, api: str, stop: asyncio.Event, words: int) -> None:
    text = " ".join(f"w{i}" for i in range(words))
    while not stop.is_set():
        thread = (await client.post(f"{api}/v1/threads", json={"assistant": "drip"})).json()["id"]
        body = {"input": text, "stream": True}
        async with aconnect_sse(client, "POST", f"{api}/v1/threads/{thread}/runs", json=body) as source:
            async for _ in source.aiter_sse():
                if stop.is_set():
                    break


def _drip_env(sustained: int) -> dict[str, str]:
    config = Path(tempfile.mkdtemp(prefix="parley-bench-")) / "parley.toml"
    config.write_text(DRIP)
    return {
        "PARLEY_MODEL": "scripted:echo?delay_ms=20",
        "PARLEY_CONFIG_FILE": str(config),
        # Room for every open stream's run and the probe's: a probe must not queue behind them.
        "PARLEY_MAX_CONCURRENT_RUNS": str(sustained + 16),
    }


def _client(sustained: int) -> httpx.AsyncClient:
    room = 2 * sustained + 50
    return httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=room, max_keepalive_connections=room)
    )


@asynccontextmanager
async def kept_open(client: httpx.AsyncClient, apis: list[str], streams: int) -> AsyncIterator[None]:
    """``streams`` chat users on each API reading a word a second, for the block's length."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(keep_streaming(client, api, stop, words=60))
        for api in apis
        for _ in range(streams)
    ]
    await asyncio.sleep(5 if streams else 0)
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def compare_ttft(server_url: str, samples: int, sustained: int) -> None:
    env = _drip_env(sustained)
    async with cluster(server_url, 0, 0, serves=1, **env) as one, cluster(server_url, 1, 1, **env) as split:
        single = one.apis[0]
        async with _client(sustained) as client:
            for label, background in (("1 stream", 0), (f"{sustained} kept open", sustained)):
                times: dict[str, list[float]] = {"one process": [], "API + worker": []}
                async with kept_open(client, [single.url, split.apis[0].url], background):
                    for _ in range(samples):
                        times["one process"].append(await ttft(client, single.url))
                        times["API + worker"].append(await ttft(client, split.apis[0].url))
                a, b = times["one process"], times["API + worker"]
                print(
                    f"TTFT, {label}: one process p50 {pct(a, 50):.2f} ms p95 {pct(a, 95):.2f}; "
                    f"API + worker p50 {pct(b, 50):.2f} ms p95 {pct(b, 95):.2f}; "
                    f"added p50 {pct(b, 50) - pct(a, 50):+.2f} ms (n={samples} each, interleaved)",
                    flush=True,
                )


#: A probe's steps, from the database's stamps (all processes on one host, one clock).
STEPS = (
    "request -> run created",
    "created -> claimed",
    "claimed -> run.started written",
    "run.started -> first text written",
    "first text written -> received",
)


async def steps(server_url: str, samples: int, sustained: int) -> None:
    """Where a probe's time to first token goes, step by step, in each topology (medians), with
    ``sustained`` streams kept open on each (``--sustained 0``: the probes alone)."""
    import asyncpg

    env = _drip_env(sustained)
    async with cluster(server_url, 0, 0, serves=1, **env) as one, cluster(server_url, 1, 1, **env) as split:
        probes: dict[str, list[tuple[str, float, float]]] = {"one process": [], "API + worker": []}
        async with (
            _client(sustained) as client,
            kept_open(client, [one.apis[0].url, split.apis[0].url], sustained),
        ):
            for _ in range(samples):
                probes["one process"].append(await probe(client, one.apis[0].url))
                probes["API + worker"].append(await probe(client, split.apis[0].url))
        print(
            f"steps of time to first token, {sustained} streams kept open, medians of {samples} probes "
            "each, interleaved (ms):",
            flush=True,
        )
        for (label, taken), running in zip(probes.items(), (one, split), strict=True):
            dsn = asyncpg_dsn(running.env["PARLEY_DATABASE_URL"])
            conn = await asyncpg.connect(dsn)
            times: list[list[float]] = [[] for _ in STEPS]
            for thread, sent, first in taken:
                run = await conn.fetchrow(
                    "SELECT id, created_at, started_at FROM runs WHERE thread_id = $1", thread
                )
                events = await conn.fetch(
                    "SELECT type, created_at FROM run_events WHERE run_id = $1 ORDER BY seq", run["id"]
                )
                started = next(e["created_at"] for e in events if e["type"] == "run.started")
                text = next(e["created_at"] for e in events if e["type"] == "message.delta")
                marks = (sent, run["created_at"], run["started_at"], started, text, first)
                for i in range(len(STEPS)):
                    times[i].append((marks[i + 1] - marks[i]) * 1000)
            await conn.close()
            cells = "; ".join(f"{step} {pct(t, 50):.2f}" for step, t in zip(STEPS, times, strict=True))
            print(f"  {label}: {cells}", flush=True)


async def throughput(server_url: str, runs: int) -> None:
    rates = []
    for workers in (1, 2):
        async with cluster(server_url, 1, workers) as running:
            api = running.apis[0].url
            async with httpx.AsyncClient(timeout=120) as client:
                threads = [
                    (await client.post(f"{api}/v1/threads", json={})).json()["id"] for _ in range(runs)
                ]
                started = time.perf_counter()
                ids = await asyncio.gather(
                    *(
                        client.post(f"{api}/v1/threads/{t}/runs", json={"input": "one two three"})
                        for t in threads
                    )
                )
                pending = {r.json()["id"] for r in ids}
                while pending:
                    statuses = await asyncio.gather(*(client.get(f"{api}/v1/runs/{i}") for i in pending))
                    pending = {r.json()["id"] for r in statuses if r.json()["status"] not in TERMINAL}
                    await asyncio.sleep(0.05)
                rate = runs / (time.perf_counter() - started)
                rates.append(rate)
                print(
                    f"throughput: {workers} worker(s): {rate:.1f} completed runs/s ({runs} runs)", flush=True
                )
    print(f"throughput: 2 workers / 1 worker = {rates[1] / rates[0]:.2f}x", flush=True)


async def idle_load(server_url: str, seconds: float) -> None:
    import asyncpg

    async with cluster(server_url, 2, 2) as running:
        url = running.env["PARLEY_DATABASE_URL"]
        name = url.rsplit("/", 1)[1]
        dsn = asyncpg_dsn(url)
        await asyncio.sleep(10)  # start-up chores done
        conn = await asyncpg.connect(dsn)
        query = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        before = await conn.fetchval(query, name)
        await asyncio.sleep(seconds)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        after = await conn.fetchval(query, name)
        await conn.close()
        # The probe's own transactions (a few) are included: an upper bound.
        print(
            f"idle 2 API + 2 worker cluster: {(after - before) / seconds:.2f} transactions/s "
            f"over {seconds:.0f} s (each idle statement is its own transaction)",
            flush=True,
        )


async def recovery(server_url: str) -> None:
    import asyncpg

    async with cluster(server_url, 1, 2, PARLEY_MODEL="scripted:echo?delay_ms=50") as running:
        api = running.apis[0].url
        dsn = asyncpg_dsn(running.env["PARLEY_DATABASE_URL"])
        text = " ".join(f"w{i}" for i in range(200))
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(20):
                thread = (await client.post(f"{api}/v1/threads", json={})).json()["id"]
                await client.post(f"{api}/v1/threads/{thread}/runs", json={"input": text})
            await asyncio.sleep(2)
            conn = await asyncpg.connect(dsn)
            rows = await conn.fetch("SELECT id, worker_id FROM runs WHERE status = 'running'")
            victim = running.workers[0]
            owned = [r["id"] for r in rows if r["worker_id"] and f":{victim.proc.pid}:" in r["worker_id"]]
            victim.kill()
            killed = time.perf_counter()
            resolved_after = terminal_after = None
            while terminal_after is None:
                states = await conn.fetch(
                    "SELECT status, worker_id FROM runs WHERE id = ANY($1::varchar[])", owned
                )
                mark = f":{victim.proc.pid}:"
                moved = all(s["status"] != "running" or mark not in (s["worker_id"] or "") for s in states)
                if moved and resolved_after is None:
                    resolved_after = time.perf_counter() - killed
                if all(s["status"] in TERMINAL for s in states):
                    terminal_after = time.perf_counter() - killed
                await asyncio.sleep(0.05)
            outcome = json.dumps({status: [s["status"] for s in states].count(status) for status in TERMINAL})
            await conn.close()
        print(
            f"recovery (lease 15 s): SIGKILL of a worker holding {len(owned)} runs; all resolved after "
            f"{resolved_after:.1f} s, all terminal after {terminal_after:.1f} s; outcomes {outcome}",
            flush=True,
        )


async def main_async(args: argparse.Namespace) -> None:
    with postgres() as server_url:
        if server_url is None:
            raise SystemExit(
                "bench.cluster needs PostgreSQL (PARLEY_TEST_POSTGRES_URL or Debian's postgresql)"
            )
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}", flush=True)
        parts = set(args.only.split(","))
        if "ttft" in parts:
            await compare_ttft(server_url, args.samples, args.sustained)
        if "steps" in parts:
            await steps(server_url, args.samples, args.sustained)
        if "throughput" in parts:
            await throughput(server_url, args.runs)
        if "idle" in parts:
            await idle_load(server_url, args.idle_seconds)
        if "recovery" in parts:
            await recovery(server_url)
        print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sustained", type=int, default=100)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--only",
        default="ttft,throughput,idle,recovery",
        help="the parts to run, comma-separated (and steps: where the time to first token goes)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
