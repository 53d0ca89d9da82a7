"""Browser tests: Playwright drives Debian's Chromium against a real Parley server on loopback.

The browser is launched once per module (its loop is the module's); each test starts its own
server (SQLite in a temporary directory, the ``scripted`` provider) and its own browser context.
Every page is watched: an uncaught script error or a Content-Security-Policy violation fails the test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from parley.config import Settings
from parley.providers.base import Provider
from tests.conftest import Server, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

expect.set_options(timeout=10_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed; `make test` installs the Debian package")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


ChatServer = Callable[..., AbstractAsyncContextManager[Server]]


@pytest.fixture
def chat_server(tmp_path: Path) -> ChatServer:
    """``async with chat_server(model=..., providers=...) as server``: a real Parley on SQLite."""

    @asynccontextmanager
    async def start(providers: dict[str, Provider] | None = None, **overrides: Any) -> AsyncIterator[Server]:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
            "model": "scripted:echo?delay_ms=40",
            "log_json": True,
            "sse_ping_seconds": 1.0,
            "knowledge": {},
        }
        values.update(overrides)
        async with serve(Settings(**values), providers=providers) as server:
            yield server

    return start


class PageErrors:
    """Uncaught page errors and CSP violations seen by any page of a context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and re.search(r"Content Security Policy|Uncaught", msg.text)
                else None
            ),
        )


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    errors = PageErrors()
    ctx = await browser.new_context(viewport={"width": 1280, "height": 820}, color_scheme="light")
    ctx.on("page", errors.watch)
    try:
        yield ctx
    finally:
        await ctx.close()
    assert errors.errors == [], errors.errors


async def open_app(context: BrowserContext, server: Server, path: str = "/") -> Page:
    page = await context.new_page()
    await page.goto(server.url + path)
    await expect(page.locator("body[data-ready=true]")).to_be_attached()
    return page


async def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    await box.fill(text)
    await box.press("Enter")


def replies(page: Page) -> Any:
    return page.locator("article.msg-assistant")


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def ask(page: Page, text: str) -> Locator:
    """Send a message and return its reply (not the previous one, which may still be last)."""
    before = await replies(page).count()
    await send(page, text)
    await expect(replies(page)).to_have_count(before + 1)
    return replies(page).nth(before)
