"""The chat in a real browser: send and stream, stop, reload-resume, two tabs, threads, errors."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import ChatServer, open_app, replies, screenshot, send

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TEXT = "the quick brown fox jumps over the lazy dog and keeps on running far away"


async def test_a_reply_streams_in_token_by_token(chat_server: ChatServer, context: BrowserContext) -> None:
    async with chat_server(model="scripted:echo?delay_ms=80") as server:
        page = await open_app(context, server)
        await expect(page.get_by_role("combobox", name="Assistant")).to_have_value("general")
        await send(page, TEXT)
        await expect(page.locator(".msg-user .bubble")).to_have_text(TEXT)
        body = replies(page).last.locator(".markdown")
        await expect(body).to_contain_text("the quick")
        partial = await body.inner_text()
        assert TEXT.startswith(partial.strip()) and len(partial.strip()) < len(TEXT), partial
        await expect(page.get_by_role("button", name="Stop the reply")).to_be_visible()
        await expect(body).to_have_text(TEXT)
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        await expect(page.get_by_role("button", name="Send message")).to_be_visible()
        # The thread was created, titled from the first message, and is the current one.
        link = page.locator(".thread-item.active .thread-link")
        await expect(link).to_have_text(TEXT)
        assert "#/t/thr_" in page.url
        await screenshot(page, "light")
