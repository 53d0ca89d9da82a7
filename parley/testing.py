"""Running Parley for tests, benchmarks and demos (shipped in the package, like the scripted
provider): in this event loop (``serving``), or as a cluster of processes (``Cluster``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free loopback port, in this event loop; yields its base URL.

    Start-up failures are raised, not hidden; on exit the server drains and stops (30 s at most).
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A Parley subprocess on loopback: ``api`` (``parley serve``, ``PARLEY_WORKER=off``),
    ``serve`` (``parley serve`` with its embedded worker) or ``worker`` (``parley worker``).

    Each answers on ``url``: a server its routes, a worker its metrics (``--metrics-port``)."""

    def __init__(self, role: str, env: Mapping[str, str], *, log_path: Path | None = None) -> None:
        self.role = role
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = (
            ["serve", "--port", str(self.port)]
            if role in ("api", "serve")
            else ["worker", "--metrics-port", str(self.port)]
        )
        extra = {"PARLEY_WORKER": "off"} if role == "api" else {}
        self._log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed in wait
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley", *command],
            env={**os.environ, **env, **extra},
            stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
        )

    async def ready(self, timeout: float = 120.0) -> None:
        path = "/metrics" if self.role == "worker" else "/readyz"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"parley {self.role} exited with {self.proc.returncode}")
                try:
                    if (await client.get(self.url + path)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"parley {self.role} on {self.url} did not become ready")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the graceful shutdown."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._log is not None:
            self._log.close()
        return code


class Cluster:
    """API and worker processes sharing one PostgreSQL database (and optionally Redis)."""

    def __init__(self, env: Mapping[str, str], *, log_dir: Path | None = None) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.apis: list[Process] = []
        self.workers: list[Process] = []

    def _log_path(self, role: str) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / f"{role}-{len(self.apis) + len(self.workers)}.log"

    async def start(self, apis: int = 2, workers: int = 2, *, serves: int = 0) -> Cluster:
        """``apis`` API-only processes, ``workers`` workers and ``serves`` servers with an
        embedded worker (in ``apis`` too). Migrations run once, under an advisory lock."""
        started = [
            *(self.add_api() for _ in range(apis)),
            *(self.add_api(embedded=True) for _ in range(serves)),
            *(self.add_worker() for _ in range(workers)),
        ]
        await asyncio.gather(*(p.ready() for p in started))
        return self

    def add_api(self, *, embedded: bool = False) -> Process:
        role = "serve" if embedded else "api"
        process = Process(role, self.env, log_path=self._log_path(role))
        self.apis.append(process)
        return process

    def add_worker(self) -> Process:
        process = Process("worker", self.env, log_path=self._log_path("worker"))
        self.workers.append(process)
        return process

    def stop(self) -> None:
        for process in [*self.apis, *self.workers]:
            if process.proc.poll() is None:
                process.terminate(timeout=30)
