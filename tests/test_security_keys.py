"""API keys and PARLEY_AUTH: who may call, with what, and when the server refuses to start."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from parley.app import create_app
from parley.cli import app as cli
from parley.config import Settings
from parley.keys import ApiKey, InsecureBind, list_keys, revoke_key
from tests.conftest import Server, serve
from tests.identity import client_as, key_for
from tests.sse import new_thread


async def test_keys_are_stored_as_digests_and_work_in_either_header(server: Server) -> None:
    secret = await key_for(server, "alice")
    assert secret.startswith("prl_")
    assert len(secret) >= 40
    async with server.parley.db.session() as session:
        stored = (await session.scalars(select(ApiKey))).all()
    assert len(stored) == 1
    row = stored[0]
    assert row.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr([row.id, row.name, row.prefix, row.digest])
    assert secret.startswith(row.prefix)

    for headers in ({"Authorization": f"Bearer {secret}"}, {"X-API-Key": secret}):
        response = await server.client.post("/v1/threads", json={}, headers=headers)
        assert response.status_code == 201, response.text
    listed = (await server.client.get("/v1/threads", headers={"X-API-Key": secret})).json()["data"]
    assert len(listed) == 2
    # The anonymous local user does not see alice's threads in its own list.
    assert (await server.client.get("/v1/threads")).json()["data"] == []


async def test_a_revoked_key_is_refused_and_listing_never_shows_secrets(server: Server) -> None:
    secret = await key_for(server, "bob")
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await server.client.get("/v1/threads", headers=headers)).status_code == 200
    [info] = await list_keys(server.parley.db, "bob")
    assert info.last_used_at is not None
    assert info.revoked_at is None
    assert secret not in repr(info)

    revoked = await revoke_key(server.parley.db, info.prefix)
    assert revoked is not None
    assert revoked.revoked_at is not None
    response = await server.client.get("/v1/threads", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"].startswith("Bearer")


BAD_CREDENTIALS = [
    {"Authorization": "Bearer prl_not-a-real-key"},
    {"X-API-Key": "prl_not-a-real-key"},
    {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    {"Authorization": "Bearer"},
]

FOREIGN_KEYS = [{"Authorization": "Bearer unused"}, {"X-API-Key": "test-key-123"}]


async def test_a_key_that_is_not_a_parley_key_counts_as_none_on_a_loopback_server(server: Server) -> None:
    created = (await server.client.post("/v1/threads", json={})).json()["id"]
    for headers in FOREIGN_KEYS:
        response = await server.client.get("/v1/threads", headers=headers)
        assert response.status_code == 200, (headers, response.text)
        # The local user: the thread made without any key is theirs.
        assert [t["id"] for t in response.json()["data"]] == [created]


async def test_a_foreign_key_is_401_when_keys_are_required(settings_for) -> None:
    async with serve(settings_for(auth="required")) as server:
        for headers in FOREIGN_KEYS:
            response = await server.client.get("/v1/threads", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "invalid_api_key"


async def test_bad_credentials_are_401_even_on_loopback(server: Server) -> None:
    for headers in BAD_CREDENTIALS:
        response = await server.client.get("/v1/threads", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["message"]


async def test_auth_required_refuses_anonymous_callers(settings_for) -> None:
    async with serve(settings_for(auth="required")) as server:
        response = await server.client.get("/v1/threads")
        assert response.status_code == 401
        assert "parley keys create" in response.json()["error"]["message"]
        assert (await server.client.get("/healthz")).status_code == 200
        async with client_as(server, "carol") as carol:
            assert (await carol.get("/v1/threads")).status_code == 200


async def test_auto_mode_on_a_public_address_requires_keys(settings_for) -> None:
    """Settings say 0.0.0.0 (the test still listens on loopback): anonymous access is off."""
    async with serve(settings_for(host="0.0.0.0")) as server:
        assert (await server.client.get("/v1/threads")).status_code == 401
        async with client_as(server, "dave") as dave:
            assert (await dave.get("/v1/threads")).status_code == 200


async def test_auth_off_lets_anonymous_loopback_callers_in_as_the_local_admin(settings_for) -> None:
    async with serve(settings_for(auth="off")) as server:
        response = await server.client.post("/api/users", json={"name": "erin"})
        assert response.status_code == 200
        assert response.json()["name"] == "erin"


def test_serving_a_public_address_without_auth_refuses_to_start(tmp_path, monkeypatch) -> None:
    settings = Settings(host="0.0.0.0", auth="off", data_dir=tmp_path)
    with pytest.raises(InsecureBind, match="PARLEY_AUTH=off"):
        create_app(settings)
    monkeypatch.setenv("PARLEY_AUTH", "off")
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--model", "scripted:echo"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0" in result.output
    # Loopback with auth off, or a public address with auth on, are both fine to build.
    create_app(Settings(host="127.0.0.1", auth="off", data_dir=tmp_path))
    create_app(Settings(host="0.0.0.0", auth="auto", data_dir=tmp_path))


def test_cli_creates_lists_and_revokes_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PARLEY_DATABASE_URL", raising=False)
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--user", "frank", "--admin", "--name", "laptop"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("prl_")
    assert "not shown again" in created.stderr

    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0
    assert "frank" in listed.stdout
    assert secret[:12] in listed.stdout
    assert secret not in listed.stdout
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if "frank" in line)

    revoked = runner.invoke(cli, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0
    assert "revoked" in revoked.stdout
    assert runner.invoke(cli, ["keys", "revoke", "key_nope"]).exit_code == 1
    relisted = runner.invoke(cli, ["keys", "list", "--user", "frank"])
    assert relisted.stdout.strip().splitlines()[-1].split()[-2:] != ["-"]


async def test_admin_keys_can_create_users_through_seed_002(server: Server) -> None:
    async with client_as(server, "root", admin=True) as root, client_as(server, "gina") as gina:
        made = (await root.post("/api/users", json={"name": "hank"})).json()
        assert made["name"] == "hank"
        mine = (await gina.post("/api/users", json={"name": "ignored"})).json()
        assert mine["name"] == "gina"
        thread = await new_thread(gina)
        assert (await root.get(f"/v1/threads/{thread}")).status_code == 200


async def test_the_loopback_check_uses_the_peer_address(settings_for) -> None:
    """A request forwarded by a local proxy for a remote client is not the local user."""
    async with serve(settings_for()) as server:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
        async with httpx.AsyncClient(base_url=server.url, transport=transport) as client:
            assert (await client.get("/v1/threads")).status_code == 200
            forwarded = await client.get("/v1/threads", headers={"X-Forwarded-For": "203.0.113.9"})
            assert forwarded.status_code == 401


async def test_metrics_need_an_administrator_when_keys_are_required(settings_for) -> None:
    async with serve(settings_for(auth="required")) as server:
        anonymous = await server.client.get("/metrics")
        assert anonymous.status_code == 401
        assert "parley_http_requests" not in anonymous.text
        user = await server.client.get("/metrics", headers={"X-API-Key": await key_for(server, "alice")})
        assert user.status_code == 403
        admin_key = await key_for(server, "ops", admin=True)
        scrape = await server.client.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
        assert scrape.status_code == 200
        assert "parley_http_requests_total" in scrape.text


async def test_metrics_are_the_local_administrators_on_a_loopback_install(server: Server) -> None:
    assert (await server.client.get("/metrics")).status_code == 200
    rebound = await server.client.get("/metrics", headers={"Host": "rebind.attacker.example"})
    assert rebound.status_code == 401
