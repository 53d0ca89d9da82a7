"""Replies after the shop's tools, and references to what was shown (issue #18, bullets 3 and 4).

A small model (``chooses_tools=False``) is stood in for by a ``ScriptedProvider`` whose turns
would be argument-filling replies; the server asks it for none here, since it reads the
arguments from the words and resolves references itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from parley.answers.references import Item, Shown, question, resolve
from parley.answers.replies import Gate
from parley.providers.base import TextDelta, ToolCallDelta
from parley.providers.scripted import ScriptedProvider
from parley.tools.base import ToolResult, tool
from parley.tools.shop import derive_quantity, derive_search, details_summary, search_summary
from tests.conftest import Server, serve
from tests.sse import Frame, assert_contiguous, new_thread, read_events, start_run

PRICE = re.compile(r"\$(\d[\d,]*\.\d\d)")


async def say(server: Server, thread: str, text: str) -> list[Frame]:
    run = await start_run(server.client, thread, text)
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert_contiguous(frames)
    assert frames[-1].event == "run.completed"
    return frames


def of(frames: list[Frame], event: str) -> list[dict[str, Any]]:
    return [f.json for f in frames if f.event == event]


def reply(frames: list[Frame]) -> str:
    return "".join(f.json["text"] for f in frames if f.event == "message.delta")


def cards(frames: list[Frame]) -> list[dict[str, Any]]:
    return [p for r in of(frames, "tool.result") for p in (r["ui"] or {}).get("products", [])]


async def cart_ids(server: Server, thread: str) -> list[str]:
    return [i["product_id"] for i in (await server.parley.shop.cart(thread))["items"]]


def small() -> ScriptedProvider:
    return ScriptedProvider(chooses_tools=False, turns=[])


async def test_a_search_reply_is_the_summary_with_the_cards_prices(settings_for) -> None:
    provider = small()
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "show me wireless headphones")
        text = reply(frames)
        shown = cards(frames)
        assert len(shown) == 8
        assert "{" not in text
        assert text.startswith("I found 8 products")
        prices = {f"{p['price']:,.2f}" for p in shown}
        assert set(PRICE.findall(text)) <= prices
        # The first names in the reply are the first cards, in the order shown.
        assert text.splitlines()[1] == f"1. {shown[0]['name']}: ${shown[0]['price']:,.2f}"
        assert provider.requests == []  # no model turn wrote any of it


async def test_it_after_tell_me_more_adds_that_product(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        await say(server, thread, "show me wireless headphones")
        frames = await say(server, thread, "Tell me more about Quietline Pro Wireless Headphones, Black")
        assert [c["arguments"]["product_id"] for c in of(frames, "tool.call")] == ["AUD-108"]
        assert reply(frames).startswith("Quietline Pro Wireless Headphones, Black costs $338.99; 80 in stock")
        frames = await say(server, thread, "Add it to my cart")
        assert await cart_ids(server, thread) == ["AUD-108"]
        assert reply(frames).startswith("Added Quietline Pro Wireless Headphones, Black to your cart")
        assert reply(frames).endswith(
            "Your cart now has 1 item: subtotal $338.99, estimated total $372.89 with tax."
        )


async def test_the_first_one_is_the_first_card(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        shown = cards(await say(server, thread, "find me a keyboard"))
        await say(server, thread, "add the first one")
        assert await cart_ids(server, thread) == [shown[0]["id"]]
        await say(server, thread, "add the last one too")
        assert await cart_ids(server, thread) == [shown[0]["id"], shown[-1]["id"]]


async def test_a_product_that_cannot_be_added_gets_a_plain_reason(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        first = cards(await say(server, thread, "show me the Glide Wireless Mouse, Black"))[0]
        assert first["stock_quantity"] == 0  # the demo catalog's Glide Wireless Mouse, Black is sold out
        frames = await say(server, thread, "add the first one")
        assert reply(frames) == f"I couldn't add that to your cart: {first['name']} is out of stock."
        assert await cart_ids(server, thread) == []


async def test_the_black_one_when_one_is_black_and_when_two_are(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        shown = cards(await say(server, thread, "show me quietline headphones"))
        assert [p["id"] for p in shown if p["name"].endswith("Black")] == ["AUD-108"]
        await say(server, thread, "add the black one")
        assert await cart_ids(server, thread) == ["AUD-108"]

        other = await new_thread(server.client, "shop")
        shown = cards(await say(server, other, "find me an office keyboard"))
        blacks = [p for p in shown if p["name"].endswith("Black")]
        assert len(blacks) == 2
        assert shown.index(blacks[1]) != 1  # "number 2" of the question is not the second card
        frames = await say(server, other, "add the black one")
        assert of(frames, "tool.call") == []
        assert reply(frames) == "\n".join(
            ["Which product do you mean?"]
            + [f"{n}. {p['name']} (${p['price']:,.2f})" for n, p in enumerate(blacks, 1)]
        )
        assert await cart_ids(server, other) == []
        # The answer to the question counts in its list.
        await say(server, other, "add number 2")
        assert await cart_ids(server, other) == [blacks[1]["id"]]


async def test_both_adds_the_two_products_shown(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        shown = cards(await say(server, thread, "show me kid safe"))
        assert len(shown) == 2
        frames = await say(server, thread, "add both to my cart")
        assert len(of(frames, "tool.call")) == 2
        assert await cart_ids(server, thread) == [p["id"] for p in shown]
        assert reply(frames).endswith(
            "Your cart now has 2 items: subtotal $225.98, estimated total $248.58 with tax."
        )


async def test_an_ambiguous_it_asks_back_and_adds_nothing(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        shown = cards(await say(server, thread, "show me wireless headphones"))
        frames = await say(server, thread, "add it")
        assert of(frames, "tool.call") == []
        lines = reply(frames).splitlines()
        assert lines[0] == "Which product do you mean?"
        assert [line.split(" (")[0] for line in lines[1:]] == [
            f"{n}. {p['name']}" for n, p in enumerate(shown, 1)
        ]
        assert await cart_ids(server, thread) == []


async def test_a_product_named_but_never_shown_is_searched_for_then_added(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "add the Quietline Pro Wireless Headphones, Black to my cart")
        calls = of(frames, "tool.call")
        assert [c["name"] for c in calls] == ["search_products", "add_to_cart"]
        assert calls[1]["arguments"]["product_id"] == "AUD-108"
        assert await cart_ids(server, thread) == ["AUD-108"]
        assert reply(frames).startswith("Added Quietline Pro Wireless Headphones, Black to your cart")
        # What the server's own search showed is what "it" and provenance count in afterwards.
        frames = await say(server, thread, "tell me more about it")
        assert [c["arguments"]["product_id"] for c in of(frames, "tool.call")] == ["AUD-108"]


async def test_a_name_that_fits_several_products_asks_back_and_adds_nothing(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "add the Glide Wireless Mouse to my cart")
        assert [c["name"] for c in of(frames, "tool.call")] == ["search_products"]
        assert reply(frames) == "\n".join(
            [
                "Which product do you mean?",
                "1. Glide Wireless Mouse, Sand ($82.99)",
                "2. Glide Wireless Mouse, Black ($82.99)",
            ]
        )
        assert await cart_ids(server, thread) == []
        await say(server, thread, "add number 1")
        assert await cart_ids(server, thread) == ["MOU-101"]


async def test_a_named_product_out_of_stock_is_not_swapped_for_another(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "add the Glide Wireless Mouse, Black to my cart")
        assert [c["arguments"].get("product_id") for c in of(frames, "tool.call")] == [None, "MOU-102"]
        assert (
            reply(frames) == "I couldn't add that to your cart: Glide Wireless Mouse, Black is out of stock."
        )
        assert await cart_ids(server, thread) == []


async def test_a_name_nothing_in_the_catalog_has_says_so(settings_for) -> None:
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "add the Zorblax Hyperdrive to my cart")
        assert [c["name"] for c in of(frames, "tool.call")] == ["search_products"]
        assert reply(frames).startswith("I found no products")
        assert await cart_ids(server, thread) == []
        # A price with its currency is a search's price, and says the message is a search.
        frames = await say(server, thread, "running shoes under 150 dollars")
        calls = of(frames, "tool.call")
        assert [(c["name"], c["arguments"]) for c in calls] == [
            ("search_products", {"query": "running shoes", "max_price": 150.0})
        ], calls
        # Not "Glass Cities", a thriller "about a city run by algorithms" (``RELATIVE_FLOOR``).
        assert reply(frames).startswith('I found 7 products for "running shoes", from $33.99 to $109.99')
        # Nothing found: the reply says what the catalog does sell, and the price asked for.
        frames = await say(server, thread, "I need a gift for a runner under 100 dollars")
        assert reply(frames) == (
            'I found no products for "gift runner" under $100.00. The catalog has beauty, books, '
            "clothing, electronics, home and sports. Try fewer or different words."
        )


async def test_a_question_picking_among_the_results_shows_that_product(settings_for) -> None:
    """Asked "which one is cheaper?", which has no word of any tool, and picks among the products just shown,
    so the server shows the cheapest one's details; the small model once answered "the ones with
    the "F" in them are usually the best". With nothing shown, it says so."""
    model = ScriptedProvider(chooses_tools=False)
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": model}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "which one is cheaper?")
        assert of(frames, "tool.call") == []  # nothing shown yet: nothing to pick from
        assert reply(frames).startswith("I haven't shown any products yet.")
        frames = await say(server, thread, "running shoes under 150 dollars")
        listed = of(frames, "tool.result")[0]["output"]["products"]
        cheapest = min(listed, key=lambda p: p["price"])
        frames = await say(server, thread, "which one is cheaper?")
        calls = of(frames, "tool.call")
        assert [(c["name"], c["arguments"]["product_id"]) for c in calls] == [
            ("show_product_details", cheapest["id"])
        ], calls
        assert reply(frames).startswith(f"{cheapest['name']} costs ${cheapest['price']:.2f}"), reply(frames)
        # Two cost the most: a question back, never a guess.
        frames = await say(server, thread, "and the most expensive?")
        top = max(p["price"] for p in listed)
        dearest = [p["name"] for p in listed if p["price"] == top]
        assert len(dearest) == 2
        assert reply(frames) == "Which product do you mean?\n" + "\n".join(
            f"{n}. {name} (${top:.2f})" for n, name in enumerate(dearest, start=1)
        )
        assert model.requests == []


