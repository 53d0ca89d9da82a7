"""Paging through threads goes on when the last thread of a page is deleted meanwhile."""

from __future__ import annotations

from tests.conftest import Server


async def test_a_deleted_page_anchor_still_gives_the_next_page(server: Server) -> None:
    client = server.client
    ids = [(await client.post("/v1/threads", json={"title": f"t{i}"})).json()["id"] for i in range(5)]
    newest_first = ids[::-1]
    page = (await client.get("/v1/threads", params={"limit": 2})).json()
    assert [t["id"] for t in page["data"]] == newest_first[:2]
    anchor = page["data"][-1]["id"]
    assert (await client.delete(f"/v1/threads/{anchor}")).status_code == 204
    response = await client.get("/v1/threads", params={"limit": 2, "before": anchor})
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()["data"]] == newest_first[2:4]
    assert response.json()["has_more"] is True


async def test_a_before_that_is_not_a_thread_id_is_a_422(server: Server) -> None:
    response = await server.client.get("/v1/threads", params={"before": "x' OR 1=1"})
    assert response.status_code == 422
    assert "before" in response.json()["error"]["message"]
