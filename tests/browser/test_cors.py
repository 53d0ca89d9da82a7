"""CORS and CSRF from a real browser: a page on another loopback origin that
``PARLEY_CORS_ORIGINS`` lists can use the API (preflights answered); a page on any other origin
can neither read answers nor change anything, not even with a plain HTML form."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from playwright.async_api import BrowserContext
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from parley.store.schema import Thread
from tests.browser.conftest import ChatServer
from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@asynccontextmanager
async def front_end() -> AsyncIterator[int]:
    """Another web site on loopback: one empty page, on a port of its own."""

    async def page(_: object) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>front end</title><body>front end</body>")

    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/", page)]), host="127.0.0.1", port=0, log_level="warning")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def threads(server: Server) -> int:
    async with server.parley.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Thread)) or 0)


CALL_API = """async (api) => {
    try {
        const created = await fetch(api + "/v1/threads", {
            method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({title: "from afar"}),
        });
        const body = await created.json();
        return {status: created.status, title: body.title, requestId: created.headers.get("X-Request-ID")};
    } catch (error) {
        return {error: String(error)};
    }
}"""


async def test_an_allowed_origin_uses_the_api_and_others_cannot(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with front_end() as port, chat_server(cors_origins=f"http://127.0.0.1:{port}") as server:
        allowed = await context.new_page()
        await allowed.goto(f"http://127.0.0.1:{port}/")
        result = await allowed.evaluate(CALL_API, server.url)
        assert result["status"] == 201, result
        assert result["title"] == "from afar"
        assert result["requestId"]  # an exposed header the front end can read
        assert await threads(server) == 1

        # Same port, other host name: another origin, not listed.
        other = await context.new_page()
        await other.goto(f"http://localhost:{port}/")
        refused = await other.evaluate(CALL_API, server.url)
        assert "error" in refused  # the preflight is refused: the browser never sends the POST
        assert await threads(server) == 1


async def test_a_cross_site_form_post_changes_nothing(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with front_end() as port, chat_server() as server:
        page = await context.new_page()
        await page.goto(f"http://localhost:{port}/")
        await page.set_content(
            f'<form method="post" action="{server.url}/v1/threads" enctype="text/plain">'
            '<input name=\'{"title": "csrf", "x": "\' value=\'"}\'><button>go</button></form>'
        )
        async with page.expect_navigation() as navigation:
            await page.click("button")
        response = await navigation.value
        assert response is not None
        assert response.status == 403
        assert await threads(server) == 0
        # The Parley page itself (same origin) still works.
        home = await context.new_page()
        await home.goto(server.url + "/")
        made = await home.evaluate(
            "async () => (await fetch('/v1/threads', {method: 'POST', headers: {'Content-Type': "
            "'application/json'}, body: '{}'})).status"
        )
        assert made == 201
