"""Text is text everywhere: NUL and unpaired surrogates (which PostgreSQL cannot store) get a
clear 4xx on every kind of input, on both databases, nothing is stored, and every later read
works. A hypothesis property test sends arbitrary text through the API's string fields."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley import text
from parley.app import create_app
from parley.config import Settings
from parley.testing import serving
from tests.conftest import POSTGRES_URL, Server, fresh_postgres

NUL = "hello\u0000world"
SURROGATE = "half an emoji \ud83d"


def raw_json(value: Any) -> bytes:
    """JSON with every non-ASCII character escaped, as most clients send it (surrogates too)."""
    return json.dumps(value).encode()


async def post_json(server: Server, path: str, value: Any) -> httpx.Response:
    return await server.client.post(
        path, content=raw_json(value), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_unstorable_text_in_a_body_is_refused_and_nothing_is_stored(server: Server, bad: str) -> None:
    thread = (await server.client.post("/v1/threads", json={})).json()["id"]
    kb = (await server.client.post("/v1/knowledge-bases", json={"name": "kb"})).json()["id"]
    attempts = [
        ("/v1/threads", {"title": bad}),
        ("/v1/threads", {"metadata": {"note": bad}}),
        ("/v1/threads", {"metadata": {bad: "a key"}}),
        (f"/v1/threads/{thread}/runs", {"input": bad}),
        ("/v1/chat/completions", {"model": "general", "messages": [{"role": "user", "content": bad}]}),
        ("/messages", {"message": bad}),
        ("/api/v1/ask", {"question": bad}),
        ("/v1/knowledge-bases", {"name": "kb2", "description": bad}),
        (f"/v1/knowledge-bases/{kb}/documents", {"title": "t", "text": bad}),
    ]
    for path, body in attempts:
        response = await post_json(server, path, body)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_characters"
        assert "NUL" in error["message"]
        assert "body." in error["message"]
    patched = await server.client.patch(
        f"/v1/threads/{thread}",
        content=raw_json({"metadata": {"n": bad}}),
        headers={"content-type": "application/json"},
    )
    assert patched.status_code == 422
    # Nothing was stored, and every read of the owner's data still works.
    assert len((await server.client.get("/v1/threads")).json()["data"]) == 1
    assert (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"] == []
    assert (await server.client.get(f"/v1/knowledge-bases/{kb}/documents")).json()["data"] == []
    for path in ("/chat/history", "/v1/files", "/v1/usage", "/api/v1/history"):
        assert (await server.client.get(path)).status_code == 200, path
    assert (await server.client.delete("/chat/clear")).status_code in (200, 204)


async def test_a_nul_in_a_path_or_a_query_is_a_400_not_a_500(server: Server) -> None:
    thread = (await server.client.post("/v1/threads", json={})).json()["id"]
    kb = (await server.client.post("/v1/knowledge-bases", json={"name": "kb"})).json()["id"]
    for path in (
        "/v1/runs/run_%00",
        f"/v1/threads/{thread}%00",
        "/v1/files/file_%00x",
        f"/v1/knowledge-bases/{kb}/search?q=a%00b",
        "/v1/threads?before=%00",
        "/messages/job%00",
    ):
        response = await server.client.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"] == "invalid_characters"
    assert (await server.client.get(f"/v1/threads/{thread}")).status_code == 200


async def test_a_nul_in_an_upload_form_field_is_refused_without_leftovers(
    settings_for: Callable[..., Settings],
) -> None:
    from tests.conftest import serve

    settings = settings_for()
    async with serve(settings) as server:
        response = await server.client.post(
            "/v1/files", files={"file": ("a.txt", b"plain text")}, data={"thread_id": "thr_\u0000"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_characters"
        assert (await server.client.get("/v1/files")).json()["data"] == []
    assert list((settings.data_dir / "files").glob("*")) == []


def test_clean_and_storable() -> None:
    assert text.clean(NUL) == "helloworld"
    assert text.clean(SURROGATE) == "half an emoji "
    assert text.clean("plain 😀") == "plain 😀"
    assert text.storable("😀 é ß")
    assert not text.storable(NUL)
    assert not text.storable(SURROGATE)
    assert text.first_unstorable({"a": [1, {"b": NUL}]}) == "body.a[1].b"


# -- the property test, on PostgreSQL ---------------------------------------------------------


class ThreadedServer:
    """A Parley server on PostgreSQL in a thread of its own, for hypothesis's synchronous tests."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with fresh_postgres() as url:
                settings = Settings(
                    data_dir=self.tmp,
                    database_url=url,
                    model="scripted:echo",
                    embeddings="hash",
                    rate_limit="100000/minute",
                )
                async with serving(create_app(settings)) as base:
                    self.url = base
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)


