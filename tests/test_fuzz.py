"""Schemathesis against the app's own OpenAPI schema: no 5xx, no answer that breaks the schema."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from parley.app import create_app
from parley.config import Settings


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server in a thread of its own (schemathesis calls it synchronously)."""
    data = Path(tmp_path_factory.mktemp("fuzz"))
    app = create_app(Settings(data_dir=data, model="scripted:echo", rate_limit="100000/minute", knowledge={}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


# Schema-valid input may still be refused on meaning (an unknown assistant, a file whose bytes are
# not a PDF), so "positive data acceptance" is not one of them; the stateful checks need links.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@functools.cache
def operations() -> dict[str, schemathesis.APIOperation]:
    """The app's operations, from the schema the app itself serves (no server needed)."""
    with tempfile.TemporaryDirectory() as data:
        document = create_app(Settings(data_dir=Path(data))).openapi()
    schema = schemathesis.openapi.from_dict(document)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


@pytest.mark.parametrize("label", list(operations()))
def test_api(label: str, base_url: str) -> None:
    """Every operation, with valid and invalid inputs: no 5xx, and every answer as documented."""

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
        case.call_and_validate(base_url=base_url, timeout=20, checks=CHECKS)

    check()
