"""The event loop while a large document ingests (issue #19, item 1): thread pool vs process pool.

    python -m bench.ingest_loop [--mb 20] [--runs 200] [--embeddings hash|minilm|none]
        [--pools thread,process]

For each pool (``PARLEY_INGEST_WORKERS``), a ``parley serve`` subprocess (scripted model: it
echoes the input a word every 50 ms) receives a Markdown document of ``--mb`` MB (SciFact
abstracts, repeated) as a job while a client (another process: this one) polls ``/healthz``
every 20 ms and reads a long run's stream; one second into the ingest a third process creates
``--runs`` runs at once (``POST /v1/threads/{id}/runs``, each on its own thread, a two-word
answer): the burst's client has its own event loop, so its work never shows in the timings.
Printed: ``/healthz`` latency p50/p99/max during the ingest, the gaps between the stream's
tokens (p50/p99/max against the model's 50 ms), the burst's creation latency (p50/p99/max,
and the time until every run has ended), and the ingest's duration.
Embeddings default to ``none`` so that the CPU work measured is parsing, chunking, tokenizing
and indexing (MiniLM's forward passes run in threads and release the GIL either way).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench._util import ServerProcess, machine, pct

DATASETS = Path(
    os.environ.get("PARLEY_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)
ROOT = Path(__file__).resolve().parents[1]
DELAY_MS = 50


def document(megabytes: float) -> bytes:
    rows = [json.loads(line) for line in (DATASETS / "scifact" / "corpus.jsonl").read_text().splitlines()]
    out = io.StringIO()
    out.write("# SciFact, repeated\n\n")
    target = int(megabytes * 1_000_000)
    i = 0
    while out.tell() < target:
        row = rows[i % len(rows)]
        out.write(f"## {row['title']} ({i})\n\n{row['text']}\n\n")
        i += 1
    return out.getvalue().encode()[:target]


async def measure(url: str, data: bytes, runs: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=runs + 10)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        kb = (await client.post("/v1/knowledge-bases", json={"name": "big"})).json()["id"]
        thread = (await client.post("/v1/threads", json={})).json()["id"]
        burst_threads = [(await client.post("/v1/threads", json={})).json()["id"] for _ in range(runs)]
        health: list[float] = []
        gaps: list[float] = []
        created: list[float] = []
        done = asyncio.Event()
        words = " ".join(f"w{i}" for i in range(4000))  # 200 s of tokens, a word every 50 ms

        async def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await client.get("/healthz")
                health.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)

        async def stream() -> None:
            while not done.is_set():
                last = None
                body = {"input": words, "stream": True}
                async with aconnect_sse(client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
                    async for sse in source.aiter_sse():
                        if sse.event == "message.delta":
                            now = time.perf_counter()
                            if last is not None and not done.is_set():
                                gaps.append((now - last) * 1000)
                            last = now

        async def burst() -> float:
            # Its own process: two hundred requests at once keep a client's event loop busy
            # for a second, which would show in this process's timings as the server's.
            await asyncio.sleep(1.0)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.ingest_loop",
                "--burst-of",
                url,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            out, _ = await process.communicate(json.dumps(burst_threads).encode())
            result = json.loads(out)
            created.extend(result["created"])
            return float(result["seconds"])

        pollers = [asyncio.create_task(poll()), asyncio.create_task(stream())]
        await asyncio.sleep(1.0)
        health.clear()
        gaps.clear()
        started = time.perf_counter()
        response = await client.post(
            f"/v1/knowledge-bases/{kb}/documents", files={"file": ("big.md", data, "text/markdown")}
        )
        assert response.status_code == 202, response.text
        bursting = asyncio.create_task(burst()) if runs else None
        job = response.json()["job"]
        while True:
            state = (await client.get(f"/v1/knowledge-bases/{kb}/jobs/{job['id']}")).json()
            if state["status"] != "running":
                break
            await asyncio.sleep(0.5)
        seconds = time.perf_counter() - started
        burst_s = await bursting if bursting is not None else float("nan")
        done.set()
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        assert state["status"] == "completed", state
        return {
            "ingest_s": seconds,
            "chunks": state["results"][0]["chunks"],
            "healthz_p50": pct(health, 50),
            "healthz_p99": pct(health, 99),
            "healthz_max": max(health),
            "healthz_n": len(health),
            "gap_p50": pct(gaps, 50),
            "gap_p99": pct(gaps, 99),
            "gap_max": max(gaps) if gaps else float("nan"),
            "create_p50": pct(created, 50),
            "create_p99": pct(created, 99),
            "create_max": max(created) if created else float("nan"),
            "burst_s": burst_s,
        }


async def burst_of(url: str, threads: list[str]) -> dict[str, Any]:
    """One run created on each thread at once; then until every one has ended."""
    limits = httpx.Limits(max_connections=len(threads) + 10)
    created: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def create(thread_id: str) -> str:
            started = time.perf_counter()
            response = await client.post(f"/v1/threads/{thread_id}/runs", json={"input": "hello there"})
            created.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 201, 202), response.text
            return str(response.json()["id"])

        started = time.perf_counter()
        ids = await asyncio.gather(*(create(t) for t in threads))
        for run_id in ids:  # until every run of the burst has ended
            while (await client.get(f"/v1/runs/{run_id}")).json()["status"] in ("queued", "running"):
                await asyncio.sleep(0.2)
    return {"created": created, "seconds": time.perf_counter() - started}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--burst-of":  # the burst's own process (``measure``)
        print(json.dumps(asyncio.run(burst_of(sys.argv[2], json.loads(sys.stdin.read())))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=200, help="Runs created at once during the ingest.")
    parser.add_argument("--embeddings", default="none")
    parser.add_argument("--pools", default="thread,process")
    args = parser.parse_args()
    data = document(args.mb)
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}; document {len(data) / 1e6:.1f} MB")
    print(
        f"{'pool':8} {'ingest s':>9} {'chunks':>7} {'healthz p50/p99/max ms':>24} "
        f"{'token gap p50/p99/max ms':>26} {f'{args.runs} runs: create p50/p99/max ms, all ended s':>42}"
    )
    for pool in args.pools.split(","):
        env = {
            "PARLEY_INGEST_WORKERS": pool,
            "PARLEY_EMBEDDINGS": args.embeddings,
            "PARLEY_MODEL": f"scripted:echo?delay_ms={DELAY_MS}",
            "PARLEY_KNOWLEDGE_MAX_UPLOAD_BYTES": str(len(data) + 1024),
            # the default limit (120/minute per client) would answer most of the burst with 429
            "PARLEY_RATE_LIMIT": "100000/minute",
        }
        with ServerProcess(env, code=ROOT) as server:
            r = asyncio.run(measure(server.url, data, args.runs))
        print(
            f"{pool:8} {r['ingest_s']:9.1f} {r['chunks']:7.0f} "
            f"{r['healthz_p50']:8.1f} /{r['healthz_p99']:7.1f} /{r['healthz_max']:7.1f} "
            f"{r['gap_p50']:9.1f} /{r['gap_p99']:7.1f} /{r['gap_max']:7.1f} "
            f"{r['create_p50']:14.1f} /{r['create_p99']:7.1f} /{r['create_max']:7.1f}, {r['burst_s']:5.1f}",
            flush=True,
        )
    print(f"(the model sends a word every {DELAY_MS} ms; load average at end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
