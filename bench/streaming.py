"""Streaming overhead: time to first token through the server vs. the provider in-process.

``scripted:bench?tokens=500&delay_ms=0`` streamed by ``parley serve`` (a subprocess) to an
HTTP/SSE client (``POST /v1/threads/{id}/runs`` with ``"stream": true``), against the same
provider called in-process, in one run. Reports the added TTFT at 1 and at 100 concurrent
streams, and the CPU the client and the server used (they share the machine's cores).
Run: ``python -m bench.streaming [--db postgres] [--baseline DIR]``; ``--baseline`` serves a
second server from another checkout (e.g. ``git archive`` of the previous commit) and
interleaves the two, so both sides see the same machine load.

"100 concurrent streams" is measured two ways. ``--streams 100``: a burst, 100 runs created
at the same instant (every run's set-up queues behind the others'). ``--sustained 100``: 100
streams kept open, each token paced (``--delay-ms``, 20 by default: 50 tokens/s, 10 s per
stream), clients starting new ones as theirs end, staggered so arrivals spread out: the
time to first token of a stream that starts while ~99 others are streaming, against the
same paced provider in-process (whose first token also waits one delay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from bench._util import ServerProcess, machine, pct, postgres, summary
from parley.providers.base import ProviderRequest, TextDelta
from parley.providers.scripted import ScriptedProvider

T = TypeVar("T")
SPEC = "scripted:bench?tokens=500&delay_ms=0"
EXPECTED = "".join(f" tok{i}" for i in range(500))


async def in_process_ttft(samples: int, spec: str = SPEC) -> list[float]:
    provider = ScriptedProvider.from_spec(spec.split(":", 1)[1])
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


async def one_stream(client: httpx.AsyncClient, thread: str) -> tuple[float, str]:
    started = time.perf_counter()
    ttft = float("nan")
    text: list[str] = []
    body = {"input": "go", "stream": True}
    async with aconnect_sse(client, "POST", f"/v1/threads/{thread}/runs", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.event == "message.delta":
                if not text:
                    ttft = (time.perf_counter() - started) * 1000
                text.append(json.loads(sse.data)["text"])
    return ttft, "".join(text)


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
            assert all(text == EXPECTED for _, text in results), "a stream lost or garbled tokens"
            ttfts.extend(t for t, _ in results)
        return ttfts


class RawClient:
    """A minimal HTTP/1.1 + SSE client on one keep-alive connection: what the server adds to
    time to first token, without httpx's own cost (a millisecond or more per request here)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    def post(self, path: str, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def head(self) -> dict[str, str]:
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        assert lines[0].split()[1] in ("200", "201"), lines[0]
        return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}

    async def body(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        if "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
            return
        while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
            yield (await self.reader.readexactly(size + 2))[:-2]
        await self.reader.readuntil(b"\r\n")

    async def new_thread(self) -> str:
        self.post("/v1/threads", {})
        return str(json.loads(b"".join([c async for c in self.body(await self.head())]))["id"])

    async def stream(self, thread: str) -> tuple[float, str]:
        started = time.perf_counter()
        ttft, text, buffer = float("nan"), [], b""
        self.post(f"/v1/threads/{thread}/runs", {"input": "go", "stream": True})
        async for chunk in self.body(await self.head()):
            buffer += chunk
            *frames, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            for frame in frames:
                fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
                if fields.get(b"event") == b"message.delta":
                    if not text:
                        ttft = (time.perf_counter() - started) * 1000
                    text.append(json.loads(fields[b"data"])["text"])
        return ttft, "".join(text)

    def close(self) -> None:
        self.writer.close()


async def through_server_raw(url: str, concurrency: int, rounds: int) -> list[float]:
    clients = [await RawClient.connect(url) for _ in range(concurrency)]
    try:
        await clients[0].stream(await clients[0].new_thread())  # warm up
        ttfts: list[float] = []
        for _ in range(rounds):
            threads = [await c.new_thread() for c in clients]
            results = await asyncio.gather(*(c.stream(t) for c, t in zip(clients, threads, strict=True)))
            assert all(text == EXPECTED for _, text in results), "a stream lost or garbled tokens"
            ttfts.extend(t for t, _ in results)
        return ttfts
    finally:
        for c in clients:
            c.close()


async def sustained(url: str, streams: int, stream_s: float, measure_s: float) -> list[tuple[float, int]]:
    """``streams`` clients, each streaming run after run; started ``stream_s / streams`` apart so
    that arrivals spread evenly. ``(ttft, streams open when it started)`` for each stream started
    after the ramp (one stream's length), until ``measure_s`` later."""
    clients = [await RawClient.connect(url) for _ in range(streams)]
    opened = 0
    started = time.perf_counter()
    ramp_end, stop = started + stream_s, started + stream_s + measure_s
    out: list[tuple[float, int]] = []

    async def client(i: int, c: RawClient) -> None:
        nonlocal opened
        await asyncio.sleep(i * stream_s / streams)
        while time.perf_counter() < stop:
            thread = await c.new_thread()
            measured, others = time.perf_counter() >= ramp_end, opened
            opened += 1
            try:
                ttft, text = await c.stream(thread)
            finally:
                opened -= 1
            assert text == EXPECTED, "a stream lost or garbled tokens"
            if measured:
                out.append((ttft, others))

    try:
        await asyncio.gather(*(client(i, c) for i, c in enumerate(clients)))
        return out
    finally:
        for c in clients:
            c.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    """One server under test and what it measured."""

    name: str
    server: ServerProcess
    client: str = "httpx"
    ttfts: list[float] = field(default_factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    #: ``--sustained``: the streams open when each measured one started; the event log's work.
    others: list[int] = field(default_factory=list)
    events: float = 0.0
    commits: float = 0.0

    def timed(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``, adding its wall time and the client's and server's CPU to this side."""
        wall, client, served = time.perf_counter(), time.process_time(), cpu_seconds(self.server.proc.pid)
        try:
            return asyncio.run(work)
        finally:
            self.wall += time.perf_counter() - wall
            self.client_cpu += time.process_time() - client
            self.server_cpu += cpu_seconds(self.server.proc.pid) - served

    def measure(self, concurrency: int, rounds: int) -> None:
        run = through_server_raw if self.client == "raw" else through_server
        self.ttfts += self.timed(run(self.server.url, concurrency, rounds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=3, help="bursts of 100 streams per side (--sustained: runs per side)"
    )
    parser.add_argument("--streams", type=int, nargs="+", choices=[1, 100], default=[1, 100])
    parser.add_argument(
        "--sustained",
        type=int,
        metavar="N",
        help="instead: N streams kept open with paced tokens (see the module's doc), raw client",
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="--sustained: delay per token")
    parser.add_argument("--seconds", type=float, default=30.0, help="--sustained: measured time")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also serve from this checkout of parley (SQLite only), interleaved with this one",
    )
    parser.add_argument(
        "--client",
        choices=["httpx", "raw"],
        default="httpx",
        help="httpx + httpx-sse, or a minimal HTTP/1.1 client on raw sockets (measures the server alone)",
    )
    args = parser.parse_args()
    if args.baseline and args.db != "sqlite":
        raise SystemExit("--baseline compares on SQLite: two servers must not share one database")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    with postgres() as pg, ExitStack() as stack:
        env = {
            "PARLEY_MODEL": SPEC,
            "PARLEY_MAX_CONCURRENT_RUNS": "128",
            "PARLEY_RATE_LIMIT": "1000000/minute",
        }
        if args.db == "postgres":
            if not pg:
                raise SystemExit("no PostgreSQL available")
            env["PARLEY_DATABASE_URL"] = pg
        sides = [Side("this", stack.enter_context(ServerProcess(env)), args.client)]
        if args.sustained:
            paced = f"scripted:bench?tokens=500&delay_ms={args.delay_ms:g}"
            penv = {**env, "PARLEY_MODEL": paced}
            servers = [Side("this", stack.enter_context(ServerProcess(penv)), "raw")]
            if args.baseline:
                code = Path(args.baseline).resolve()
                servers.append(Side("baseline", stack.enter_context(ServerProcess(penv, code=code)), "raw"))
            measure_sustained(servers, paced, args)
            print(f"load average at end {os.getloadavg()[0]:.2f}")
            return
        if args.baseline:
            baseline = ServerProcess(env, code=Path(args.baseline).resolve())
            sides.append(Side("baseline", stack.enter_context(baseline), args.client))
        local = asyncio.run(in_process_ttft(args.samples))
        print(f"in-process provider TTFT ms:      {summary(local)}")
        base = pct(local, 50)
        block = 10
        plan = {1: (args.samples, block), 100: (args.rounds, 1)}
        for concurrency in args.streams:
            rounds, step = plan[concurrency]
            for side in sides:
                side.ttfts, side.wall, side.client_cpu, side.server_cpu = [], 0.0, 0.0, 0.0
            for _ in range(0, rounds, step):
                for side in sides:
                    side.measure(concurrency, step)
            for side in sides:
                added = [t - base for t in side.ttfts]
                print(
                    f"{side.name:8s} {args.db} {args.client} {concurrency:3d} stream(s) TTFT ms: {summary(side.ttfts)}   "
                    f"added p50 {pct(added, 50):.2f}  p95 {pct(added, 95):.2f}"
                )
                both = side.client_cpu + side.server_cpu
                print(
                    f"    wall {side.wall:.1f} s; CPU: client {side.client_cpu:.1f} s, server {side.server_cpu:.1f} s "
                    f"(the client {side.client_cpu / max(both, 1e-9):.0%} of what both used)"
                )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def measure_sustained(sides: list[Side], spec: str, args: argparse.Namespace) -> None:
    """Each server in turn, ``args.rounds`` times (alternating, so load drifts hit both alike)."""
    local = asyncio.run(in_process_ttft(50, spec))
    print(f"in-process provider TTFT ms ({spec}): {summary(local)}")
    stream_s = 500 * args.delay_ms / 1000
    for round_ in range(args.rounds):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            before = event_counters(side.server.url)
            results = side.timed(sustained(side.server.url, args.sustained, stream_s, args.seconds))
            after = event_counters(side.server.url)
            side.ttfts += [t for t, _ in results]
            side.others += [n for _, n in results]
            side.events += after[0] - before[0]
            side.commits += after[1] - before[1]
    for side in sides:
        added = [t - pct(local, 50) for t in side.ttfts]
        print(
            f"{side.name:8s} {args.db} raw, {args.sustained} streams kept open, {len(side.ttfts)} streams "
            f"measured; other streams open at each start: p5 {pct(side.others, 5):.0f}, "
            f"p50 {pct(side.others, 50):.0f}"
        )
        print(
            f"    TTFT ms: {summary(side.ttfts)}   added p50 {pct(added, 50):.2f}  p95 {pct(added, 95):.2f}"
        )
        print(
            f"    wall {side.wall:.1f} s; CPU: client {side.client_cpu:.1f} s, server {side.server_cpu:.1f} s; "
            f"event log: {side.events / side.wall:.0f} events/s in {side.commits / side.wall:.0f} commits/s"
        )


def event_counters(url: str) -> tuple[float, float]:
    """Events written and group commits so far, from the server's /metrics."""
    text = httpx.get(f"{url}/metrics").text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("parley_event"))
    # Servers older than the commits counter report none.
    return float(values["parley_events_written_total"]), float(
        values.get("parley_event_commits_total", "nan")
    )


if __name__ == "__main__":
    main()
