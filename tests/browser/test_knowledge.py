"""The knowledge panel in a real browser: many files (and an archive) through the batch-ingest
job with its progress, the documents listed, one deleted. The real server does the work: no
request of the page is answered by the test."""

from __future__ import annotations

import io
import zipfile

import pytest
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import ChatServer, open_app, screenshot
from tests.browser.scripts import choose

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ALPHA = b"# Returns\n\nItems can be returned within 30 days with the receipt.\n"
BETA = b"Shipping takes three to five working days inside the country.\n"


def archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("faq/gamma.md", "# Warranty\n\nEvery device has a two-year warranty.\n")
        z.writestr("faq/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(32))  # not a document: skipped
    return out.getvalue()


async def test_upload_files_see_progress_and_delete_one(
    chat_server: ChatServer, context: BrowserContext
) -> None:
    async with chat_server(embeddings="hash", ingest_workers="thread") as server:
        page = await open_app(context, server)
        button = page.get_by_role("button", name="Knowledge", exact=True)
        await choose(page, "general")
        await expect(button).to_be_hidden()  # no knowledge base: nothing to show
        await choose(page, "support")
        await button.click()
        panel = page.get_by_role("dialog", name="support\u2019s knowledge")
        await expect(panel).to_be_visible()
        await expect(panel.get_by_text("No documents yet.")).to_be_visible()

        await page.locator("#knowledge-files").set_input_files(
            [
                {"name": "alpha.md", "mimeType": "text/markdown", "buffer": ALPHA},
                {"name": "beta.txt", "mimeType": "text/plain", "buffer": BETA},
            ]
        )
        status = panel.get_by_role("status")
        await expect(status).to_contain_text("Done: 2 files added.")
        await expect(status.locator("progress")).to_have_attribute("value", "100")
        rows = panel.locator("tbody tr")
        await expect(rows.locator(".kb-name")).to_have_text(["alpha.md", "beta.txt"])
        await expect(rows.locator(".kb-state")).to_have_text(["Ready", "Ready"])
        await expect(rows.first.locator("td").nth(1)).to_have_text(f"{len(ALPHA)} B")

        # The server has them in the support assistant's base, searchable.
        bases = (await server.client.get("/v1/knowledge-bases")).json()["data"]
        kb = next(b["id"] for b in bases if b["name"] == "parley-faq")
        found = (await server.client.get(f"/v1/knowledge-bases/{kb}/search", params={"q": "returned"})).json()
        assert found["data"][0]["text"].startswith("Items can be returned")
        await screenshot(page, "knowledge-panel")

        await panel.get_by_role("button", name="Delete alpha.md").click()
        await panel.get_by_role("button", name="Confirm: delete alpha.md").click()
        await expect(rows.locator(".kb-name")).to_have_text(["beta.txt"])
        docs = (await server.client.get(f"/v1/knowledge-bases/{kb}/documents")).json()["data"]
        assert [d["source"] for d in docs] == ["beta.txt"]

        # An archive: its documents are added, what is not a document is listed as skipped.
        await page.locator("#knowledge-files").set_input_files(
            [{"name": "more.zip", "mimeType": "application/zip", "buffer": archive()}]
        )
        await expect(status).to_contain_text("Done: 1 file added, 1 skipped.")
        await expect(panel.get_by_role("list", name="Files skipped")).to_contain_text("faq/logo.png")
        await expect(rows.locator(".kb-name")).to_have_text(["beta.txt", "faq/gamma.md"])
