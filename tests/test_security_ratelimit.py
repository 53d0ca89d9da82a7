"""Rate limits: per key (or IP), per endpoint class, in memory or Redis; exactly the limit passes."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.config import Settings
from parley.keys import revoke_key
from tests.conftest import REDIS_URL, _need, serve, within_one_window
from tests.identity import key_for


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    # These tests count exactly: a check that outlives the breaker's time limit passes unchecked
    # (by design: ``test_an_unreachable_redis_does_not_take_the_api_down``), and 40 checks at once
    # on a loaded CI machine can take longer than the default 0.2 s.
    return {
        "redis_url": _need(REDIS_URL, "Redis"),
        "rate_limit_prefix": f"test-{uuid.uuid4().hex}",
        "redis_timeout_seconds": 10.0,
    }


def settings(tmp_path: Path, storage: dict[str, Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "model": "scripted:echo",
        "knowledge": {},
        **storage,
    }
    values.update(overrides)
    return Settings(**values)


async def fire(
    client: httpx.AsyncClient, n: int, method: str, path: str, **kwargs: Any
) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.request(method, path, **kwargs) for _ in range(n))))


async def test_exactly_the_limit_passes_under_concurrency(tmp_path: Path, storage: dict[str, Any]) -> None:
    async with serve(settings(tmp_path, storage, rate_limit="10/minute")) as server:
        secret = await key_for(server, "alice")
        await within_one_window()
        responses = await fire(server.client, 40, "GET", "/v1/threads", headers={"X-API-Key": secret})
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) == 10
        assert codes.count(429) == 30
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "10 per 60 s" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-limit"] == "10"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert 1 <= int(refused.headers["ratelimit-reset"]) <= 60
        passed = [r for r in responses if r.status_code == 200]
        # What is left when each answer is written (other requests may have counted since).
        assert all(0 <= int(r.headers["ratelimit-remaining"]) < 10 for r in passed)
        assert all(r.headers["ratelimit-limit"] == "10" for r in passed)


async def test_limits_are_per_key_and_per_endpoint_class(tmp_path: Path, storage: dict[str, Any]) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[rate_limits]\nruns = "2/minute"\n')
    async with serve(settings(tmp_path, storage, rate_limit="50/minute", config_file=config)) as server:
        alice = {"X-API-Key": await key_for(server, "alice")}
        bob = {"X-API-Key": await key_for(server, "bob")}
        await within_one_window()
        threads = [
            (await server.client.post("/v1/threads", json={}, headers=alice)).json()["id"] for _ in range(3)
        ]
        runs = [
            await server.client.post(f"/v1/threads/{t}/runs", json={"input": "hi"}, headers=alice)
            for t in threads
        ]
        assert [r.status_code for r in runs] == [201, 201, 429]
        assert "'runs'" in runs[2].json()["error"]["message"]
        # Other classes and other keys have their own counters.
        assert (await server.client.get("/v1/threads", headers=alice)).status_code == 200
        job = await server.client.post("/messages", json={"message": "hi"}, headers=alice)
        assert job.status_code == 429
        bobs = (await server.client.post("/v1/threads", json={}, headers=bob)).json()["id"]
        ok = await server.client.post(f"/v1/threads/{bobs}/runs", json={"input": "hi"}, headers=bob)
        assert ok.status_code == 201


async def test_anonymous_callers_are_limited_by_address(tmp_path: Path, storage: dict[str, Any]) -> None:
    async with serve(settings(tmp_path, storage, rate_limit="3/minute")) as server:
        await within_one_window()
        codes = [(await server.client.get("/v1/threads")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await server.client.get("/healthz")).status_code == 200


async def test_redis_counters_are_shared_by_every_process(tmp_path: Path) -> None:
    shared = {
        "redis_url": _need(REDIS_URL, "Redis"),
        "rate_limit_prefix": f"test-{uuid.uuid4().hex}",
        "redis_timeout_seconds": 10.0,
    }
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(serve(settings(tmp_path, shared, rate_limit="6/minute")))
        second_settings = settings(tmp_path, shared, rate_limit="6/minute", database_url=first.parley.db.url)
        second = await stack.enter_async_context(serve(second_settings))
        headers = {"X-API-Key": await key_for(first, "alice")}
        await within_one_window()
        responses = await asyncio.gather(
            fire(first.client, 5, "GET", "/v1/threads", headers=headers),
            fire(second.client, 5, "GET", "/v1/threads", headers=headers),
        )
        codes = [r.status_code for batch in responses for r in batch]
        assert codes.count(200) == 6
        assert codes.count(429) == 4


@pytest.mark.parametrize("value", ["lots", "120 per fortnight", ""])
def test_a_malformed_limit_is_refused_at_start_up(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="PARLEY_RATE_LIMIT must look like"):
        Settings(data_dir=tmp_path, rate_limit=value)
    config = tmp_path / "parley.toml"
    config.write_text(f'[rate_limits]\nruns = "{value}"\n')
    with pytest.raises(ValueError, match=r"\[rate_limits\] runs"):
        create_app(Settings(data_dir=tmp_path, config_file=config))


async def test_an_unreachable_redis_does_not_take_the_api_down(tmp_path: Path) -> None:
    down = {"redis_url": "redis://127.0.0.1:1/0"}
    async with serve(settings(tmp_path, down, rate_limit="1/minute")) as server:
        codes = [(await server.client.get("/v1/threads")).status_code for _ in range(3)]
        assert codes == [200, 200, 200]


async def test_repeated_failed_authentication_throttles_the_attacker_not_the_neighbours(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[rate_limits]\nauth_failures = "3/minute"\n')
    async with serve(settings(tmp_path, storage, auth="required", config_file=config)) as server:
        good = {"X-API-Key": await key_for(server, "alice")}
        await within_one_window()
        assert (await server.client.get("/v1/threads", headers=good)).status_code == 200
        bad = {"X-API-Key": "prl_guessing-" + "x" * 30}
        codes = [(await server.client.get("/v1/threads", headers=bad)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        blocked = await server.client.get("/v1/threads", headers={"X-API-Key": "prl_other-" + "y" * 33})
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        # Alice, behind the same address, still gets in: the failures were not hers.
        assert (await server.client.get("/v1/threads", headers=good)).status_code == 200
        newcomer = {"Authorization": f"Bearer {await key_for(server, 'bob')}"}
        assert (await server.client.get("/v1/threads", headers=newcomer)).status_code == 200
        assert (await server.client.get("/healthz")).status_code == 200


async def test_failures_with_one_key_prefix_are_counted_across_addresses(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    """A revoked key retried by a misconfigured fleet is throttled wherever it comes from."""
    config = tmp_path / "parley.toml"
    config.write_text('[rate_limits]\nauth_failures = "3/minute"\n')
    async with serve(settings(tmp_path, storage, auth="required", config_file=config)) as server:
        secret = await key_for(server, "alice")
        await revoke_key(server.parley.db, secret[:12])
        stale = {"Authorization": f"Bearer {secret}"}
        await within_one_window()
        codes = []
        for n in range(5):
            transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n + 2}")
            async with httpx.AsyncClient(base_url=server.url, transport=transport) as client:
                codes.append((await client.get("/v1/threads", headers=stale)).status_code)
        assert codes == [401, 401, 401, 429, 429]