@pytest.fixture(scope="module")
def pg_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL not available; `make test` starts one")
    with (
        ThreadedServer(tmp_path_factory.mktemp("pg")) as running,
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        yield client


#: Any code point, surrogates and NUL included (hypothesis leaves surrogates out by default).
ANY_TEXT = st.text(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None, exclude_categories=()),
    max_size=40,
)


def _escaped(value: str) -> str:
    """Percent-encoded UTF-8 (a lone surrogate as the bytes a careless client would send)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _send(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    return client.request(method, path, content=raw_json(body), headers={"content-type": "application/json"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=ANY_TEXT,
    field=st.sampled_from(["title", "metadata", "metadata_key", "input", "description", "query", "path"]),
)
def test_any_text_in_any_string_field_is_stored_faithfully_or_refused_with_a_4xx(
    pg_client: httpx.Client, value: str, field: str
) -> None:
    client = pg_client
    thread = client.post("/v1/threads", json={}).json()["id"]
    if field == "title":
        response = _send(client, "POST", "/v1/threads", {"title": value})
        read = lambda r: client.get(f"/v1/threads/{r['id']}").json()["title"]  # noqa: E731
    elif field == "metadata":
        response = _send(client, "POST", "/v1/threads", {"metadata": {"v": value}})
        read = lambda r: client.get(f"/v1/threads/{r['id']}").json()["metadata"]["v"]  # noqa: E731
    elif field == "metadata_key":
        response = _send(client, "POST", "/v1/threads", {"metadata": {value: 1}})
        read = lambda r: next(iter(client.get(f"/v1/threads/{r['id']}").json()["metadata"]))  # noqa: E731
    elif field == "input":
        response = _send(client, "POST", f"/v1/threads/{thread}/runs", {"input": value})
        read = lambda r: client.get(f"/v1/threads/{thread}/messages").json()["data"][0]["content"]  # noqa: E731
    elif field == "description":
        response = _send(
            client, "POST", "/v1/knowledge-bases", {"name": f"kb{abs(hash(value))}", "description": value}
        )
        read = lambda r: client.get(f"/v1/knowledge-bases/{r['id']}").json()["description"]  # noqa: E731
    elif field == "query":
        response = client.get(f"/v1/threads?before={_escaped(value)}")
        read = None
    else:
        response = client.get(f"/v1/runs/run_{_escaped(value)}")
        read = None
    assert response.status_code < 500, response.text
    if not text.storable(value):
        assert 400 <= response.status_code < 500
        return
    if read is not None and response.status_code in (200, 201):
        assert read(response.json()) == value
    # Whatever was sent, the owner's data still reads.
    assert client.get("/v1/threads").status_code == 200
    assert client.get(f"/v1/threads/{thread}/messages").status_code == 200


async def test_a_last_event_id_of_unicode_digits_is_a_400_not_a_500(server: Server) -> None:
    thread = (await server.client.post("/v1/threads", json={})).json()["id"]
    run = (await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "hi"})).json()["id"]
    response = await server.client.get(
        f"/v1/runs/{run}/events", headers={"Last-Event-ID": "\u00b2".encode("latin-1")}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_last_event_id"
