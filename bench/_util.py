"""Shared helpers for benchmarks: percentiles, a throwaway PostgreSQL, a server subprocess."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from parley.testing import free_port


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):.2f}  p95 {pct(values, 95):.2f}  mean {statistics.fmean(values):.2f}  n={len(values)}"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


@contextmanager
def postgres() -> Iterator[str | None]:
    """PARLEY_TEST_POSTGRES_URL if set, else a throwaway server started by scripts/services.sh, else None."""
    url = os.environ.get("PARLEY_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    script = Path(__file__).resolve().parents[1] / "scripts" / "services.sh"
    if not shutil.which("redis-server") or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        yield None
        return
    out = subprocess.run([str(script), "start"], capture_output=True, text=True, check=True).stdout
    env = dict(
        line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export ")
    )
    try:
        yield env["PARLEY_TEST_POSTGRES_URL"]
    finally:
        subprocess.run([str(script), "stop", env["SERVICES_DIR"]], check=False)


class ServerProcess:
    """``parley serve`` in a subprocess on a free loopback port; with ``code``, the ``parley``
    package from that directory (``python -m`` puts the working directory first on the path,
    ahead of PYTHONPATH, so the server runs from there)."""

    def __init__(self, env: dict[str, str], *, code: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="parley-bench-")
        full_env = {
            **os.environ,
            "PARLEY_DATA_DIR": self.dir,
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_KNOWLEDGE": "{}",  # no demo knowledge syncing in the background of a benchmark
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", "--port", str(self.port)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            cwd=code,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_in_process(settings: Any, providers: dict[str, Any] | None = None) -> AsyncIterator[str]:
    """The real app under uvicorn on a free loopback port, in this event loop (as the tests'
    ``serve``); yields its base URL."""
    from parley.app import create_app
    from parley.testing import serving

    async with serving(create_app(settings, providers=providers)) as url:
        yield url
