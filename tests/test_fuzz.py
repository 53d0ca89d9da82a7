"""Schemathesis against the app's own OpenAPI schema: no 5xx, no answer that breaks the schema."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from parley.app import create_app
from parley.config import Settings


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``parley serve`` in a process of its own (schemathesis calls it synchronously; a server in
    this process would share the ``random`` module's state with hypothesis, which forbids that)."""
    data = Path(tmp_path_factory.mktemp("fuzz"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PARLEY_DATA_DIR": str(data),
        "PARLEY_MODEL": "scripted:echo",
        "PARLEY_RATE_LIMIT": "100000/minute",
        "PARLEY_KNOWLEDGE": "{}",
        "PARLEY_MAX_CONNECTIONS_PER_CLIENT": "10000",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "parley", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(30)


#: Statuses a schema-valid request may still get, besides 2xx/3xx and 401/403/404/409/429.
MEANING = {
    # Which assistant or model exists is configuration, not schema.
    "POST /v1/threads": ["422"],
    "POST /v1/chat/completions": ["422"],
    "POST /api/threads": ["422"],
    "POST /v1/experiments": ["422"],  # variant names must be unique; the assistant must exist
    # An upload's type is read from its bytes, never from the schema (docs/SECURITY.md).
    "POST /v1/files": ["413", "415", "422"],
    "POST /files": ["413", "415", "422"],
    "POST /v1/knowledge-bases/{kb_id}/documents": ["413", "415", "422"],
    "POST /api/v1/ask": ["400"],  # the seed's contract: 3 to 1000 characters once trimmed
    "GET /v1/usage": ["422"],  # from before to, at most 366 days apart: rules between two values
    # An Idempotency-Key reused with another body (RFC draft: 422); a cursor past the run's end.
    "POST /v1/threads/{thread_id}/runs": ["422"],
    "GET /v1/runs/{run_id}/events": ["400"],
    "GET /api/runs/{run_id}/events": ["400"],
    # Input items are OpenAI's, read by their ``type`` (parley.items): not spelled out in the schema.
    "POST /v1/conversations": ["422"],
    "POST /v1/conversations/{conversation_id}/items": ["422"],
    "POST /v1/responses": ["422"],
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]

CONFIG: dict[str, Any] = {
    # NUL and lone surrogates are refused on every route by design (parley.text, a 400/422).
    "generation": {"allow-x00": False, "codec": "utf-8"},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    "operations": [
        {
            "include-name": label,
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *extra]}},
        }
        for label, extra in MEANING.items()
    ],
}


@functools.cache
def document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        return create_app(Settings(data_dir=Path(data))).openapi()


@functools.cache
def operations() -> dict[str, schemathesis.APIOperation]:
    """The app's operations, from the schema the app itself serves (no server needed)."""
    schema = schemathesis.openapi.from_dict(document(), config=SchemathesisConfig.from_dict(CONFIG))
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


@pytest.mark.parametrize("label", list(operations()))
def test_api(label: str, base_url: str) -> None:
    """Every operation, with valid and invalid inputs, under every check: no 5xx, every answer
    documented, invalid input refused and valid input accepted."""

    # Derandomized: the same examples every run, so a CI failure reproduces; raise max_examples to explore.
    @given(case=operations()[label].as_strategy())
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, timeout=20)  # every check

    check()


def test_405_names_every_method_of_the_path(base_url: str) -> None:
    """``Allow`` on a 405 lists every documented method of the path (not only the first route's)."""
    for path, item in document()["paths"].items():
        documented = {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete")}
        url = base_url + path.replace("{", "x").replace("}", "")
        response = httpx.put(url) if "PUT" not in documented else httpx.request("TRACE", url)
        assert response.status_code == 405, (path, response.status_code)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"HEAD"} == documented, path
