"""Loopback trust is earned: a rebinding ``Host`` is not the local administrator, and a web page of
another origin cannot make a browser change anything (CSRF), whatever the body's type."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from parley.files import File
from parley.store.schema import Run, Thread
from tests.conftest import Server, serve

ATTACKER = "http://attacker.example"


@pytest.fixture
async def local(settings_for) -> AsyncIterator[Server]:
    """The default install: PARLEY_AUTH=auto on loopback, anonymous callers are the local admin."""
    async with serve(settings_for(cors_origins="http://127.0.0.1:3000")) as server:
        yield server


def port_of(server: Server) -> str:
    return server.url.rsplit(":", 1)[1]


@pytest.mark.parametrize("host", ["rebind.attacker.example", "192.168.1.20", "127.0.0.1.nip.io", ""])
async def test_a_rebinding_host_is_not_the_local_administrator(local: Server, host: str) -> None:
    response = await local.client.get("/v1/me", headers={"Host": f"{host}:{port_of(local)}"})
    assert response.status_code == 401
    assert "localhost, 127.0.0.1 or [::1]" in response.json()["error"]["message"]
    threads = await local.client.get("/v1/threads", headers={"Host": host})
    assert threads.status_code == 401


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "127.0.0.2"])
async def test_loopback_names_are_still_the_local_administrator(local: Server, host: str) -> None:
    response = await local.client.get("/v1/me", headers={"Host": f"{host}:{port_of(local)}"})
    assert response.status_code == 200
    assert response.json()["user"]["is_admin"] is True


async def test_allowed_hosts_extend_the_local_names(settings_for) -> None:
    async with serve(settings_for(allowed_hosts="parley.home.arpa")) as server:
        me = await server.client.get("/v1/me", headers={"Host": "Parley.Home.Arpa:8000"})
        assert me.status_code == 200
        assert me.json()["user"]["is_admin"] is True
        assert (await server.client.get("/v1/me", headers={"Host": "other.home.arpa"})).status_code == 401


async def test_auth_off_trusts_only_requests_addressed_to_loopback(settings_for) -> None:
    async with serve(settings_for(auth="off")) as server:
        assert (await server.client.get("/v1/me")).status_code == 200
        assert (await server.client.get("/v1/me", headers={"Host": "rebind.example"})).status_code == 401


def state_changing_routes(server: Server) -> list[tuple[str, str]]:
    """Every non-GET operation the API documents, with its path parameters filled in."""
    paths = server.app.openapi()["paths"]
    return sorted(
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in paths.items()
        for method in operations
        if method.upper() not in ("GET", "HEAD", "OPTIONS")
    )


async def stored(server: Server) -> tuple[int, int, int]:
    async with server.parley.db.session() as session:
        counts = [
            await session.scalar(select(func.count()).select_from(model)) for model in (Thread, Run, File)
        ]
    return (int(counts[0] or 0), int(counts[1] or 0), int(counts[2] or 0))


CROSS_SITE_BODIES = {
    "form": {"data": {"message": "hi", "content": "hi", "name": "x"}},
    "text/plain": {"content": b'{"message": "hi"}', "headers": {"Content-Type": "text/plain"}},
    "multipart": {"files": {"file": ("x.txt", b"hello")}},
}


@pytest.mark.parametrize("body", sorted(CROSS_SITE_BODIES))
async def test_a_cross_site_request_to_any_state_changing_route_is_refused(local: Server, body: str) -> None:
    routes = state_changing_routes(local)
    classes = {path.split("/")[1] for _, path in routes}
    assert {"v1", "api", "files", "messages", "chat", "feedback"} <= classes  # native, OpenAI, seeds
    assert ("POST", "/v1/chat/completions") in routes
    assert ("POST", "/files") in routes
    kwargs = CROSS_SITE_BODIES[body]
    answers = {}
    for method, path in routes:
        headers = {"Origin": ATTACKER, **kwargs.get("headers", {})}
        rest = {k: v for k, v in kwargs.items() if k != "headers"}
        response = await local.client.request(method, path, headers=headers, **rest)
        answers[(method, path)] = (response.status_code, response.json()["error"]["code"])
    assert set(answers.values()) == {(403, "cross_origin_refused")}, answers
    assert await stored(local) == (0, 0, 0)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
        {"Origin": f"{ATTACKER}:8000"},
        {"Origin": "http://127.0.0.1:3001"},
    ],
)
async def test_other_browser_contexts_are_refused(local: Server, headers: dict[str, str]) -> None:
    response = await local.client.post("/files", headers=headers, files={"file": ("x.txt", b"hello")})
    assert response.status_code == 403
    assert await stored(local) == (0, 0, 0)


async def test_same_origin_allowed_origins_and_non_browsers_pass(local: Server) -> None:
    same = await local.client.post("/v1/threads", json={}, headers={"Origin": local.url})
    assert same.status_code == 201
    fetch = {"Origin": local.url, "Sec-Fetch-Site": "same-origin"}
    assert (await local.client.post("/v1/threads", json={}, headers=fetch)).status_code == 201
    allowed = await local.client.post("/v1/threads", json={}, headers={"Origin": "http://127.0.0.1:3000"})
    assert allowed.status_code == 201
    assert (await local.client.post("/v1/threads", json={})).status_code == 201  # curl, SDKs
    reads = await local.client.get("/v1/threads", headers={"Origin": ATTACKER})
    assert reads.status_code == 200  # a read is harmless: without CORS the page cannot see it


async def test_the_refusal_holds_with_a_valid_key_too(settings_for) -> None:
    from tests.identity import key_for

    async with serve(settings_for(auth="required")) as server:
        secret = await key_for(server, "alice")
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post(
                "/v1/threads", json={}, headers={"Authorization": f"Bearer {secret}", "Origin": ATTACKER}
            )
        assert response.status_code == 403


async def test_preflights_are_answered_for_allowed_origins_only(local: Server) -> None:
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    ok = await local.client.options("/v1/threads", headers={"Origin": "http://127.0.0.1:3000", **asks})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers  # keys go in headers, never cookies
    refused = await local.client.options("/v1/threads", headers={"Origin": ATTACKER, **asks})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    read = await local.client.get("/v1/threads", headers={"Origin": "http://127.0.0.1:3000"})
    assert read.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert "x-request-id" in read.headers["access-control-expose-headers"].lower()
