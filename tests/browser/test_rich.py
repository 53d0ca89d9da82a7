"""Rich results in a real browser: tool cards, a refused tool call, citations, usage, uploads, feedback.

The tool loop and knowledge search are other issues' work. Here the run's producer
(``Executor.produce``, the agent-loop seam) is swapped for a small script that appends
``tool.call``/``tool.result``/``tool.rejected``/``retrieval`` events through the real event log,
so everything from the log to the page (SSE, resume, stored messages) is the real path.
The feedback endpoint is used for real. The upload endpoint is used for real when the server
has it; until then the page's requests to it are answered at the HTTP boundary with its
documented shape.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Request, Route, expect
from sqlalchemy import select

from parley import events as ev
from parley.executor import Executor, RunState
from parley.feedback import Feedback
from tests.browser.conftest import ChatServer, open_app, replies, screenshot, send
from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PRODUCTS = [
    {
        "id": "P-100",
        "name": "Aria Wireless Headphones",
        "price": 129.0,
        "currency": "USD",
        "stock": 12,
        "category": "Audio",
        "rating": 4.6,
        "description": "Over-ear, 30-hour battery, active noise cancelling.",
    },
    {
        "id": "P-101",
        "name": "Pulse Earbuds",
        "price": 59.5,
        "currency": "USD",
        "stock": 3,
        "category": "Audio",
    },
]

SOURCES = [
    {
        "document": "doc_returns",
        "chunk": "Unused items can be returned within 30 days of delivery for a full refund.",
        "score": 0.91,
        "title": "Returns policy",
    },
    {
        "document": "doc_shipping",
        "chunk": "Return shipping is free for members; others pay a flat fee of 4.95.",
        "score": 0.74,
        "title": "Shipping FAQ",
    },
]


async def stream_text(executor: Executor, state: RunState, text: str) -> None:
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        if state.first_token is None:
            state.first_token = time.perf_counter()
        state.text += piece
        executor.log.append(state.run.id, ev.MESSAGE_DELTA, {"text": piece})
        await asyncio.sleep(0.01)


async def shop(executor: Executor, state: RunState) -> None:
    """Search on the first message; add to the cart when asked, after one refused call."""
    run_id, emit = state.run.id, executor.log.append
    wanted = re.search(r"product (P-\d+)", state.run.input)
    if wanted is None:
        call = {"id": "call_search", "name": "search_products", "arguments": {"query": "headphones"}}
        emit(run_id, ev.TOOL_CALL, call)
        await asyncio.sleep(0.3)
        ui = {"type": "products", "items": PRODUCTS}
        emit(run_id, ev.TOOL_RESULT, {"id": "call_search", "output": {"count": 2}, "ui": ui})
        text = "I found **2 headphones** for you."
    else:
        product = next(p for p in PRODUCTS if p["id"] == wanted.group(1))
        emit(
            run_id,
            ev.TOOL_REJECTED,
            {
                "id": "call_bad",
                "name": "add_to_cart",
                "reason": "product P-999 was never shown in this conversation",
                "suggestions": ["P-100", "P-101"],
            },
        )
        call = {
            "id": "call_add",
            "name": "add_to_cart",
            "arguments": {"product_id": product["id"], "quantity": 2},
        }
        emit(run_id, ev.TOOL_CALL, call)
        line = {
            "product_id": product["id"],
            "name": product["name"],
            "quantity": 2,
            "price": product["price"],
        }
        ui = {"type": "cart", "items": [line], "total": 2 * product["price"], "currency": "USD"}
        emit(run_id, ev.TOOL_RESULT, {"id": "call_add", "output": {"ok": True}, "ui": ui})
        text = f"Added two {product['name']} to your cart."
    state.message_data["tool_calls"] = [{**call, "output": None, "ui": ui}]
    await stream_text(executor, state, text)
    await executor.log.flush()


async def knowledge(executor: Executor, state: RunState) -> None:
    executor.log.append(state.run.id, ev.RETRIEVAL, {"sources": SOURCES})
    state.sources = SOURCES
    await stream_text(executor, state, "You can return unused items within **30 days** [1].")
    state.input_tokens, state.output_tokens, state.usage_reported = 42, 9, True
    await executor.log.flush()


async def test_tool_results_render_as_cards_and_add_to_cart_works(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        server.parley.executor.produce = shop
        page = await open_app(context, server)
        await send(page, "find me headphones")
        reply = replies(page).last
        await expect(reply.locator(".tool-chip")).to_contain_text("Used search_products")
        cards = reply.locator(".product-card")
        await expect(cards).to_have_count(2)
        aria = reply.get_by_role("article", name="Aria Wireless Headphones")
        await expect(aria.locator(".price")).to_have_text("$129.00")
        await expect(aria.locator(".badge")).to_have_text("In stock")
        await expect(reply.get_by_role("article", name="Pulse Earbuds").locator(".badge")).to_have_text(
            "Only 3 left"
        )
        await expect(reply.locator(".markdown strong")).to_have_text("2 headphones")

        await aria.get_by_role("button", name="Add to cart: Aria Wireless Headphones").click()
        await expect(page.locator(".msg-user .bubble").last).to_contain_text("product P-100")
        await expect(replies(page)).to_have_count(2)
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        cart = reply.get_by_role("region", name="Cart")
        await expect(cart).to_contain_text("Aria Wireless Headphones")
        await expect(cart.locator(".cart-qty")).to_have_text("\u00d7 2")
        await expect(cart.locator(".cart-total")).to_have_text("$258.00")
        await expect(cart).to_contain_text("2 items")
        # The refused call is mentioned, quietly: a muted note, not an error.
        rejected = reply.locator(".note-rejected")
        await expect(rejected).to_have_text(
            "Skipped add_to_cart: product P-999 was never shown in this conversation"
        )
        await expect(reply.get_by_role("alert")).to_have_count(0)
        await screenshot(page, "tool-card")

        # After a reload the cards come back from the stored messages.
        await page.reload()
        await expect(replies(page)).to_have_count(2)
        await expect(replies(page).first.locator(".product-card")).to_have_count(2)
        await expect(
            replies(page).last.get_by_role("region", name="Cart").locator(".cart-total")
        ).to_have_text("$258.00")


async def test_citations_show_titles_and_snippets_and_usage_is_on_demand(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        server.parley.executor.produce = knowledge
        page = await open_app(context, server)
        await send(page, "can I return my order?")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        sources = reply.get_by_role("region", name="Sources")
        await expect(sources.locator(".source-title")).to_have_text(["Returns policy", "Shipping FAQ"])
        await expect(sources.locator(".source-snippet").first).to_have_text(SOURCES[0]["chunk"])
        # The "[1]" marker in the answer points at its source.
        marker = reply.locator(".markdown").get_by_role("button", name="Source 1: Returns policy")
        await expect(marker).to_have_text("1")
        await marker.click()
        await expect(sources.locator(".source").first).to_have_class(re.compile(r"\bflash\b"))

        usage = reply.locator(".usage-panel")
        await expect(usage).to_be_hidden()
        await reply.get_by_role("button", name="Show usage").click()
        await expect(usage).to_be_visible()
        await expect(usage).to_contain_text("42 in · 9 out")
        await expect(usage).to_contain_text("scripted:echo")
        await expect(usage.locator("dd").nth(2)).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        await screenshot(page, "citations")

        await page.reload()
        await expect(
            replies(page).last.get_by_role("region", name="Sources").locator(".source-title")
        ).to_have_text(["Returns policy", "Shipping FAQ"])


def has_route(server: Server, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in server.app.routes)


EXE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\x00" * 64
    + b"This program cannot be run in DOS mode."
)


async def fake_uploads(page: Page) -> None:
    """The documented POST /v1/files contract: 415 for a disguised file, else the stored file."""

    async def handle(route: Route, request: Request) -> None:
        body = request.post_data_buffer or b""
        if b"This program cannot be run" in body:
            error = {"code": "unsupported_type", "message": "invoice.pdf is a Windows executable, not a PDF"}
            await route.fulfill(status=415, json={"error": error})
        else:
            await route.fulfill(
                status=201, json={"id": "file_notes", "name": "notes.txt", "size": 18, "type": "text/plain"}
            )

    await page.route("**/v1/files", handle)


async def test_an_upload_error_is_shown_on_the_file_and_good_files_go_with_the_message(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        page = await open_app(context, server)
        real = has_route(server, "/v1/files")
        if not real:
            await fake_uploads(page)
        chooser = page.locator("#file-input")
        await chooser.set_input_files([{"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": EXE}])
        chip = page.locator(".file-chip", has_text="invoice.pdf")
        error = chip.get_by_role("alert")
        await expect(error).to_contain_text("File type not allowed")
        if not real:
            await expect(error).to_contain_text("invoice.pdf is a Windows executable, not a PDF")
        await screenshot(page, "upload-error")

        await chooser.set_input_files(
            [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"remember the milk"}]
        )
        good = page.locator(".file-chip.upload-done", has_text="notes.txt")
        await expect(good).to_be_visible()
        await chip.get_by_role("button", name="Remove invoice.pdf").click()
        await expect(chip).to_have_count(0)

        await send(page, "what is in my notes?")
        await expect(page.locator(".msg-user .file-chip")).to_have_text("notes.txt")
        await expect(replies(page).last).to_have_attribute("data-status", "completed")
        run_id = await replies(page).last.get_attribute("data-run-id")
        run = (await server.client.get(f"/v1/runs/{run_id}")).json()
        assert len(run["metadata"]["files"]) == 1
        await expect(page.locator("#attachments .file-chip")).to_have_count(0)


async def test_thumbs_up_and_down_on_an_answer(chat_server: ChatServer, context: BrowserContext) -> None:
    async with chat_server(model="scripted:echo") as server:
        page = await open_app(context, server)
        sent: list[tuple[str, Any]] = []
        answered: list[int] = []
        failing = False

        async def handle(route: Route, request: Request) -> None:
            sent.append((request.url, json.loads(request.post_data or "null")))
            if failing:
                await route.fulfill(
                    status=503, json={"error": {"code": "unavailable", "message": "try later"}}
                )
                return
            response = await route.fetch()
            answered.append(response.status)
            await route.fulfill(response=response)

        # The real endpoint answers; the route only watches (and, at the end, fails one request).
        await page.route("**/v1/messages/*/feedback", handle)
        await send(page, "rate me")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        message_id = (await server.client.get(f"/v1/runs/{await reply.get_attribute('data-run-id')}")).json()[
            "output_message_id"
        ]
        up = reply.get_by_role("button", name="Good answer")
        down = reply.get_by_role("button", name="Bad answer")
        async with page.expect_response("**/v1/messages/*/feedback"):
            await up.click()
        await expect(up).to_have_attribute("aria-pressed", "true")
        async with page.expect_response("**/v1/messages/*/feedback"):
            await down.click()
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")
        assert sent == [
            (f"{server.url}/v1/messages/{message_id}/feedback", {"rating": 1}),
            (f"{server.url}/v1/messages/{message_id}/feedback", {"rating": -1}),
        ]
        assert answered == [201, 200]  # recorded, then replaced
        async with server.parley.db.session() as session:
            assert (await session.scalars(select(Feedback.rating))).all() == [-1]

        failing = True
        await up.click()
        await expect(page.locator(".toast")).to_contain_text("Feedback not saved")
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")
