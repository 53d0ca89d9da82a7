"""The chat in a real browser: send and stream, stop, reload-resume, two tabs, threads, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Request, expect

from parley.keys import create_key
from parley.providers.base import ProviderError, TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.browser.conftest import ChatServer, ask, open_app, replies, screenshot, send

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TEXT = "the quick brown fox jumps over the lazy dog and keeps on running far away"


async def test_a_reply_streams_in_token_by_token(chat_server: ChatServer, context: BrowserContext) -> None:
    async with chat_server(model="scripted:echo?delay_ms=100") as server:
        page = await open_app(context, server)
        await expect(page.get_by_role("combobox", name="Assistant")).to_have_value("general")
        await send(page, TEXT)
        await expect(page.locator(".msg-user .bubble")).to_have_text(TEXT)
        body = replies(page).last.locator(".markdown")
        await expect(body).to_contain_text("the quick")
        partial = await body.inner_text()
        assert TEXT.startswith(partial.strip()), partial
        assert len(partial.strip()) < len(TEXT), partial
        await expect(page.get_by_role("button", name="Stop the reply")).to_be_visible()
        await expect(body).to_have_text(TEXT)
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        await expect(page.get_by_role("button", name="Send message")).to_be_visible()
        # The thread was created, titled from the first message, and is the current one.
        link = page.locator(".thread-item.active .thread-link")
        await expect(link).to_have_text(TEXT)
        assert "#/t/thr_" in page.url
        await screenshot(page, "light")


LONG = " ".join(f"word{i}" for i in range(40))


async def test_stop_cancels_the_run_and_keeps_what_was_written(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=120") as server:
        page = await open_app(context, server)
        await send(page, LONG)
        body = replies(page).last.locator(".markdown")
        await expect(body).to_contain_text("word2")
        await expect(replies(page).last.locator(".typing")).to_have_count(0)
        await screenshot(page, "streaming")
        await page.get_by_role("button", name="Stop the reply").click()
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "cancelled")
        await expect(reply.locator(".note-stopped")).to_have_text("Stopped.")
        shown = (await body.inner_text()).strip()
        assert LONG.startswith(shown)
        assert len(shown) < len(LONG)
        run_id = await reply.get_attribute("data-run-id")
        run = (await server.client.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "cancelled"
        await expect(page.get_by_role("button", name="Send message")).to_be_visible()

        # Esc stops too, from anywhere on the page.
        second = await ask(page, LONG)
        await expect(second.locator(".markdown")).to_contain_text("word1")
        await page.keyboard.press("Escape")
        await expect(second).to_have_attribute("data-status", "cancelled")


async def test_reload_in_the_middle_continues_the_same_reply(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=100") as server:
        page = await open_app(context, server)
        await send(page, LONG)
        body = replies(page).last.locator(".markdown")
        await expect(body).to_contain_text("word5")
        resumed: list[str] = []
        page.on("request", lambda r: resumed.append(r.url) if "/events" in r.url else None)
        await page.reload()
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        reply = replies(page).last
        # The text seen before the reload is back at once, and the stream resumes after it.
        await expect(reply.locator(".markdown")).to_contain_text("word5", timeout=1500)
        await expect(reply).to_have_attribute("data-status", "completed")
        await expect(reply.locator(".markdown")).to_have_text(LONG)
        assert len(resumed) == 1, resumed
        after = int(resumed[0].rsplit("after=", 1)[1])
        assert after > 5, resumed
        assert await replies(page).count() == 1
        await expect(page.locator(".msg-user")).to_have_count(1)


async def test_a_snapshot_the_log_does_not_know_is_replayed_from_the_start(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=100") as server:
        page = await open_app(context, server)
        await send(page, LONG)
        await expect(replies(page).last.locator(".markdown")).to_contain_text("word3")
        # Runs before the page's own scripts on the next load: a snapshot from the future.
        await page.add_init_script(
            """for (const key of Object.keys(sessionStorage)) {
                 if (!key.startsWith("parley.run.")) continue;
                 const snap = JSON.parse(sessionStorage.getItem(key));
                 sessionStorage.setItem(key, JSON.stringify({...snap, lastSeq: 9999, text: "garbage "}));
               }"""
        )
        cursors: list[str] = []
        page.on("request", lambda r: cursors.append(r.url.rsplit("=", 1)[1]) if "/events" in r.url else None)
        await page.reload()
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        await expect(reply.locator(".markdown")).to_have_text(LONG)
        assert cursors == ["9999", "0"]


async def test_leaving_a_thread_mid_reply_and_coming_back_continues_it(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=100") as server:
        page = await open_app(context, server)
        await send(page, LONG)
        await expect(replies(page).last.locator(".markdown")).to_contain_text("word3")
        await page.get_by_role("button", name="New chat").click()
        await expect(page.locator(".msg")).to_have_count(0)
        resumed: list[str] = []
        page.on("request", lambda r: resumed.append(r.url) if "/events" in r.url else None)
        await page.locator(".thread-item .thread-link").first.click()
        reply = replies(page).last
        await expect(reply.locator(".markdown")).to_have_text(LONG)
        await expect(reply).to_have_attribute("data-status", "completed")
        assert len(resumed) == 1
        assert int(resumed[0].rsplit("after=", 1)[1]) > 3


async def test_two_tabs_on_one_thread_both_show_the_stream(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo?delay_ms=100") as server:
        first = await open_app(context, server)
        await send(first, "hello there")
        await expect(replies(first).last).to_have_attribute("data-status", "completed")
        thread_url = first.url
        second = await context.new_page()
        await second.goto(thread_url)
        await expect(replies(second)).to_have_count(1)

        await send(first, LONG)
        for page in (first, second):
            await expect(page.locator(".msg-user .bubble").last).to_have_text(LONG)
            await expect(replies(page).last).to_have_attribute("data-status", "streaming")

        # A third tab opened in the middle of the reply joins the same stream.
        third = await context.new_page()
        await third.goto(thread_url)
        await expect(replies(third).last).to_have_attribute("data-status", "streaming")

        for page in (first, second, third):
            await expect(replies(page).last.locator(".markdown")).to_have_text(LONG)
            await expect(replies(page).last).to_have_attribute("data-status", "completed")
            await expect(replies(page)).to_have_count(2)


async def test_threads_can_be_created_renamed_and_deleted(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        page = await open_app(context, server)
        await expect(page.locator("#threads-empty")).to_be_visible()
        await send(page, "first conversation")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        await page.get_by_role("button", name="New chat").click()
        await expect(page.locator(".msg")).to_have_count(0)
        await expect(page.get_by_role("heading", name="How can I help?")).to_be_visible()
        await send(page, "second conversation")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        items = page.locator(".thread-item")
        await expect(items).to_have_count(2)
        await expect(items.first).to_have_text("second conversation")

        await page.get_by_role("button", name="Rename “second conversation”").click()
        title = page.get_by_role("textbox", name="Conversation title")
        await title.fill("Trip ideas")
        await title.press("Enter")
        await expect(items.first.locator(".thread-link")).to_have_text("Trip ideas")
        await expect(page.locator("#thread-title")).to_have_text("Trip ideas")
        threads = (await server.client.get("/v1/threads")).json()["data"]
        assert [t["title"] for t in threads] == ["Trip ideas", "first conversation"]

        # Opening the other thread shows its own messages.
        await items.nth(1).locator(".thread-link").click()
        await expect(page.locator(".msg-user .bubble")).to_have_text(["first conversation"])

        await page.get_by_role("button", name="Delete “Trip ideas”").click()
        dialog = page.get_by_role("dialog", name="Delete this conversation?")
        await expect(dialog).to_be_visible()
        await dialog.get_by_role("button", name="Delete").click()
        await expect(items).to_have_count(1)
        threads = (await server.client.get("/v1/threads")).json()["data"]
        assert [t["title"] for t in threads] == ["first conversation"]


async def test_enter_sends_and_shift_enter_starts_a_new_line(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        page = await open_app(context, server)
        box = page.get_by_role("textbox", name="Message")
        await box.press_sequentially("line one")
        await box.press("Shift+Enter")
        await box.press_sequentially("line two")
        await expect(box).to_have_value("line one\nline two")
        await expect(page.locator(".msg")).to_have_count(0)
        await box.press("Enter")
        await expect(page.locator(".msg-user .bubble")).to_have_text("line one\nline two")
        await expect(box).to_have_value("")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")


async def test_a_failed_run_says_the_model_is_unavailable(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    down = ScriptedProvider(
        turns=[
            [
                TextDelta("Let me"),
                ProviderError("the upstream model is not responding", code="provider_unavailable"),
            ]
        ]
    )
    async with chat_server(
        model="scripted:down",
        providers={"scripted:down": down},
        fallback_message="Our models are taking a break; try again soon.",
    ) as server:
        page = await open_app(context, server)
        await send(page, "are you there?")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "failed")
        alert = reply.get_by_role("alert")
        await expect(alert).to_contain_text("The model is unavailable")
        await expect(alert).to_contain_text("Our models are taking a break; try again soon.")
        await expect(reply.locator(".markdown")).to_have_text("Let me")
        await expect(page.get_by_role("button", name="Send message")).to_be_visible()
        await screenshot(page, "error-run-failed")


async def test_a_rate_limited_message_is_explained_and_its_text_is_kept(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[rate_limits]\nruns = "1/minute"\n')
    async with chat_server(config_file=config) as server:
        page = await open_app(context, server)
        first = await ask(page, "hello")
        await expect(first).to_have_attribute("data-status", "completed")
        async with page.expect_response("**/v1/threads/*/runs") as refusal:
            await send(page, "and again")
        response = await refusal.value
        assert response.status == 429
        assert (await response.json())["error"]["code"] == "rate_limited"
        wait = int(await response.header_value("retry-after") or 0)
        assert 0 < wait <= 60
        banner = page.locator("#banner")
        await expect(banner).to_be_visible()
        await expect(banner).to_have_attribute("role", "alert")
        await expect(banner).to_contain_text("Too many requests")
        await expect(banner).to_contain_text(f"Try again in {wait} s.")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value("and again")
        await expect(page.locator(".msg-user")).to_have_count(1)
        await expect(replies(page)).to_have_count(1)
        await expect(page.get_by_role("button", name="Send message")).to_be_enabled()
        await screenshot(page, "error-rate-limited")


async def test_a_message_over_the_daily_token_budget_is_refused_in_the_page(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(daily_token_budget=60, budget_output_tokens=16) as server:
        page = await open_app(context, server)
        await send(page, "please summarise " + "the whole history of tea " * 30)
        banner = page.locator("#banner")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("Usage budget reached")
        await expect(banner).to_contain_text("daily token budget exhausted")
        await expect(banner).to_contain_text("resets at 00:00 UTC")
        await expect(page.get_by_role("textbox", name="Message")).to_have_value(
            re.compile("^please summarise")
        )
        await expect(page.locator(".msg-user")).to_have_count(0)
        # The refused first message leaves no empty conversation behind.
        await expect(page.locator("#threads-empty")).to_be_visible()
        await expect(page.locator("#thread-title")).to_have_text("New chat")
        await screenshot(page, "error-over-budget")
        assert (await server.client.get("/v1/threads")).json()["data"] == []
        # A shorter message fits what is left of the budget.
        reply = await ask(page, "hi")
        await expect(reply).to_have_attribute("data-status", "completed")
        await expect(banner).to_be_hidden()
        me = (await server.client.get("/v1/me")).json()
        assert 0 < me["budget"]["used"] <= 60


async def test_a_server_that_wants_an_api_key_gets_one_from_the_page(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(auth="required") as server:
        secret = (await create_key(server.parley.db, "browser")).secret
        page = await context.new_page()
        authorized: list[str | None] = []

        async def watch(request: Request) -> None:
            if request.url.endswith("/v1/assistants"):
                authorized.append(await request.header_value("authorization"))

        page.on("request", watch)
        await page.goto(server.url)
        dialog = page.get_by_role("dialog", name="This server needs an API key")
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_role("alert")).to_be_hidden()
        await dialog.get_by_label("API key").fill("pk_not_a_real_key")
        await dialog.get_by_role("button", name="Save").click()
        # A refused key says so, in the dialog and above the message box.
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_role("alert")).to_have_text(
            "The key saved in this browser was refused: the API key is not valid or has been revoked."
        )
        await screenshot(page, "api-key-refused")
        await dialog.get_by_label("API key").fill(secret)
        await dialog.get_by_role("button", name="Save").click()
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        await expect(page.get_by_role("combobox", name="Assistant")).to_have_value("general")
        await expect(dialog).to_be_hidden()
        assert authorized == [None, "Bearer pk_not_a_real_key", f"Bearer {secret}"]
        assert await page.evaluate("localStorage.getItem('parley.apiKey')") == secret
        reply = await ask(page, "hello with a key")
        await expect(reply).to_have_attribute("data-status", "completed")
        threads = (
            await server.client.get("/v1/threads", headers={"Authorization": f"Bearer {secret}"})
        ).json()
        assert [t["title"] for t in threads["data"]] == ["hello with a key"]


async def test_a_page_without_a_key_says_what_is_missing(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(auth="required") as server:
        page = await context.new_page()
        await page.goto(server.url)
        dialog = page.get_by_role("dialog", name="This server needs an API key")
        await dialog.get_by_role("button", name="Cancel").click()
        banner = page.locator("#banner")
        await expect(banner).to_contain_text("API key needed")
        await expect(banner).to_contain_text("an API key is required")
