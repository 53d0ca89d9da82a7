"""Invariants 1 and 2 across SIGKILL: the real server as a subprocess, killed mid-stream.

Each round starts the server, starts a few runs, reads their streams, and kills the
process with SIGKILL at a random moment; the next round restarts it on the same
database. Afterwards, through the API only: every run reached exactly one terminal
event, seqs are 1..N without gaps, and everything a client received is in the log.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.sse import Frame, read_events

ROUNDS = 20
WORDS = " ".join(f"w{i}" for i in range(80))
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Seen:
    frames: list[Frame] = field(default_factory=list)


class Process:
    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PARLEY_DATA_DIR": str(data_dir),
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_MODEL": "scripted:echo?delay_ms=4",
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_KNOWLEDGE": "{}",  # no demo knowledge syncing in the background
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            try:
                if (await client.get(f"{self.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError("server did not become ready")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


async def _watch(client: httpx.AsyncClient, url: str, run_id: str, seen: Seen) -> None:
    """Follow a run's stream, recording every frame as it arrives, until the server dies."""
    after = seen.frames[-1].id if seen.frames else "0"
    try:
        async with aconnect_sse(
            client, "GET", f"{url}/v1/runs/{run_id}/events", headers={"Last-Event-ID": after}
        ) as source:
            async for sse in source.aiter_sse():
                seen.frames.append(Frame(sse.id, sse.event, sse.data))
    except httpx.TransportError:
        pass


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_sigkill_mid_stream_loses_nothing_and_ends_every_run(tmp_path: Path, database_url: str) -> None:
    rng = random.Random(1234)
    runs: dict[str, Seen] = {}
    # Idle connections are dropped before the server's 5 s keep-alive closes them: a request
    # sent on one as the server closes it fails (httpx.ReadError), and rounds wait that long.
    limits = httpx.Limits(keepalive_expiry=1)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30), limits=limits) as client:
        for _ in range(ROUNDS):
            server = Process(tmp_path, database_url)
            try:
                await server.ready(client)
                # Runs from earlier rounds resume streaming from where their reader stopped.
                watchers = [
                    asyncio.create_task(_watch(client, server.url, run_id, seen))
                    for run_id, seen in runs.items()
                ]
                fresh: list[Seen] = []
                for _ in range(3):
                    thread = (await client.post(f"{server.url}/v1/threads", json={})).json()["id"]
                    run = (
                        await client.post(f"{server.url}/v1/threads/{thread}/runs", json={"input": WORDS})
                    ).json()
                    runs[run["id"]] = seen = Seen()
                    fresh.append(seen)
                    watchers.append(asyncio.create_task(_watch(client, server.url, run["id"], seen)))
                # Kill after a random number of frames, so the kill point does not depend on machine speed.
                kill_at = rng.randint(0, 40)
                deadline = time.monotonic() + 20
                while len(fresh[0].frames) < kill_at and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
            finally:
                server.kill()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

        server = Process(tmp_path, database_url)
        try:
            await server.ready(client)
            outcomes: dict[str, int] = {}
            for run_id, seen in runs.items():
                log = await read_events(client, f"{server.url}/v1/runs/{run_id}/events")
                seqs = [f.seq for f in log]
                assert seqs == list(range(1, len(log) + 1)), f"{run_id}: gap or duplicate in {seqs}"
                terminals = [f for f in log if f.event in TERMINAL]
                assert len(terminals) == 1, f"{run_id}: {len(terminals)} terminal events"
                assert log[-1].event in TERMINAL
                received = [(f.id, f.event, f.data) for f in seen.frames]
                assert received == [(f.id, f.event, f.data) for f in log[: len(received)]], run_id
                status = (await client.get(f"{server.url}/v1/runs/{run_id}")).json()["status"]
                assert status in {"completed", "interrupted"}, status
                outcomes[status] = outcomes.get(status, 0) + 1
            # The kill points really did land mid-stream.
            assert outcomes.get("interrupted", 0) >= ROUNDS // 2, outcomes
        finally:
            server.kill()
