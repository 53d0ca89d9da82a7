"""The empty chat screen: what the chosen assistant does, and three prompts to try that send."""

from __future__ import annotations

import pytest
from playwright.async_api import BrowserContext, expect

from parley.assistants import BUILTIN
from tests.browser.conftest import ChatServer, open_app, replies, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_the_empty_chat_shows_the_assistants_description_and_example_prompts(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=20") as server:
        page = await open_app(context, server)
        examples = page.get_by_role("button").and_(page.locator(".example"))
        for name in ("general", "shop", "support", "recruiter"):
            await page.get_by_role("combobox", name="Assistant").select_option(name)
            await expect(page.locator("#empty-text")).to_have_text(BUILTIN[name].description)
            await expect(examples).to_have_text(BUILTIN[name].examples)
        await screenshot(page, "welcome")

        await page.get_by_role("combobox", name="Assistant").select_option("general")
        prompt = BUILTIN["general"].examples[1]
        await examples.nth(1).click()
        await expect(page.locator(".msg-user .bubble")).to_have_text(prompt)
        await expect(replies(page).last.locator(".markdown")).to_have_text(prompt)  # scripted:echo
        await expect(page.locator("#empty")).to_be_hidden()
        threads = (await server.client.get("/v1/threads")).json()["data"]
        assert [t["assistant"] for t in threads] == ["general"]