def call(name: str, arguments: dict[str, Any], index: int = 0) -> ToolCallDelta:
    return ToolCallDelta(index, f"call_{name}_{index}", name, json.dumps(arguments))


async def test_a_capable_model_s_invented_price_and_json_are_not_shown(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "wireless headphones"})],
            [
                TextDelta("Here are some wireless headphones.\nThe Aurora Lite costs "),
                TextDelta('$49.99 today.\n{"id": "AUD-999", "price": 12.5}\n'),
                TextDelta("The Quietline Pro costs $338.99."),
            ],
            [call("search_products", {"query": "kid safe"})],
            [TextDelta("The Kid Safe Mini is only $9.99 and has 500 reviews!")],
        ]
    )
    async with serve(settings_for(model="scripted:big"), providers={"scripted:big": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "show me wireless headphones")
        text = reply(frames)
        assert text == "Here are some wireless headphones.\nThe Quietline Pro costs $338.99."
        assert frames[-1].json["text"] == text

        # Nothing the model wrote holds up: the tool's own summary is the reply.
        frames = await say(server, thread, "any kid safe headphones?")
        assert reply(frames).startswith("I found 2 products")
        assert "9.99" not in reply(frames)


# -- units ---------------------------------------------------------------------------------------


def record(
    products: list[tuple[str, str, float]], *, name: str = "search_products", focus: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "status": "ok",
        "output": {"products": [{"id": i, "name": n, "price": p} for i, n, p in products]},
        "refs": {"product": {i: n for i, n, _ in products}},
        "focus": {"product": focus} if focus else {},
    }


KEYBOARDS = [
    ("KEY-101", "Forge TKL Mechanical Keyboard, Black", 116.99),
    ("KEY-105", "Slim Office Keyboard, Midnight Blue", 46.99),
    ("KEY-106", "Slim Office Keyboard, Black", 46.99),
    ("KEY-109", "Travel Fold Keyboard, White", 80.99),
]


def shown_after(*records: dict[str, Any]) -> Shown:
    shown = Shown()
    shown.add_records(records)
    return shown


def test_positions_and_prices_count_in_the_list_shown_last() -> None:
    shown = shown_after(record(KEYBOARDS))
    assert resolve("add the first one", shown, "product").ids == ("KEY-101",)
    assert resolve("add number 3", shown, "product").ids == ("KEY-106",)
    assert resolve("the 2nd please", shown, "product").ids == ("KEY-105",)
    assert resolve("the last one", shown, "product").ids == ("KEY-109",)
    assert resolve("the most expensive one", shown, "product").ids == ("KEY-101",)
    assert resolve("the second black one", shown, "product").ids == ("KEY-106",)
    cheapest = resolve("the cheapest", shown, "product")  # two at 46.99: which?
    assert [c.id for c in cheapest.choices] == ["KEY-105", "KEY-106"]
    assert resolve("the tenth one", shown, "product").ambiguous


def test_describing_words_and_names_pick_one_or_ask() -> None:
    shown = shown_after(record(KEYBOARDS))
    assert resolve("the white one", shown, "product").ids == ("KEY-109",)
    assert resolve("the forge keyboard", shown, "product").ids == ("KEY-101",)
    black = resolve("the black one", shown, "product")
    assert [c.id for c in black.choices] == ["KEY-101", "KEY-106"]
    assert question(black, "product") == (
        "Which product do you mean?\n1. Forge TKL Mechanical Keyboard, Black ($116.99)\n"
        "2. Slim Office Keyboard, Black ($46.99)"
    )
    assert resolve("the purple one", shown, "product").ambiguous  # nothing purple was shown: ask


def test_it_is_the_product_in_focus_and_both_needs_two() -> None:
    details = record(
        [("AUD-108", "Quietline Pro Wireless Headphones, Black", 338.99), ("AUD-107", "Other", 1.0)],
        name="show_product_details",
        focus="AUD-108",
    )
    shown = shown_after(record(KEYBOARDS), details)
    assert resolve("add it to my cart", shown, "product").ids == ("AUD-108",)
    assert resolve("add the first one", shown, "product").ids == ("KEY-101",)  # the list, not the related
    assert resolve("add it", shown_after(record(KEYBOARDS)), "product").ambiguous
    assert resolve("add it", shown_after(record(KEYBOARDS[:1])), "product").ids == ("KEY-101",)
    assert resolve("add both", shown_after(record(KEYBOARDS[2:])), "product").ids == ("KEY-106", "KEY-109")
    assert resolve("add both", shown, "product").ambiguous
    nothing = resolve("add it", Shown(), "product")
    assert not nothing.ids
    assert not nothing.anything_shown
    assert question(nothing, "product").startswith("I haven't shown any products yet")


def test_a_question_back_is_the_list_the_next_answer_counts_in() -> None:
    shown = shown_after(record(KEYBOARDS))
    shown.add_choices("product", [Item("KEY-101", "Forge", 116.99), Item("KEY-106", "Slim", 46.99)])
    assert resolve("number 2", shown, "product").ids == ("KEY-106",)
    assert resolve("the cheaper one", shown, "product").ids == ("KEY-106",)


def test_summaries_are_plain_sentences_with_the_results_numbers() -> None:
    products = [
        {"id": "A-1", "name": "Alpha", "price": 10.0, "in_stock": True},
        {"id": "B-2", "name": "Beta", "price": 1234.5, "in_stock": False},
    ]
    text = search_summary({"products": products, "query": "things"})
    assert text == (
        'I found 2 products for "things", from $10.00 to $1,234.50; 1 of them in stock.\n'
        "1. Alpha: $10.00\n2. Beta: $1,234.50"
    )
    assert search_summary({"products": [], "query": "zzz"}) == (
        'I found no products for "zzz". Try fewer or different words.'
    )
    assert search_summary(
        {
            "products": [],
            "query": "zzz",
            "category": "books",
            "max_price": 20,
            "categories": ["books", "home"],
        }
    ) == (
        'I found no products for "zzz" in books under $20.00. The catalog has books and home. '
        "Try fewer or different words."
    )
    product = {"name": "Alpha", "price": 10.0, "stock_quantity": 0, "rating": 4.5, "reviews_count": 12}
    assert (
        details_summary(product, [])
        == "Alpha costs $10.00; it is out of stock; rated 4.5 out of 5 from 12 reviews."
    )


def test_a_tool_without_a_summary_gets_a_plain_one() -> None:
    @tool
    def lookup(code: str) -> dict[str, Any]:
        """Look a code up."""
        return {"code": code, "rows": [{"a": 1}]}

    @tool
    def raw(code: str) -> str:
        """Return raw JSON."""
        return json.dumps({"code": code})

    import asyncio

    result = asyncio.run(lookup.run(None, lookup.parse({"code": "X1"})))  # type: ignore[arg-type]
    assert result.summary == "Lookup finished (code: X1)."
    assert "{" not in asyncio.run(raw.run(None, raw.parse({"code": "X1"}))).summary  # type: ignore[arg-type]
    assert isinstance(result, ToolResult)


def test_plain_arguments_come_from_the_words() -> None:
    assert derive_search("any wireless headphones under $150 in stock?") == {
        "max_price": 150.0,
        "in_stock": True,
        "query": "wireless headphones",
    }
    assert derive_search("show me keyboards over 50") == {"min_price": 50.0, "query": "keyboards"}
    # The currency is part of the price, not a word to search for.
    assert derive_search("running shoes under 100 dollars") == {"max_price": 100.0, "query": "running shoes"}
    assert derive_search("earbuds below 80 bucks") == {"max_price": 80.0, "query": "earbuds"}
    assert derive_search("a lamp over 20€ and under 49.90 USD") == {
        "max_price": 49.9,
        "min_price": 20.0,
        "query": "lamp",
    }
    assert derive_quantity("add two of the black one") == {"quantity": 2}
    assert derive_quantity("add 3 units") == {"quantity": 3}
    assert derive_quantity("add the Forge 75 keyboard") == {}
    assert derive_quantity("add the 2nd one") == {}


def test_the_gate_lets_through_only_sentences_the_results_support() -> None:
    gate = Gate('{"products": [{"id": "AUD-108", "name": "Quietline Pro", "price": 338.99}]}')
    gate.begin_turn()
    shown = gate.feed("Here you go. The Quietline Pro is $338.99.")
    shown += gate.feed(" AUD-999 is $5.00.\n")
    shown += gate.feed('{"id": "AUD-108"}\nEnjoy!')
    shown += gate.flush()
    assert shown == "Here you go. The Quietline Pro is $338.99.\nEnjoy!"
    assert gate.dropped == ["AUD-999 is $5.00.", '{"id": "AUD-108"}']


def test_a_claim_without_numbers_needs_its_words_in_the_results() -> None:
    gate = Gate('{"products": [{"id": "AUD-108", "name": "Quietline Pro", "price": 338.99}]}')
    shown = gate.feed("The Quietline Pro is $338.99. You can undo this later from the billing page. ")
    shown += gate.feed("Enjoy!")
    shown += gate.flush()
    assert shown == "The Quietline Pro is $338.99. Enjoy!"
    assert gate.dropped == ["You can undo this later from the billing page."]


def test_both_after_asking_for_a_product_line_means_its_two_variants() -> None:
    bands = [
        ("FIT-1", "Pulse Fit Band, Graphite", 156.99),
        ("FIT-2", "Pulse Fit Band, White", 156.99),
        ("RES-1", "Resistance Band Set", 243.99),
        ("WAT-1", "Pulse Watch 2, Sand", 341.99),
    ]
    searched = {**record(bands), "arguments": json.dumps({"query": "Pulse Fit Band"})}
    assert resolve("add both please", shown_after(searched), "product").ids == ("FIT-1", "FIT-2")
    vague = {**record(bands), "arguments": json.dumps({"query": "sport gear"})}
    assert resolve("add both please", shown_after(vague), "product").ambiguous


async def test_a_removal_means_what_is_in_the_cart(settings_for) -> None:
    """ "remove the shoes", with one pair in the cart and four shown, asked "Which product do you
    mean?" with the four; "remove the tee", with no tee in the cart, asked which of two tees.
    What a removal names is looked for in the cart; what is not there is said to be not there."""
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await say(server, thread, "remove the kettle")
        assert reply(frames) == "Nothing is in your cart."
        assert of(frames, "tool.call") == []
        await say(server, thread, "show me running shoes")
        await say(server, thread, "add the Cloudrun Running Shoes, Black to my cart")
        assert await cart_ids(server, thread) == ["SHO-102"]
        frames = await say(server, thread, "remove the tee")
        assert reply(frames) == "That is not in your cart. In your cart: Cloudrun Running Shoes, Black."
        assert of(frames, "tool.call") == []
        frames = await say(server, thread, "remove the shoes")
        assert [(c["name"], c["arguments"]["product_id"]) for c in of(frames, "tool.call")] == [
            ("remove_from_cart", "SHO-102")
        ]
        assert await cart_ids(server, thread) == []


async def test_the_first_of_a_kind_counts_in_the_list_that_showed_that_kind(settings_for) -> None:
    """ "add the first running shoes", asked after a kettle was shown, added a second kettle: the
    last list was the kettle's. The describing words pick the list they fit."""
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": small()}) as server:
        thread = await new_thread(server.client, "shop")
        shoes = cards(await say(server, thread, "show me running shoes"))
        await say(server, thread, "show me a kettle")
        await say(server, thread, "add the first running shoes")
        assert await cart_ids(server, thread) == [shoes[0]["id"]]
        assert shoes[0]["name"].startswith("Cloudrun Running Shoes")
