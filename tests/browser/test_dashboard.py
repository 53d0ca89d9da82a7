"""The dashboard in a real browser: an experiment's rates with intervals, its split, latency and
cost, and usage per day — drawn from runs, ratings and exposures made through the API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from parley.store.schema import Run
from tests.browser.conftest import ChatServer, open_app, screenshot
from tests.conftest import Server
from tests.identity import client_as, key_for
from tests.sse import new_thread, read_events

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

CONFIG = """
[experiments.answer-style]
description = "Does a shorter or a warmer system prompt get more thumbs up than the detailed one?"
control = "detailed"
[[experiments.answer-style.variants]]
name = "detailed"
instructions = "Provide detailed and informative responses."
[[experiments.answer-style.variants]]
name = "concise"
instructions = "Be concise and to the point."
model = "scripted:echo?delay_ms=2"
[[experiments.answer-style.variants]]
name = "friendly"
instructions = "Be warm and encouraging."
model = "scripted:echo?delay_ms=6"
"""
# Thumbs up out of every ten answers, per variant.
LIKED = {"detailed": 6, "concise": 9, "friendly": 4}
COST = {"detailed": 0.0021, "concise": 0.0009, "friendly": 0.0016}
USERS = 45


async def populate(server: Server) -> dict[str, int]:
    seen: dict[str, int] = {}
    runs: list[str] = []
    for i in range(USERS):
        async with client_as(server, f"user{i:02d}") as client:
            thread = await new_thread(client)
            frames = await read_events(
                client,
                f"/v1/threads/{thread}/runs",
                method="POST",
                json={"input": f"tell me something useful, number {i}", "stream": True},
            )
            variant = frames[0].json["variant"]
            n = seen[variant] = seen.get(variant, 0) + 1
            rating = 1 if (n * 7) % 10 < LIKED[variant] else -1
            response = await client.post(
                f"/v1/messages/{frames[-1].json['message_id']}/feedback", json={"rating": rating}
            )
            assert response.status_code == 201
            runs.append(frames[0].json["run_id"])
    async with server.parley.db.transaction() as session:
        for i, run_id in enumerate(runs):
            run = await session.get(Run, run_id)
            assert run is not None
            assert run.usage is not None
            run.usage = {**run.usage, "cost_usd": COST[str(run.variant)]}
            # Spread the answers over the last week, for the usage chart.
            run.created_at = time.time() - (i % 7) * 86400
    return seen


async def test_the_dashboard_shows_an_experiment_and_usage(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    async with chat_server(model="scripted:echo", config_file=config) as server:
        seen = await populate(server)
        results = (await server.client.get("/v1/experiments/answer-style/results")).json()

        page = await open_app(context, server)
        await page.get_by_role("link", name="Dashboard").click()
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        await expect(page).to_have_url(f"{server.url}/dashboard#/e/answer-style")
        await expect(page.get_by_role("tab", name="answer-style")).to_have_attribute("aria-selected", "true")

        rates = page.get_by_role("img", name="Thumbs-up rate per variant")
        await expect(rates).to_be_visible()
        for variant in results["variants"]:
            expected = f"{variant['name']} {round(variant['thumbs_up_rate'] * 100)}%"
            assert expected in (await rates.get_attribute("aria-label") or ""), expected
        await expect(rates.locator("circle.dot")).to_have_count(3)
        await expect(page.locator("#verdicts li")).to_have_count(2)
        srm = results["srm"]
        callout = page.locator("#srm")
        await expect(callout).to_contain_text(
            "split looks healthy" if srm["mismatch"] is False else "Too few users"
        )
        split = page.get_by_role("img", name="Users per variant")
        for name, count in seen.items():
            assert f"{name} {count}" in (await split.get_attribute("aria-label") or "")
        await expect(page.get_by_role("img", name="Latency per variant")).to_be_visible()
        await expect(page.get_by_role("img", name="Cost per answer")).to_contain_text("$0.0009")

        tiles = page.locator("#usage-tiles")
        await expect(tiles).to_contain_text(f"Answers{USERS}")
        await expect(page.get_by_role("img", name="Tokens per day")).to_be_visible()
        table = page.locator("#usage-table tbody tr")
        await expect(table).to_have_count(3)
        await screenshot(page, "dashboard")
        await page.screenshot(path=str(Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots" / "dashboard-full.png"), full_page=True)  # fmt: skip

        await page.get_by_role("button", name="Switch theme").click()
        await expect(page.locator("html[data-theme=dark]")).to_be_attached()
        await screenshot(page, "dashboard-dark")

        await page.set_viewport_size({"width": 390, "height": 844})
        # Redrawn at the new width (on the next frame after the resize).
        await page.wait_for_function(
            "() => Number(document.querySelector('#chart-rates svg')?.getAttribute('width')) <= 390"
        )
        await expect(rates).to_be_visible()
        await screenshot(page, "dashboard-phone")


async def test_a_user_sees_their_own_usage_and_no_experiments(
    chat_server: ChatServer, context: BrowserContext, tmp_path: Path
) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    async with chat_server(model="scripted:echo", config_file=config) as server:
        await populate(server)
        key = await key_for(server, "user00")
        page = await context.new_page()
        await page.goto(server.url + "/")
        await page.evaluate("key => localStorage.setItem('parley.apiKey', key)", key)
        await page.goto(server.url + "/dashboard")
        await expect(page.locator("body[data-ready=true]")).to_be_attached()
        await expect(page.locator("#experiments-note")).to_have_text(
            "Experiments are visible to administrators."
        )
        await expect(page.locator("#usage-tiles")).to_contain_text("Answers1")
        await expect(page.locator("#banner")).to_be_hidden()
