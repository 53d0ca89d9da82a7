"""How the page looks and feels: themes, phone width, keyboard reach and accessible names.

Screenshots of the main states go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from parley.providers.base import TextDelta
from tests.browser.conftest import ChatServer, ask, open_app, replies, screenshot, send
from tests.browser.scripts import SEARCH, SHOP_MODEL, add_to_cart, call, choose, shop_model

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

MARKDOWN = """Here is a short plan:

1. **Pack light** — one bag is plenty.
2. Check the `train times` the night before.
3. Read the [station guide](https://example.com/guide).

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

| Day | Where |
| --- | ----- |
| Mon | Lisbon |
| Tue | Porto |
"""


async def unnamed_controls(page: Page) -> list[str]:
    names: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll('button, select, textarea, input:not([type=file]), a[href]')]
            .filter((el) => el.offsetParent !== null)
            .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim() || el.labels?.length || el.title))
            .map((el) => el.outerHTML.slice(0, 120))"""
    )
    return names


async def test_light_and_dark_themes_with_a_rich_conversation(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    model = shop_model(
        [TextDelta(MARKDOWN)],
        [call("search_products", SEARCH)],
        [TextDelta("I found **2 headphones** for you.")],
    )
    async with chat_server(model=SHOP_MODEL, providers={SHOP_MODEL: model}) as server:
        page = await open_app(context, server)
        await expect(page.get_by_role("heading", name="How can I help?")).to_be_visible()
        await screenshot(page, "empty")
        plan = await ask(page, "make me a travel plan")
        await expect(plan).to_have_attribute("data-status", "completed")
        await expect(plan.locator(".markdown table")).to_be_visible()
        await expect(plan.locator(".markdown pre code")).to_contain_text("def greet")
        assert await unnamed_controls(page) == []
        await screenshot(page, "light-conversation")

        background = "getComputedStyle(document.body).backgroundColor"
        light = await page.evaluate(background)
        toggle = page.get_by_role("button", name="Switch to dark theme")
        await toggle.click()
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        assert await page.evaluate(background) != light
        await screenshot(page, "dark")
        await page.reload()
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        await expect(page.get_by_role("button", name="Switch to light theme")).to_be_visible()
        await page.get_by_role("button", name="New chat").click()
        await choose(page, "shop")
        cards = await ask(page, "find me headphones")
        await expect(cards.locator(".product-card")).to_have_count(2)
        await expect(cards).to_have_attribute("data-status", "completed")
        assert await unnamed_controls(page) == []
        await screenshot(page, "dark-tool-card")


async def test_a_dark_system_preference_is_followed(chat_server: ChatServer, browser: Browser) -> None:
    async with chat_server() as server:
        ctx = await browser.new_context(color_scheme="dark")
        try:
            page = await open_app(ctx, server)
            await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        finally:
            await ctx.close()


async def test_phone_width_keeps_everything_reachable(chat_server: ChatServer, browser: Browser) -> None:
    model = shop_model()
    async with chat_server(model=SHOP_MODEL, providers={SHOP_MODEL: model}) as server:
        ctx = await browser.new_context(
            viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True
        )
        try:
            page = await open_app(ctx, server)
            sidebar = page.locator("#sidebar")
            await expect(sidebar).not_to_be_in_viewport()
            await choose(page, "shop")
            await send(page, "find me headphones")
            await expect(replies(page).last.locator(".product-card")).to_have_count(2)
            for turn in add_to_cart("AUD-102"):
                model.enqueue(turn)
            cart = await ask(page, "Add the white Aurora (product AUD-102) to my cart.")
            await expect(cart.locator(".cart-card")).to_be_visible()
            await expect(cart).to_have_attribute("data-status", "completed")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0
            inner = await page.evaluate(
                "[...document.querySelectorAll('.msg')].map((m) => m.scrollWidth - m.clientWidth).filter((d) => d > 1)"
            )
            assert inner == []
            assert await unnamed_controls(page) == []
            await screenshot(page, "phone")

            menu = page.get_by_role("button", name="Open the conversation list")
            await menu.click()
            await expect(menu).to_have_attribute("aria-expanded", "true")
            await expect(page.locator(".thread-item")).to_have_count(1)
            await expect(sidebar).to_be_in_viewport(ratio=1)
            await screenshot(page, "phone-drawer")
            await page.keyboard.press("Escape")
            await expect(menu).to_have_attribute("aria-expanded", "false")
            await expect(sidebar).not_to_be_in_viewport()
        finally:
            await ctx.close()


async def test_the_page_works_from_the_keyboard_alone(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=60") as server:
        page = await open_app(context, server)
        await expect(page.get_by_role("textbox", name="Message")).to_be_focused()
        await page.keyboard.type("hello from the keyboard")
        await page.keyboard.press("Enter")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        # Tab reaches the answer's actions; Enter on "Good answer" would rate it.
        await page.keyboard.press("Shift+Tab")
        focused = await page.evaluate("document.activeElement.getAttribute('aria-label')")
        assert focused == "Attach files"
