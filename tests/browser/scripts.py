"""Scripted model turns for the real assistants: tools, catalog, provenance and knowledge are real.

The scripted provider stands in for the model only (the boundary): it says which tool to call
with which arguments, and the server does the rest as it would for any model.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page

from parley.providers.base import TextDelta, ToolCallDelta
from parley.providers.scripted import ScriptedProvider, Step

SHOP_MODEL = "scripted:shop"
#: The demo catalog's answer to this search: two colours of one headphone, 20 and 2 in stock.
SEARCH = {"query": "aurora anc headphones", "limit": 2}
FOUND = ["AUD-102", "AUD-101"]


def call(name: str, arguments: dict[str, Any], index: int = 0) -> ToolCallDelta:
    return ToolCallDelta(index, f"call_{name}_{index}", name, json.dumps(arguments))


def shop_model(*turns: list[Step]) -> ScriptedProvider:
    """A model for the ``shop`` assistant; by default it searches, then answers."""
    script = turns or ([call("search_products", SEARCH)], [TextDelta("I found **2 headphones** for you.")])
    return ScriptedProvider(turns=list(script), name=SHOP_MODEL)


def add_to_cart(product_id: str, quantity: int = 2, *, invented: str | None = None) -> list[list[Step]]:
    """The turns of an add-to-cart run: optionally an invented id first (rejected), then the real one."""
    turns: list[list[Step]] = []
    if invented is not None:
        turns.append([call("add_to_cart", {"product_id": invented, "quantity": quantity})])
    turns.append([call("add_to_cart", {"product_id": product_id, "quantity": quantity})])
    turns.append([TextDelta(f"Added {quantity} to your cart.")])
    return turns


async def choose(page: Page, assistant: str) -> None:
    await page.get_by_role("combobox", name="Assistant").select_option(assistant)
