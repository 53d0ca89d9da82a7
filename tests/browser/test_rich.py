"""Rich results in a real browser: tool cards, a refused tool call, citations, usage, uploads, feedback.

Everything is the real server: the shop's tools, catalog and provenance checks, a knowledge
base grounding the ``support`` assistant, ``POST /v1/files`` and
``POST /v1/messages/{id}/feedback``. The scripted provider stands in for the model only;
no request of the page is answered by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect
from playwright.async_api import Error as PlaywrightError

from parley.providers.base import TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.browser.conftest import ChatServer, ask, open_app, replies, screenshot, send
from tests.browser.scripts import FOUND, SHOP_MODEL, add_to_cart, choose, shop_model
from tests.knowledge_data import FAQ

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_tool_results_render_as_cards_and_add_to_cart_works(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    model = shop_model()
    async with chat_server(model=SHOP_MODEL, providers={SHOP_MODEL: model}) as server:
        page = await open_app(context, server)
        await choose(page, "shop")
        reply = await ask(page, "find me aurora headphones")
        await expect(reply).to_have_attribute("data-status", "completed")
        await expect(reply.locator(".tool-chip")).to_contain_text("Used search_products")
        thread = page.url.rsplit("/", 1)[1]
        answer = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"][-1]
        products = answer["tool_calls"][0]["ui"]["products"]
        assert [p["id"] for p in products] == FOUND
        cards = reply.locator(".product-card")
        await expect(cards.locator(".product-name")).to_have_text([p["name"] for p in products])
        blue = reply.get_by_role("article", name="Aurora ANC Wireless Headphones, Midnight Blue")
        await expect(blue.locator(".price")).to_have_text("$234.99")
        await expect(blue.locator(".badge")).to_have_text("Only 2 left")
        white = reply.get_by_role("article", name="Aurora ANC Wireless Headphones, White")
        await expect(white.locator(".badge")).to_have_text("In stock")
        await expect(reply.locator(".markdown strong")).to_have_text("2 headphones")

        # The model first names a product it was never shown: refused by the server, then corrected.
        for turn in add_to_cart("AUD-101", invented="AUD-999"):
            model.enqueue(turn)
        await blue.get_by_role(
            "button", name="Add to cart: Aurora ANC Wireless Headphones, Midnight Blue"
        ).click()
        await expect(page.locator(".msg-user .bubble").last).to_contain_text("(product AUD-101)")
        await expect(replies(page)).to_have_count(2)
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        cart = reply.get_by_role("region", name="Cart")
        await expect(cart.locator(".cart-name")).to_have_text(
            ["Aurora ANC Wireless Headphones, Midnight Blue"]
        )
        await expect(cart.locator(".cart-qty")).to_have_text("\u00d7 2")
        await expect(cart.locator(".cart-subtotal")).to_have_text("$469.98")
        await expect(cart.locator(".cart-tax")).to_have_text("$47.00")
        await expect(cart.locator(".cart-total")).to_have_text("$516.98")
        await expect(cart).to_contain_text("2 items")
        # Until when its stock is held (PARLEY_SHOP_CART_HOLD_SECONDS after the cart last changed).
        held = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"][-1]
        until = held["tool_calls"][-1]["ui"]["summary"]["reserved_until"]
        assert until == pytest.approx(time.time() + 3600, abs=60)
        await expect(cart.locator(".cart-hold")).to_contain_text("Held for you until")
        moment = datetime.fromtimestamp(int(until * 1000) / 1000, UTC)  # as JavaScript's Date keeps it
        stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        await expect(cart.locator(".cart-hold time")).to_have_attribute("datetime", stamp)
        # The refused call is mentioned, quietly: a muted note, not an error.
        rejected = reply.locator(".note-rejected")
        await expect(rejected).to_contain_text(
            "Skipped add_to_cart: product_id 'AUD-999' does not name a product"
        )
        await expect(rejected).to_have_attribute("title", re.compile(r"^Closest known: .*\(AUD-10[12]\)"))
        await expect(reply.get_by_role("alert")).to_have_count(0)
        product = await server.parley.shop.get("AUD-101")
        assert product is not None
        assert product.stock == 0
        await screenshot(page, "tool-card")

        # After a reload the cards and the refusal come back from the stored messages.
        await page.reload()
        await expect(replies(page)).to_have_count(2)
        await expect(replies(page).first.locator(".product-card")).to_have_count(2)
        last = replies(page).last
        await expect(last.get_by_role("region", name="Cart").locator(".cart-total")).to_have_text("$516.98")
        await expect(last.locator(".note-rejected")).to_contain_text("Skipped add_to_cart")
        await expect(last.locator(".tool-chip")).to_have_count(1)


async def test_citations_from_a_knowledge_base_show_titles_and_snippets_and_usage_is_on_demand(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ)
    # The model rephrases the FAQ entry (checked against it), so the answer has token usage.
    config = tmp_path / "parley.toml"
    config.write_text('[assistants.support.options]\ncompose = "model"\n')
    model = ScriptedProvider(
        turns=[[TextDelta("Annual plans are refunded in full within **30 days** [1].")]], name="scripted:kb"
    )
    async with chat_server(
        model="scripted:kb",
        providers={"scripted:kb": model},
        embeddings="hash",
        knowledge={"parley-faq": [faq]},
        config_file=config,
    ) as server:
        page = await open_app(context, server)
        await page.get_by_role("combobox", name="Assistant").select_option("support")
        await send(page, "What is your refund policy?")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        thread = page.url.rsplit("/", 1)[1]
        stored = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"][-1]["sources"]
        assert stored[0]["title"] == "What is the refund policy?"
        sources = reply.get_by_role("region", name="Sources")
        await expect(sources.locator(".source-title")).to_have_text([s["title"] for s in stored])
        await expect(sources.locator(".source-snippet").first).to_have_text(
            re.compile(r"^Q: What is the refund policy\? A: Annual plans are refunded in full within 30 days")
        )
        # The "[1]" marker in the answer points at its source.
        marker = reply.locator(".markdown").get_by_role("button", name="Source 1: What is the refund policy?")
        await expect(marker).to_have_text("1")
        await marker.click()
        await expect(sources.locator(".source").first).to_have_class(re.compile(r"\bflash\b"))

        usage = reply.locator(".usage-panel")
        await expect(usage).to_be_hidden()
        await reply.get_by_role("button", name="Show usage").click()
        await expect(usage).to_be_visible()
        await expect(usage).to_contain_text(re.compile(r"[1-9]\d* in · [1-9]\d* out"))
        await expect(usage).to_contain_text("scripted:kb")
        await expect(usage.locator("dd").nth(2)).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        await screenshot(page, "citations")

        await page.reload()
        await expect(
            replies(page).last.get_by_role("region", name="Sources").locator(".source-title")
        ).to_have_text([s["title"] for s in stored])


async def test_a_declined_question_shows_no_sources_though_the_search_found_some(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    """The search finds the payment entry for "PayPal", the answer declines and rests on no
    source: the passages shown while it searched go, as they are gone after a reload."""
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ)
    async with chat_server(embeddings="hash", knowledge={"parley-faq": [faq]}) as server:
        page = await open_app(context, server)
        await choose(page, "support")
        await send(page, "Do you accept PayPal?")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        await expect(reply).to_contain_text("I don't know")
        thread = page.url.rsplit("/", 1)[1]
        message = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"][-1]
        assert message["sources"] == []
        events = (await server.client.get(f"/v1/runs/{message['run_id']}/events")).text
        assert "Which payment methods do you accept?" in events  # the retrieval event had it
        await expect(reply.get_by_role("region", name="Sources")).to_have_count(0)
        await page.reload()
        await expect(replies(page).last).to_contain_text("I don't know")
        await expect(replies(page).last.get_by_role("region", name="Sources")).to_have_count(0)


EXE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\x00" * 64
    + b"This program cannot be run in DOS mode."
)


async def test_an_upload_error_is_shown_on_the_file_and_good_files_go_with_the_message(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(max_upload_bytes=64 * 1024) as server:
        page = await open_app(context, server)
        chooser = page.locator("#file-input")
        await chooser.set_input_files([{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": EXE}])
        chip = page.locator(".file-chip", has_text="invoice.pdf")
        error = chip.get_by_role("alert")
        await expect(error).to_contain_text("File type not allowed")
        await expect(error).to_contain_text("the content is a Windows executable, which is not accepted")
        await chooser.set_input_files(
            [{"name": "huge.txt", "mimeType": "text/plain", "buffer": b"too much text. " * 10_000}]
        )
        huge = page.locator(".file-chip", has_text="huge.txt").get_by_role("alert")
        await expect(huge).to_have_text("Too large: the upload is larger than the limit of 65536 bytes")
        await screenshot(page, "upload-error")

        await chooser.set_input_files(
            [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"remember the milk"}]
        )
        good = page.locator(".file-chip.upload-done", has_text="notes.txt")
        await expect(good).to_be_visible()
        await chip.get_by_role("button", name="Remove invoice.pdf").click()
        await page.get_by_role("button", name="Remove huge.txt").click()
        await expect(page.locator("#attachments .file-chip")).to_have_count(1)

        await send(page, "what is in my notes?")
        await expect(page.locator(".msg-user .file-chip")).to_have_text("notes.txt")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        run_id = await replies(page).last.get_attribute("data-run-id")
        run = (await server.client.get(f"/v1/runs/{run_id}")).json()
        [file_id] = run["metadata"]["files"]
        stored = (await server.client.get(f"/v1/files/{file_id}")).json()
        assert (stored["name"], stored["preview"]) == ("notes.txt", "remember the milk")
        # Nothing was stored for the refused files.
        names = [f["name"] for f in (await server.client.get("/v1/files")).json()["data"]]
        assert names == ["notes.txt"]
        await expect(page.locator("#attachments .file-chip")).to_have_count(0)


async def test_an_upload_shows_its_progress(chat_server: ChatServer, context: BrowserContext) -> None:
    async with chat_server() as server:
        page = await open_app(context, server)
        # A slow link, so the upload takes a few seconds (Chromium's own throttling, no fake).
        cdp = await context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 64 * 1024},
        )
        body = b"".join(b"line %05d of a long report\n" % i for i in range(6_000))
        await page.locator("#file-input").set_input_files(
            [{"name": "report.txt", "mimeType": "text/plain", "buffer": body}]
        )
        bar = page.get_by_role("progressbar", name="Uploading report.txt")
        await expect(bar).to_be_visible()
        seen: set[str] = set()
        shot = False
        while await bar.count():
            with contextlib.suppress(PlaywrightError):
                seen.add(await bar.get_attribute("aria-valuetext", timeout=500) or "")
            if not shot and any(v not in ("", "0%", "100%") for v in seen):
                await screenshot(page, "upload-progress")
                shot = True
            await asyncio.sleep(0.1)
        await expect(page.locator(".file-chip.upload-done", has_text="report.txt")).to_be_visible()
        percents = sorted(int(v.rstrip("%")) for v in seen if v)
        assert any(0 < p < 100 for p in percents), percents
        assert len(percents) >= 3, percents
        files = (await server.client.get("/v1/files")).json()["data"]
        assert [(f["name"], f["size"]) for f in files] == [("report.txt", len(body))]


async def test_thumbs_up_and_down_on_an_answer(chat_server: ChatServer, context: BrowserContext) -> None:
    async with chat_server(model="scripted:echo") as server:
        page = await open_app(context, server)
        reply = await ask(page, "rate me")
        await expect(reply).to_have_attribute("data-status", "completed")
        thread = page.url.rsplit("/", 1)[1]

        async def rating() -> int | None:
            messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
            return messages[-1]["feedback"]

        up = reply.get_by_role("button", name="Good answer")
        down = reply.get_by_role("button", name="Bad answer")
        assert await rating() is None
        async with page.expect_response("**/v1/messages/*/feedback") as first:
            await up.click()
        assert ((await first.value).status, (await first.value).request.post_data_json) == (
            201,
            {"rating": 1},
        )
        await expect(up).to_have_attribute("aria-pressed", "true")
        assert await rating() == 1
        async with page.expect_response("**/v1/messages/*/feedback") as second:
            await down.click()
        assert ((await second.value).status, (await second.value).request.post_data_json) == (
            200,
            {"rating": -1},
        )
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")
        assert await rating() == -1
        await screenshot(page, "feedback")

        # The rating is shown again after a reload.
        await page.reload()
        reply = replies(page).last
        up = reply.get_by_role("button", name="Good answer")
        down = reply.get_by_role("button", name="Bad answer")
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")

        # The conversation was deleted elsewhere: the rating is not saved, and the page says so.
        assert (await server.client.delete(f"/v1/threads/{thread}")).status_code == 204
        await up.click()
        await expect(page.locator(".toast")).to_contain_text("Feedback not saved — Not found")
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")
