"""Memory per idle open SSE connection, at 1,000 connections.

A run that never answers (a scripted ``hang``) keeps every reader idle; the server's RSS
is read before and after opening the connections. Run: ``python -m bench.sse_memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench._util import ServerProcess, machine


async def open_idle(port: int, path: str, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n", 1)[0], head
        writers.append(writer)
        if i % 100 == 99:
            await asyncio.sleep(0)
    return writers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "hang.json"
        script.write_text(json.dumps([[{"text": "thinking"}, {"hang": True}]]))
        env = {
            "PARLEY_MODEL": f"scripted:script?path={script}",
            "PARLEY_SSE_PING_SECONDS": "15",
            # 1,000 streams from one address in seconds: past the default per-client limit.
            "PARLEY_RATE_LIMIT": "1000000/minute",
        }
        with ServerProcess(env) as server:
            process = psutil.Process(server.proc.pid)
            client = httpx.Client(base_url=server.url)
            thread = client.post("/v1/threads", json={}).json()["id"]
            run = client.post(f"/v1/threads/{thread}/runs", json={"input": "wait"}).json()["id"]

            # Warm the code paths with a few connections first, then measure.
            async def scenario() -> tuple[float, float]:
                warm = await open_idle(server.port, f"/v1/runs/{run}/events", 20)
                await asyncio.sleep(1)
                before = process.memory_info().rss
                writers = await open_idle(server.port, f"/v1/runs/{run}/events", args.connections)
                await asyncio.sleep(2)
                after = process.memory_info().rss
                for writer in writers + warm:
                    writer.close()
                return before, after

            started = time.perf_counter()
            before, after = asyncio.run(scenario())
            per = (after - before) / args.connections / 1024
            print(
                f"{args.connections} idle SSE connections: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB, "
                f"{per:.1f} KiB per connection (opened in {time.perf_counter() - started:.1f} s)"
            )
            client.post(f"/v1/runs/{run}/cancel")


if __name__ == "__main__":
    main()
