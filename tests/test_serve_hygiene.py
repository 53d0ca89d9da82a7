"""``parley serve`` as a user runs it: slow headers are cut, one address cannot hold every
connection, a low open-file limit is warned about, and every line of the log is JSON."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_MODEL": "scripted:echo",
        "PARLEY_EMBEDDINGS": "hash",
        "PARLEY_HEADER_TIMEOUT_SECONDS": "0.5",
        "PARLEY_MAX_CONNECTIONS_PER_CLIENT": "5",
        "PARLEY_LOG_JSON": "true",
        "HF_HUB_OFFLINE": "1",
    }
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_low_fd_limit,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"the server did not start: {log.read_text()[-2000:]}")
            yield url, log
        finally:
            process.terminate()
            process.wait(30)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_slow_headers_are_cut_and_one_address_cannot_take_every_connection(served: tuple[str, Path]) -> None:
    url, log = served
    # A slowloris connection: headers that never end.
    slow = _connect(url)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert slow.recv(1024) == b""  # closed by the server
    assert time.monotonic() - started < 3
    slow.close()

    idle = [_connect(url) for _ in range(5)]
    try:
        extra = _connect(url)
        answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 429"), answer
        assert b"too_many_connections" in answer
        extra.close()
    finally:
        for conn in idle:
            conn.close()
    time.sleep(0.2)
    assert httpx.get(f"{url}/healthz").status_code == 200  # the address is welcome again

    # Garbage makes uvicorn log a warning: it is a JSON line like every other.
    junk = _connect(url)
    junk.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    junk.recv(1024)
    junk.close()
    time.sleep(0.3)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    events = {r.get("event") for r in records}
    assert "fd_limit_low" in events
    assert "too_many_connections" in events
    assert any("Invalid HTTP request" in str(r.get("event")) for r in records)
