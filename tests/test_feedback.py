"""Feedback on answers: owner only, one rating per answer (the latest wins), strict input."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from parley.feedback import Feedback
from tests.conftest import Server
from tests.identity import client_as
from tests.sse import new_thread, read_events


async def answer(client: httpx.AsyncClient, text: str = "rate this answer") -> tuple[str, dict[str, Any]]:
    """A completed run's thread and its ``run.completed`` data."""
    thread = await new_thread(client)
    frames = await read_events(
        client, f"/v1/threads/{thread}/runs", method="POST", json={"input": text, "stream": True}
    )
    assert frames[-1].event == "run.completed"
    return thread, frames[-1].json


async def stored(server: Server) -> list[tuple[str, int, int, str | None]]:
    async with server.parley.db.session() as session:
        rows = await session.execute(
            select(Feedback.message_id, Feedback.user_id, Feedback.rating, Feedback.comment).order_by(
                Feedback.message_id
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_changing_your_mind_replaces_the_rating(server: Server) -> None:
    async with client_as(server, "ana") as ana:
        _, done = await answer(ana)
        url = f"/v1/messages/{done['message_id']}/feedback"
        first = await ana.post(url, json={"rating": 1, "comment": "spot on"})
        assert first.status_code == 201
        body = first.json()
        assert (body["message_id"], body["rating"], body["comment"]) == (done["message_id"], 1, "spot on")
        run = (await ana.get(f"/v1/runs/{body['run_id']}")).json()
        assert run["output_message_id"] == done["message_id"]

        second = await ana.post(url, json={"rating": -1})
        assert second.status_code == 200
        assert (second.json()["rating"], second.json()["comment"]) == (-1, None)
        assert second.json()["created_at"] == body["created_at"]
        rows = await stored(server)
        assert len(rows) == 1
        assert (rows[0][0], rows[0][2], rows[0][3]) == (done["message_id"], -1, None)


async def test_a_thread_s_messages_carry_the_rating_of_each_answer(server: Server) -> None:
    async with client_as(server, "ana") as ana:
        thread, done = await answer(ana)
        url = f"/v1/messages/{done['message_id']}/feedback"

        async def shown() -> list[tuple[str, int | None]]:
            data = (await ana.get(f"/v1/threads/{thread}/messages")).json()["data"]
            return [(m["role"], m["feedback"]) for m in data]

        assert await shown() == [("user", None), ("assistant", None)]
        assert (await ana.post(url, json={"rating": 1})).status_code == 201
        assert await shown() == [("user", None), ("assistant", 1)]
        assert (await ana.post(url, json={"rating": -1})).status_code == 200
        assert await shown() == [("user", None), ("assistant", -1)]


async def test_only_the_owner_can_rate_an_answer(server: Server) -> None:
    async with client_as(server, "ana") as ana, client_as(server, "bob") as bob:
        _, done = await answer(ana)
        url = f"/v1/messages/{done['message_id']}/feedback"
        refused = await bob.post(url, json={"rating": -1})
        unknown = await bob.post("/v1/messages/msg_nosuchmessage/feedback", json={"rating": -1})
        assert refused.status_code == unknown.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        assert refused.json()["error"]["message"] == f"message {done['message_id']} not found"
        # An administrator is no exception: feedback is the owner's opinion.
        assert (await server.client.post(url, json={"rating": -1})).status_code == 404
        assert await stored(server) == []
        assert (await ana.post(url, json={"rating": 1})).status_code == 201


async def test_bad_feedback_is_a_clear_4xx_and_nothing_is_stored(server: Server) -> None:
    thread, done = await answer(server.client)
    url = f"/v1/messages/{done['message_id']}/feedback"
    for body in [
        {"rating": 0},
        {"rating": 2},
        {"rating": True},
        {"rating": "1"},
        {"rating": 1.0},
        {},
        {"rating": 1, "comment": "x" * 2001},
        {"rating": 1, "stars": 5},
    ]:
        response = await server.client.post(url, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_request"
    broken = await server.client.post(
        url, content=b'{"rating": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
    own_question = await server.client.post(f"/v1/messages/{messages[0]['id']}/feedback", json={"rating": 1})
    assert own_question.status_code == 422
    assert own_question.json()["error"]["code"] == "not_rateable"
    assert await stored(server) == []


async def test_deleting_a_thread_deletes_its_feedback(server: Server) -> None:
    thread, done = await answer(server.client)
    assert (
        await server.client.post(f"/v1/messages/{done['message_id']}/feedback", json={"rating": 1})
    ).status_code == 201
    assert (await server.client.delete(f"/v1/threads/{thread}")).status_code == 204
    async with server.parley.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Feedback)) == 0
