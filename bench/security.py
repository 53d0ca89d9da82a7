"""What authentication and rate limiting cost per request.

A real server (in a thread) answers ``GET /v1/threads`` for 8 concurrent clients, as:
the core's anonymous local user with no checks at all (baseline); anonymous on loopback;
an API key with counters in memory; an API key with counters in Redis.

    python -m bench.security [--requests 2000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import Request

from parley.app import Parley, create_app
from parley.config import Settings
from parley.keys import create_key
from parley.users import Principal


@contextmanager
def running(
    settings: Settings, *, bare: bool = False
) -> Iterator[tuple[str, Parley, asyncio.AbstractEventLoop]]:
    app = create_app(settings)
    parley: Parley = app.state.parley
    if bare:

        async def local(_: Request) -> Principal:
            assert parley.local_user is not None
            return parley.local_user

        parley.authenticate = local  # type: ignore[method-assign]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", parley, loop
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()


async def load(url: str, headers: dict[str, str], requests: int, clients: int = 8) -> dict[str, float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                response = await client.get("/v1/threads")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        await client.get("/v1/threads")
        started = time.perf_counter()
        await asyncio.gather(*(worker(requests // clients) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
    }


def case(data: Path, requests: int, *, key: bool, bare: bool = False, **overrides: Any) -> dict[str, float]:
    settings = Settings(
        data_dir=data / uuid.uuid4().hex,
        model="scripted:echo",
        rate_limit="1000000/minute",
        knowledge={},
        **overrides,
    )
    with running(settings, bare=bare) as (url, parley, loop):
        headers = {}
        if key:
            future = asyncio.run_coroutine_threadsafe(create_key(parley.db, "bench"), loop)
            headers = {"Authorization": f"Bearer {future.result(30).secret}"}
        return asyncio.run(load(url, headers, requests))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis", default=os.environ.get("PARLEY_TEST_REDIS_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        rows = {
            "no checks (core baseline)": case(data, args.requests, key=False, bare=True),
            "anonymous loopback, memory": case(data, args.requests, key=False),
            "API key, memory counters": case(data, args.requests, key=True),
        }
        if args.redis:
            prefix = f"bench-{uuid.uuid4().hex}"
            rows["API key, Redis counters"] = case(
                data, args.requests, key=True, redis_url=args.redis, rate_limit_prefix=prefix
            )
    base = rows["no checks (core baseline)"]["rps"]
    print(f"GET /v1/threads, {args.requests} requests, 8 concurrent clients, SQLite")
    print(f"{'variant':32} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'vs baseline':>12}")
    for name, row in rows.items():
        print(
            f"{name:32} {row['rps']:8.0f} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['rps'] / base:12.2f}"
        )


if __name__ == "__main__":
    main()
