"""Soak: ``python -m bench.soak --minutes N`` runs ``parley serve`` under a mixed load for N
minutes and reports what a user and an operator would watch.

The load, all at once: streams (a run and its SSE stream to the end; time to the first token),
reconnects (a stream dropped after a few events and resumed with ``Last-Event-ID``), cancels,
file uploads and deletes, knowledge ingests and deletes, bad requests (invalid JSON, NUL,
oversized bodies, unknown ids: each must be a 4xx), and a ``/healthz`` probe every 100 ms.
The model is ``scripted:echo`` at 20 ms a word (the server's own work, not a model's).

Reported: ``/healthz`` and time-to-first-token p50/p99, the server's RSS and open file
descriptors over time (from /proc), requests by kind, and every 5xx or broken connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._util import ServerProcess, machine, pct

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "a",
    "patient",
    "server",
    "keeps",
    "every",
    "stream",
    "going",
]


@dataclass
class Record:
    healthz_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (minute, RSS MB, fds)

    def check(self, kind: str, response: httpx.Response, *, expect_4xx: bool = False) -> None:
        self.counts[kind] += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
        elif expect_4xx and not 400 <= response.status_code < 500:
            self.server_errors.append(f"{kind}: expected a 4xx, got {response.status_code}")

    def broken(self, kind: str, exc: BaseException) -> None:
        self.counts[kind] += 1
        self.server_errors.append(f"{kind}: {type(exc).__name__}: {exc}")


def _sentence(n: int = 30) -> str:
    return " ".join(random.choice(WORDS) for _ in range(n))


async def _thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/v1/threads", json={})).json()["id"])


async def _stream(client: httpx.AsyncClient, record: Record, *, drop_after: int | None = None) -> None:
    thread = await _thread(client)
    started = time.perf_counter()
    response = await client.post(f"/v1/threads/{thread}/runs", json={"input": _sentence()})
    record.check("run", response)
    if response.status_code != 201:
        return
    run = response.json()["id"]
    last = 0
    seen = 0
    first = True
    async with client.stream("GET", f"/v1/runs/{run}/events") as events:
        async for line in events.aiter_lines():
            if line.startswith("id: "):
                last = int(line[4:])
            if line.startswith("event: message.delta") and first:
                first = False
                record.ttft_ms.append((time.perf_counter() - started) * 1000)
            if line.startswith("event: "):
                seen += 1
                if drop_after is not None and seen >= drop_after:
                    break
    if drop_after is not None:  # resume where the dropped stream stopped
        async with client.stream(
            "GET", f"/v1/runs/{run}/events", headers={"Last-Event-ID": str(last)}
        ) as resumed:
            record.check("reconnect", resumed)
            async for _ in resumed.aiter_lines():
                pass


async def _cancel(client: httpx.AsyncClient, record: Record) -> None:
    thread = await _thread(client)
    response = await client.post(f"/v1/threads/{thread}/runs", json={"input": _sentence(60)})
    record.check("run", response)
    if response.status_code == 201:
        await asyncio.sleep(0.2)
        record.check("cancel", await client.post(f"/v1/runs/{response.json()['id']}/cancel"))


async def _upload(client: httpx.AsyncClient, record: Record) -> None:
    body = (_sentence(200) + "\n").encode() * 20
    response = await client.post("/v1/files", files={"file": ("notes.txt", body, "text/plain")})
    record.check("upload", response)
    if response.status_code == 201:
        record.check("delete_file", await client.delete(f"/v1/files/{response.json()['id']}"))


async def _ingest(client: httpx.AsyncClient, record: Record, kb: str) -> None:
    text = "\n\n".join(f"## Section {i}\n\n{_sentence(80)}." for i in range(20))
    response = await client.post(
        f"/v1/knowledge-bases/{kb}/documents", json={"title": f"doc {random.random()}", "text": text}
    )
    record.check("ingest", response)
    if response.status_code in (200, 201):
        record.check(
            "delete_doc", await client.delete(f"/v1/knowledge-bases/{kb}/documents/{response.json()['id']}")
        )


async def _bad(client: httpx.AsyncClient, record: Record) -> None:
    thread = await _thread(client)
    bad = [
        client.post("/v1/threads", content=b"{not json", headers={"content-type": "application/json"}),
        client.post(
            f"/v1/threads/{thread}/runs",
            content=json.dumps({"input": "a\u0000b"}).encode(),
            headers={"content-type": "application/json"},
        ),
        client.post("/v1/threads", content=b"x" * 2_000_000, headers={"content-type": "application/json"}),
        client.get("/v1/runs/run_doesnotexist"),
        client.get("/v1/runs/run_%00"),
        client.post(f"/v1/threads/{thread}/runs", json={"input": ""}),
    ]
    for response in await asyncio.gather(*bad):
        record.check("bad_request", response, expect_4xx=True)


async def _loop(name: str, deadline: float, record: Record, work: Any, pause: float) -> None:
    while time.monotonic() < deadline:
        try:
            await work()
        except (httpx.HTTPError, OSError) as exc:
            record.broken(name, exc)
        await asyncio.sleep(pause * random.uniform(0.5, 1.5))


async def _healthz(url: str, deadline: float, record: Record) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await client.get("/healthz")
                record.healthz_ms.append((time.perf_counter() - started) * 1000)
                record.check("healthz", response)
            except httpx.HTTPError as exc:
                record.broken("healthz", exc)
            await asyncio.sleep(0.1)


def _proc(pid: int) -> tuple[float, int]:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def _sampler(pid: int, started: float, deadline: float, record: Record, every: float) -> None:
    while True:
        rss, fds = _proc(pid)
        record.samples.append(((time.monotonic() - started) / 60, rss, fds))
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))


async def soak(url: str, pid: int, minutes: float, streams: int) -> Record:
    record = Record()
    limits = httpx.Limits(max_connections=streams * 4 + 20)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        kb = (await client.post("/v1/knowledge-bases", json={"name": "soak"})).json()["id"]
        started = time.monotonic()
        deadline = started + minutes * 60
        tasks = [
            _healthz(url, deadline, record),
            _sampler(pid, started, deadline, record, every=max(5.0, minutes * 6)),
            *(
                _loop("stream", deadline, record, lambda: _stream(client, record), 0.2)
                for _ in range(streams)
            ),
            _loop("reconnect", deadline, record, lambda: _stream(client, record, drop_after=4), 0.5),
            _loop("cancel", deadline, record, lambda: _cancel(client, record), 1.0),
            _loop("upload", deadline, record, lambda: _upload(client, record), 1.0),
            _loop("ingest", deadline, record, lambda: _ingest(client, record, kb), 2.0),
            _loop("bad", deadline, record, lambda: _bad(client, record), 1.0),
        ]
        await asyncio.gather(*tasks)
    return record


def report(record: Record, minutes: float, streams: int) -> None:
    print(f"machine: {machine()}")
    print(
        f"load: {minutes:g} min; {streams} stream loops + reconnects, cancels, uploads, ingests, bad requests"
    )
    print(
        f"/healthz: p50 {pct(record.healthz_ms, 50):.1f} ms  p99 {pct(record.healthz_ms, 99):.1f} ms  "
        f"max {max(record.healthz_ms, default=float('nan')):.1f} ms  n={len(record.healthz_ms)}"
    )
    print(
        f"time to first token: p50 {pct(record.ttft_ms, 50):.1f} ms  p99 {pct(record.ttft_ms, 99):.1f} ms  n={len(record.ttft_ms)}"
    )
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(record.counts.items())))
    print("minute   RSS MB   open fds")
    for minute, rss, fds in record.samples:
        print(f"{minute:6.1f}  {rss:7.1f}  {fds:9d}")
    print(f"5xx and broken connections: {len(record.server_errors)}")
    for line in record.server_errors[:50]:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=8, help="concurrent stream loops")
    args = parser.parse_args()
    env = {
        "PARLEY_MODEL": "scripted:echo?delay_ms=20",
        "PARLEY_EMBEDDINGS": "hash",
        "PARLEY_RATE_LIMIT": "1000000/minute",
        "PARLEY_MAX_CONNECTIONS_PER_CLIENT": "10000",
        "PARLEY_MEMORY": "false",
        "HF_HUB_OFFLINE": "1",
    }
    with ServerProcess(env) as server:
        record = asyncio.run(soak(server.url, server.proc.pid, args.minutes, args.streams))
    report(record, args.minutes, args.streams)


if __name__ == "__main__":
    main()
