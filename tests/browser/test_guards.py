"""Chat guards in a real browser: a reply cut by the length limit says so, live and after a reload."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, expect

from parley.providers.base import Finish, TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.browser.conftest import ChatServer, ask, open_app

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

CUT = "Cut short: the reply reached its length limit."


async def test_a_reply_cut_by_the_length_limit_shows_a_note_live_and_after_a_reload(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    model = ScriptedProvider(
        turns=[
            [TextDelta("Golden retrievers are"), TextDelta(" friendly and"), Finish("length")],
            [TextDelta("They love water."), Finish("stop")],
        ]
    )
    async with chat_server(model="scripted:test", providers={"scripted:test": model}) as server:
        page = await open_app(context, server)
        cut = await ask(page, "Tell me about golden retrievers")
        await expect(cut.locator(".markdown")).to_have_text("Golden retrievers are friendly and")
        await expect(cut.get_by_text(CUT)).to_be_visible()
        whole = await ask(page, "And do they swim?")
        await expect(whole).to_have_attribute("data-status", "completed")
        await expect(whole.get_by_text(CUT)).to_have_count(0)

        await page.reload()
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        replies = page.locator("article.msg-assistant")
        await expect(replies).to_have_count(2)
        await expect(replies.nth(0).get_by_text(CUT)).to_be_visible()
        await expect(replies.nth(1).get_by_text(CUT)).to_have_count(0)
