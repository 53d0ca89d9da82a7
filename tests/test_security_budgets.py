"""Token budgets: reserved before the provider is called, reconciled after, never overspent."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from parley.budgets import TokenUsage
from parley.store.schema import Message, Run
from tests.conftest import Server, serve
from tests.identity import client_as
from tests.sse import new_thread, read_events

SYSTEM_TOKENS = 17  # the general assistant's instructions, at ~4 characters a token


async def ledger(server: Server) -> tuple[int, int]:
    async with server.parley.db.session() as session:
        rows = (await session.execute(select(TokenUsage.used, TokenUsage.reserved))).all()
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


async def test_usage_is_reconciled_with_what_the_provider_reported(settings_for) -> None:
    settings = settings_for(daily_token_budget=10_000, budget_output_tokens=64)
    async with serve(settings) as server, client_as(server, "alice") as alice:
        thread = await new_thread(alice)
        frames = await read_events(
            alice,
            f"/v1/threads/{thread}/runs",
            method="POST",
            json={"input": "one two three", "stream": True},
        )
        usage = frames[-1].json["usage"]
        used, reserved = await ledger(server)
        assert used == usage["input_tokens"] + usage["output_tokens"]
        assert reserved == 0
        budget = (await alice.get("/v1/me")).json()["budget"]
        assert budget == {**budget, "daily_tokens": 10_000, "used": used, "remaining": 10_000 - used}


async def test_over_budget_is_a_clear_429_and_stores_nothing(settings_for) -> None:
    async with serve(settings_for(daily_token_budget=120, budget_output_tokens=40)) as server:
        async with client_as(server, "alice") as alice:
            thread = await new_thread(alice)
            first = await alice.post(f"/v1/threads/{thread}/runs", json={"input": "a short question"})
            assert first.status_code == 201
            await read_events(alice, f"/v1/runs/{first.json()['id']}/events")
            second = await alice.post(f"/v1/threads/{thread}/runs", json={"input": "word " * 100})
            assert second.status_code == 429
            error = second.json()["error"]
            assert error["code"] == "budget_exceeded"
            assert "daily token budget exhausted" in error["message"]
            assert "00:00 UTC" in error["message"]
            assert 0 < int(second.headers["retry-after"]) <= 86_401
            messages = (await alice.get(f"/v1/threads/{thread}/messages")).json()["data"]
            assert len(messages) == 2
        async with client_as(server, "bob") as bob:
            # Budgets are per user.
            response = await bob.post(f"/v1/threads/{await new_thread(bob)}/runs", json={"input": "hello"})
            assert response.status_code == 201


async def test_a_refused_new_conversation_leaves_no_thread_behind(settings_for) -> None:
    """Chat completions and responses store a new thread with the run, in one transaction:
    a run the budget refuses leaves no empty conversation in the user's list."""
    async with (
        serve(settings_for(daily_token_budget=60, budget_output_tokens=40)) as server,
        client_as(server, "alice") as alice,
    ):
        before = (await alice.get("/v1/threads")).json()["data"]
        chat = await alice.post(
            "/v1/chat/completions",
            json={"model": "general", "messages": [{"role": "user", "content": "word " * 100}]},
        )
        assert chat.status_code == 429, chat.text
        response = await alice.post("/v1/responses", json={"model": "general", "input": "word " * 100})
        assert response.status_code == 429, response.text
        chained = await alice.post(
            "/v1/responses",
            json={
                "model": "general",
                "input": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "second"},
                    {"role": "user", "content": "word " * 100},
                ],
            },
        )
        assert chained.status_code == 429, chained.text
        assert (await alice.get("/v1/threads")).json()["data"] == before
        async with server.parley.db.session() as session:
            assert (await session.scalars(select(Message.id))).all() == []


async def test_a_stream_cannot_overspend_its_reservation(settings_for) -> None:
    """The provider would stream 500 tokens; the turn was allowed 20 and stops there."""
    async with (
        serve(
            settings_for(model="scripted:bench?tokens=500", daily_token_budget=5_000, budget_output_tokens=20)
        ) as server,
        client_as(server, "alice") as alice,
    ):
        thread = await new_thread(alice)
        frames = await read_events(
            alice, f"/v1/threads/{thread}/runs", method="POST", json={"input": "go", "stream": True}
        )
        assert frames[-1].event == "run.completed"
        text = frames[-1].json["text"]
        assert 0 < len(text.split()) <= 20
        used, reserved = await ledger(server)
        assert reserved == 0
        assert used <= SYSTEM_TOKENS + 1 + 20 + 5


async def test_concurrent_runs_never_spend_more_than_the_budget(settings_for) -> None:
    limit = 160
    settings = settings_for(
        model="scripted:echo?delay_ms=5", daily_token_budget=limit, budget_output_tokens=50
    )
    async with serve(settings) as server, client_as(server, "alice") as alice:
        threads = [await new_thread(alice) for _ in range(12)]
        responses = await asyncio.gather(
            *(alice.post(f"/v1/threads/{t}/runs", json={"input": "hello there friend"}) for t in threads)
        )
        created = [r.json() for r in responses if r.status_code == 201]
        refused = [r for r in responses if r.status_code == 429]
        assert len(created) + len(refused) == 12
        finals = [(await read_events(alice, f"/v1/runs/{run['id']}/events"))[-1] for run in created]
        completed = [f.json for f in finals if f.event == "run.completed"]
        failed = [f.json for f in finals if f.event == "run.failed"]
        assert {f["error"]["code"] for f in failed} <= {"budget_exceeded"}
        assert completed
        assert refused or failed
        used, reserved = await ledger(server)
        assert reserved == 0
        assert used <= limit
        assert used == sum(c["usage"]["input_tokens"] + c["usage"]["output_tokens"] for c in completed)


async def test_per_user_budgets_come_from_the_config_file(settings_for, tmp_path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text("[budgets.users]\nbig = 100000\n")
    async with serve(settings_for(daily_token_budget=30, config_file=config)) as server:
        async with client_as(server, "small") as small, client_as(server, "big") as big:
            refused = await small.post(f"/v1/threads/{await new_thread(small)}/runs", json={"input": "hi"})
            assert refused.status_code == 429
            allowed = await big.post(f"/v1/threads/{await new_thread(big)}/runs", json={"input": "hi"})
            assert allowed.status_code == 201
            me: dict[str, Any] = (await big.get("/v1/me")).json()
            assert me["budget"]["daily_tokens"] == 100_000
            assert me["user"]["name"] == "big"
        async with server.parley.db.session() as session:
            assert len((await session.scalars(select(Run))).all()) == 1
