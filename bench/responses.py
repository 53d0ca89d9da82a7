"""Time to first token of ``POST /v1/responses`` (``stream: true``) against the native run API,
in one run, on one server.

``parley serve`` (a subprocess) with ``scripted:bench?tokens=50&delay_ms=0``, one stream at a
time from a minimal HTTP/1.1 client on raw sockets (``bench.streaming.RawClient``: httpx's own
cost would hide the server's), the three kinds interleaved sample by sample so load drifts hit
all alike:

- ``native``: ``POST /v1/threads/{id}/runs`` with ``"stream": true`` on a thread made just
  before (not timed), until the first ``message.delta``: what ``bench.streaming`` measures;
- ``native+thread``: the same with the thread's creation timed too (two requests): what a
  client of the native API pays for a new conversation;
- ``responses``: ``POST /v1/responses`` (a new thread, its input and the run in one request),
  until the first ``response.output_text.delta``.

Each stream is read to its end, then the server is left idle for ``--settle`` ms (20) before the
next sample: a finished run's after-work (memory, summaries) takes SQLite's write lock for a
moment, and a request arriving then queues behind it; the native run above, whose thread is
made first, would hide that wait in the untimed request. Run:
``python -m bench.responses [--samples 300] [--db postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

from bench._util import ServerProcess, machine, pct, postgres, summary
from bench.streaming import RawClient

SPEC = "scripted:bench?tokens=50&delay_ms=0"
EXPECTED = "".join(f" tok{i}" for i in range(50)).strip()


async def first_delta(
    client: RawClient, path: str, body: dict[str, object], event: bytes, started: float
) -> float:
    """Send ``body``, read the SSE stream to its end; ms from ``started`` to the first ``event``."""
    client.post(path, body)
    ttft, text, buffer = float("nan"), [], b""
    async for chunk in client.body(await client.head()):
        buffer += chunk
        *frames, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for frame in frames:
            fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
            if fields.get(b"event") == event:
                if not text:
                    ttft = (time.perf_counter() - started) * 1000
                data = json.loads(fields[b"data"])
                text.append(data.get("text") or data.get("delta") or "")
    assert "".join(text).strip() == EXPECTED, "a stream lost or garbled tokens"
    return ttft


SETTLE = 0.02


async def native(client: RawClient) -> float:
    thread = await client.new_thread()
    await asyncio.sleep(SETTLE)
    return await first_delta(
        client,
        f"/v1/threads/{thread}/runs",
        {"input": "go", "stream": True},
        b"message.delta",
        time.perf_counter(),
    )


async def native_with_thread(client: RawClient) -> float:
    await asyncio.sleep(SETTLE)
    started = time.perf_counter()
    thread = await client.new_thread()
    return await first_delta(
        client, f"/v1/threads/{thread}/runs", {"input": "go", "stream": True}, b"message.delta", started
    )


async def responses(client: RawClient) -> float:
    await asyncio.sleep(SETTLE)
    body = {"model": "general", "input": "go", "stream": True}
    return await first_delta(
        client, "/v1/responses", body, b"response.output_text.delta", time.perf_counter()
    )


KINDS: dict[str, Callable[[RawClient], Awaitable[float]]] = {
    "native": native,
    "native+thread": native_with_thread,
    "responses": responses,
}


async def measure(url: str, samples: int) -> dict[str, list[float]]:
    client = await RawClient.connect(url)
    try:
        for kind in KINDS.values():  # warm up every path
            for _ in range(5):
                await kind(client)
        out: dict[str, list[float]] = {name: [] for name in KINDS}
        for i in range(samples):
            order = list(KINDS.items()) if i % 2 == 0 else list(KINDS.items())[::-1]
            for name, kind in order:
                out[name].append(await kind(client))
        return out
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--settle", type=float, default=20.0, help="ms of idle server before each sample")
    args = parser.parse_args()
    global SETTLE
    SETTLE = args.settle / 1000
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    with postgres() as pg:
        env = {"PARLEY_MODEL": SPEC, "PARLEY_RATE_LIMIT": "1000000/minute"}
        if args.db == "postgres":
            if not pg:
                raise SystemExit("no PostgreSQL available")
            env["PARLEY_DATABASE_URL"] = pg
        with ServerProcess(env) as server:
            figures = asyncio.run(measure(server.url, args.samples))
    base = pct(figures["native"], 50)
    print(
        f"{SPEC}, {args.db}, one stream at a time, {args.samples} samples of each, interleaved, "
        f"{args.settle:g} ms idle before each"
    )
    for name, values in figures.items():
        # Sample i of each kind ran back to back: their difference is the least noisy figure.
        paired = [v - n for v, n in zip(values, figures["native"], strict=True)]
        print(
            f"{name:14s} TTFT ms: {summary(values)}   p50 vs native {pct(values, 50) - base:+.2f}"
            f"   paired difference p50 {pct(paired, 50):+.2f}"
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
