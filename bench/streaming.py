"""Streaming overhead: time to first token through the server vs. the provider in-process.

``scripted:bench?tokens=500&delay_ms=0`` streamed by ``parley serve`` (a subprocess) to an
HTTP/SSE client (``POST /v1/threads/{id}/runs`` with ``"stream": true``), against the same
provider called in-process, in one run. Reports the added TTFT at 1 and at 100 concurrent
streams. Run: ``python -m bench.streaming [--db postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from httpx_sse import aconnect_sse

from bench._util import ServerProcess, machine, pct, postgres, summary
from parley.providers.base import ProviderRequest, TextDelta
from parley.providers.scripted import ScriptedProvider

SPEC = "scripted:bench?tokens=500&delay_ms=0"


async def in_process_ttft(samples: int) -> list[float]:
    provider = ScriptedProvider.from_spec(SPEC.split(":", 1)[1])
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        stream = provider.stream(ProviderRequest(messages=[]))
        async for delta in stream:
            if isinstance(delta, TextDelta):
                out.append((time.perf_counter() - started) * 1000)
                break
        await stream.aclose()  # type: ignore[attr-defined]
    return out


async def one_stream(client: httpx.AsyncClient, thread: str) -> tuple[float, int]:
    started = time.perf_counter()
    ttft = float("nan")
    tokens = 0
    body = {"input": "go", "stream": True}
    async with aconnect_sse(client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                if tokens == 0:
                    ttft = (time.perf_counter() - started) * 1000
                tokens += 1
    return ttft, tokens


async def through_server(url: str, concurrency: int, rounds: int) -> list[float]:
    """TTFT of ``concurrency`` streams started at once, ``rounds`` times; each on a new thread."""
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def fresh_threads() -> list[str]:
            return [(await client.post("/v1/threads", json={})).json()["id"] for _ in range(concurrency)]

        await one_stream(client, (await fresh_threads())[0])  # warm up
        ttfts: list[float] = []
        for _ in range(rounds):
            threads = await fresh_threads()
            results = await asyncio.gather(*(one_stream(client, t) for t in threads))
            assert all(tokens == 500 for _, tokens in results), "a stream lost tokens"
            ttfts.extend(t for t, _ in results)
        return ttfts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with postgres() as pg:
        env = {"PARLEY_MODEL": SPEC, "PARLEY_MAX_CONCURRENT_RUNS": "128"}
        if args.db == "postgres":
            if not pg:
                raise SystemExit("no PostgreSQL available")
            env["PARLEY_DATABASE_URL"] = pg
        with ServerProcess(env) as server:
            local = asyncio.run(in_process_ttft(args.samples))
            print(f"in-process provider TTFT ms:      {summary(local)}")
            base = pct(local, 50)
            for concurrency, rounds in ((1, args.samples), (100, 3)):
                ttfts = asyncio.run(through_server(server.url, concurrency, rounds))
                added = [t - base for t in ttfts]
                print(
                    f"{args.db} {concurrency:3d} stream(s) TTFT ms: {summary(ttfts)}   "
                    f"added p50 {pct(added, 50):.2f}  p95 {pct(added, 95):.2f}"
                )


if __name__ == "__main__":
    main()
