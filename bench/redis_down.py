"""What Redis trouble costs a request: ``python -m bench.redis_down [--requests N]``.

``GET /v1/threads`` (authenticated as the loopback user, rate-limited), one request at a time,
against one in-process server per case: counters in memory, in a healthy Redis
(``PARLEY_TEST_REDIS_URL``, skipped without it), in a Redis that accepts connections and never
answers (hung), and at an address where nothing listens (down). The added cost is the
difference from the memory case, side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench._util import free_port, machine, pct, serve_in_process
from parley.config import Settings


async def _hung_redis() -> tuple[asyncio.Server, str]:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"


async def _case(redis_url: str | None, requests: int) -> list[float]:
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(
            data_dir=Path(data),
            model="scripted:echo",
            embeddings="hash",
            redis_url=redis_url,
            bus="local",  # the limiter's Redis only
            rate_limit="1000000/minute",
            rate_limit_prefix=f"bench{os.getpid()}",
            log_level="ERROR",
        )
        async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url) as client:
            for _ in range(20):  # warm up (and, for a failing Redis, let the breaker open)
                await client.get("/v1/threads")
            timings = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get("/v1/threads")
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
            return timings


async def run(requests: int) -> None:
    hung, hung_url = await _hung_redis()
    cases: list[tuple[str, str | None]] = [("memory", None)]
    if os.environ.get("PARLEY_TEST_REDIS_URL"):
        cases.append(("redis, healthy", os.environ["PARLEY_TEST_REDIS_URL"]))
    cases += [("redis, hung", hung_url), ("redis, down (refused)", f"redis://127.0.0.1:{free_port()}/0")]
    results = {name: await _case(url, requests) for name, url in cases}
    hung.close()
    base = pct(results["memory"], 50)
    print(f"machine: {machine()}; {requests} sequential GET /v1/threads per case, after 20 warm-up requests")
    print(f"{'counters':24} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'added p50':>10}")
    for name, timings in results.items():
        print(
            f"{name:24} {pct(timings, 50):8.2f} {pct(timings, 99):8.2f} {max(timings):8.2f} "
            f"{pct(timings, 50) - base:+10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
