"""The event loop while a large document ingests (issue #19, item 1): thread pool vs process pool.

    python -m bench.ingest_loop [--mb 20] [--embeddings hash|minilm|none] [--pools thread,process]

For each pool (``PARLEY_INGEST_WORKERS``), a ``parley serve`` subprocess (scripted model: one
token every 50 ms) receives a Markdown document of ``--mb`` MB (SciFact abstracts, repeated) as
a job while a client (another process: this one) polls ``/healthz`` every 20 ms and reads a
run's stream. Printed: ``/healthz`` latency p50/p99/max during the ingest, the gaps between
the stream's tokens (p50/p99/max against the model's 50 ms), and the ingest's duration.
Embeddings default to ``none`` so that the CPU work measured is parsing, chunking, tokenizing
and indexing (MiniLM's forward passes run in threads and release the GIL either way).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from pathlib import Path

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


async def measure(url: str, data: bytes) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        kb = (await client.post("/v1/knowledge-bases", json={"name": "big"})).json()["id"]
        thread = (await client.post("/v1/threads", json={})).json()["id"]
        health: list[float] = []
        gaps: list[float] = []
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await client.get("/healthz")
                health.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)

        async def stream() -> None:
            while not done.is_set():
                last = None
                body = {"input": "go", "stream": True}
                async with aconnect_sse(client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
                    async for sse in source.aiter_sse():
                        if sse.event == "message.delta":
                            now = time.perf_counter()
                            if last is not None and not done.is_set():
                                gaps.append((now - last) * 1000)
                            last = now

        pollers = [asyncio.create_task(poll()), asyncio.create_task(stream())]
        await asyncio.sleep(1.0)
        health.clear()
        gaps.clear()
        started = time.perf_counter()
        response = await client.post(
            f"/v1/knowledge-bases/{kb}/documents", files={"file": ("big.md", data, "text/markdown")}
        )
        assert response.status_code == 202, response.text
        job = response.json()["job"]
        while True:
            state = (await client.get(f"/v1/knowledge-bases/{kb}/jobs/{job['id']}")).json()
            if state["status"] != "running":
                break
            await asyncio.sleep(0.5)
        seconds = time.perf_counter() - started
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
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--embeddings", default="none")
    parser.add_argument("--pools", default="thread,process")
    args = parser.parse_args()
    data = document(args.mb)
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}; document {len(data) / 1e6:.1f} MB")
    print(
        f"{'pool':8} {'ingest s':>9} {'chunks':>7} {'healthz p50/p99/max ms':>24} {'token gap p50/p99/max ms':>26}"
    )
    for pool in args.pools.split(","):
        env = {
            "PARLEY_INGEST_WORKERS": pool,
            "PARLEY_EMBEDDINGS": args.embeddings,
            "PARLEY_MODEL": f"scripted:bench?tokens=100000&delay_ms={DELAY_MS}",
            "PARLEY_KNOWLEDGE_MAX_UPLOAD_BYTES": str(len(data) + 1024),
        }
        with ServerProcess(env, code=ROOT) as server:
            r = asyncio.run(measure(server.url, data))
        print(
            f"{pool:8} {r['ingest_s']:9.1f} {r['chunks']:7.0f} "
            f"{r['healthz_p50']:8.1f} /{r['healthz_p99']:7.1f} /{r['healthz_max']:7.1f} "
            f"{r['gap_p50']:9.1f} /{r['gap_p99']:7.1f} /{r['gap_max']:7.1f}",
            flush=True,
        )
    print(f"(the model sends a token every {DELAY_MS} ms; load average at end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
