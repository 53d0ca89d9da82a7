"""The tool registry, provenance and the agent's tool loop (native and small-model)."""

from __future__ import annotations

import json
import random
import string
from typing import Annotated, Any

import numpy as np
import pytest
from pydantic import Field
from sqlalchemy import select

from parley.providers.base import TextDelta, ToolCall, ToolCallDelta
from parley.providers.scripted import ScriptedProvider
from parley.shop import CartItem, Product
from parley.tools.base import Ref, ToolContext, ToolError, ToolResult, tool
from parley.tools.calls import assemble, execute
from parley.tools.choice import HybridRouter, KeywordRouter, grounded_schema, plan, tool_document
from parley.tools.provenance import Seen
from parley.tools.shop import TOOLS
from tests.conftest import Server, serve
from tests.sse import Frame, assert_contiguous, new_thread, read_events, start_run

ItemId = Annotated[str, Ref("item"), Field(description="An item shown earlier.")]


@tool(keywords=("look", "inspect"))
async def inspect_item(ctx: ToolContext, item_id: ItemId, verbose: bool = False) -> ToolResult:
    """Look at one item."""
    if item_id == "broken":
        raise ToolError("this item is broken", code="BROKEN")
    return ToolResult({"item": item_id, "verbose": verbose}, refs={"item": {item_id: f"Item {item_id}"}})


def test_schema_comes_from_the_types_and_the_docstring() -> None:
    spec = inspect_item.spec()
    assert spec.name == "inspect_item"
    assert spec.description == "Look at one item."
    assert spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "item_id": {"type": "string", "description": "An item shown earlier."},
            "verbose": {"type": "boolean", "default": False},
        },
        "required": ["item_id"],
    }
    assert inspect_item.references == {"item_id": "item"}


def test_a_tool_without_a_docstring_is_refused() -> None:
    def nameless(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="docstring"):
        tool(nameless)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"verbose": true}', "item_id: Field required"),
        ('{"item_id": "a", "colour": "red"}', "colour: unknown argument"),
        ('{"item_id": "a", "verbose": "maybe"}', "verbose: Input should be a valid boolean"),
    ],
)
def test_invalid_arguments_are_explained(arguments: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inspect_item.parse(arguments)


def test_fragments_assemble_into_calls_by_index() -> None:
    calls = assemble(
        [
            ToolCallDelta(0, "a", "inspect_item", '{"item_'),
            ToolCallDelta(1, "b", "inspect_item", '{"item_id": "y"}'),
            ToolCallDelta(0, None, None, 'id": "x"}'),
        ]
    )
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("a", "inspect_item", {"item_id": "x"}),
        ("b", "inspect_item", {"item_id": "y"}),
    ]


def mutations(value: str, rng: random.Random) -> list[str]:
    """Ids a model might invent from a real one."""
    alphabet = string.ascii_letters + string.digits + "-_"
    i = rng.randrange(len(value))
    return [
        value[:i] + rng.choice(alphabet.replace(value[i], "")) + value[i + 1 :],  # one character changed
        value[:-1],  # truncated
        value + rng.choice(string.digits),  # extended
        value.lower() if value != value.lower() else value.upper(),  # case changed
        value[::-1],  # reversed
        f" {value}",  # padded
        value.replace("-", "_") if "-" in value else value + "-1",
        value.replace("A", "\u0410") if "A" in value else value.replace("1", "\u0661"),  # homoglyph
    ]


async def test_adversarial_ids_are_never_executed() -> None:
    """Invariant 6 at the executor: 1,000+ invented or mutated ids, none of them runs."""
    executed: list[str] = []

    @tool
    async def touch(item_id: ItemId) -> str:
        """Touch an item."""
        executed.append(item_id)
        return "touched"

    rng = random.Random(7)
    shown = {f"ITM-{n}": f"Item {n}" for n in rng.sample(range(100, 999), 25)}
    seen = Seen()
    seen.add({"item": shown})
    invented = ["", "null", "' OR 1=1 --", "ITM-000", "item one", "Item 123", "../../etc/passwd", "\u0000"]
    invented += [m for value in shown for m in mutations(value, rng)]
    invented += [f"ITM-{n}" for n in range(100, 9999) if f"ITM-{n}" not in shown][:1000]
    invented = [v for v in invented if v not in shown]
    assert len(invented) >= 1000
    calls = [ToolCall(f"c{i}", "touch", json.dumps({"item_id": v})) for i, v in enumerate(invented)]
    ctx = ToolContext(db=None, thread_id="t", user_id=1)  # type: ignore[arg-type]
    outcomes = await execute(calls, {"touch": touch}, ctx, seen, timeout=5)
    assert executed == []
    assert {o.status for o in outcomes} == {"rejected"}
    # The real ids still work, and a near miss is told what it probably meant.
    first = next(iter(shown))
    ok = await execute(
        [ToolCall("ok", "touch", json.dumps({"item_id": first}))], {"touch": touch}, ctx, seen, timeout=5
    )
    assert ok[0].status == "ok"
    assert executed == [first]
    near = await execute(
        [ToolCall("n", "touch", json.dumps({"item_id": first[:-1] + "x"}))],
        {"touch": touch},
        ctx,
        seen,
        timeout=5,
    )
    assert near[0].suggestions[0]["id"] == first


async def test_a_call_can_use_ids_only_from_earlier_turns() -> None:
    ctx = ToolContext(db=None, thread_id="t", user_id=1)  # type: ignore[arg-type]
    seen = Seen()
    outcomes = await execute(
        [
            ToolCall("1", "inspect_item", '{"item_id": "a"}'),
            ToolCall("2", "inspect_item", '{"item_id": "broken"}'),
        ],
        {"inspect_item": inspect_item},
        ctx,
        seen,
        timeout=5,
    )
    assert [o.status for o in outcomes] == ["rejected", "rejected"]
    assert "search first" in outcomes[0].reason or "no item" in outcomes[0].reason
    seen.add({"item": {"a": "Item a", "broken": "Broken item"}})
    outcomes = await execute(
        [
            ToolCall("1", "inspect_item", '{"item_id": "a"}'),
            ToolCall("2", "inspect_item", '{"item_id": "broken"}'),
        ],
        {"inspect_item": inspect_item},
        ctx,
        seen,
        timeout=5,
    )
    assert [o.status for o in outcomes] == ["ok", "error"]
    assert outcomes[1].output == {"error": "this item is broken", "code": "BROKEN"}


def test_the_window_forgets_old_turns() -> None:
    from parley.store.schema import Message

    def turn(ids: list[str]) -> Message:
        record = {"status": "ok", "refs": {"item": {i: i for i in ids}}}
        return Message(role="assistant", content="", data={"tool_calls": [record]}, created_at=0.0)

    messages = [turn(["old"]), turn(["mid"]), turn(["new"])]
    seen = Seen.from_history(messages, window=2)
    assert not seen.contains("item", "old")
    assert seen.contains("item", "mid")
    assert seen.contains("item", "new")
    assert len(Seen.from_history(messages, window=0)) == 0
    assert len(Seen.from_history(messages, window=5, max_age=60)) == 0  # all created at epoch 0


def test_the_keyword_router_picks_a_tool_or_none() -> None:
    router = KeywordRouter(threshold=0.3, vocabulary={"search_products": ["headphon", "keyboard"]})
    choices = plan(router, "add the headphones to my cart and find me a keyboard", TOOLS)
    assert [(c.tool.name, c.text) for c in choices] == [
        ("add_to_cart", "add the headphones to my cart"),
        ("search_products", "find me a keyboard"),
    ]
    assert [c.tool.name for c in plan(router, "show me wireless headphones", TOOLS)] == ["search_products"]
    assert [c.tool.name for c in plan(router, "empty my cart please", TOOLS)] == ["clear_cart"]
    assert plan(router, "hello, how are you today?", TOOLS) == []


def test_the_hybrid_router_takes_whichever_of_keywords_and_meaning_is_surer() -> None:
    search = next(t for t in TOOLS if t.name == "search_products")

    def embed(texts: list[str]) -> np.ndarray:
        # A stand-in model: the search tool's document and a message about a desk mean the same.
        same = {tool_document(search), "something nice for my desk"}
        documents = {tool_document(t) for t in TOOLS}
        return np.array(
            [[1.0, 0, 0] if t in same else [0, 1.0, 0] if t in documents else [0, 0, 1.0] for t in texts]
        )

    router = HybridRouter(KeywordRouter(threshold=0.3))
    assert plan(router, "something nice for my desk", TOOLS) == []  # no tool's words: none by keywords
    router.attach(embed)
    assert [c.tool.name for c in plan(router, "something nice for my desk", TOOLS)] == ["search_products"]
    # Where the words are sure, meaning does not overrule them.
    assert [c.tool.name for c in plan(router, "empty my cart please", TOOLS)] == ["clear_cart"]
    assert plan(router, "hello, how are you today?", TOOLS) == []


def test_reference_arguments_are_narrowed_to_seen_ids() -> None:
    add = next(t for t in TOOLS if t.name == "add_to_cart")
    seen = Seen()
    seen.add({"product": {"AUD-101": "Aurora ANC Wireless Headphones", "KEY-101": "Forge TKL Keyboard"}})
    schema, shown = grounded_schema(add, seen, "add the headphones to my cart")
    assert schema["properties"]["product_id"]["enum"] == ["AUD-101"]
    assert shown == {"product": {"AUD-101": "Aurora ANC Wireless Headphones"}}
    schema, _ = grounded_schema(add, seen, "add it to my cart")
    assert schema["properties"]["product_id"]["enum"] == ["KEY-101", "AUD-101"]  # most recent first


# -- the loop, through a real server -------------------------------------------------------------


def call(name: str, arguments: dict[str, Any], index: int = 0, id_: str | None = None) -> ToolCallDelta:
    return ToolCallDelta(index, id_ or f"call_{name}_{index}", name, json.dumps(arguments))


def of(frames: list[Frame], event: str) -> list[dict[str, Any]]:
    return [f.json for f in frames if f.event == event]


async def run_shop(server: Server, thread: str, text: str) -> list[Frame]:
    run = await start_run(server.client, thread, text)
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert_contiguous(frames)
    return frames


async def stock(server: Server, product_id: str) -> int:
    async with server.parley.db.session() as session:
        value = await session.scalar(select(Product.stock).where(Product.id == product_id))
    assert value is not None
    return value


async def test_search_details_and_cart_in_one_run(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [TextDelta("Let me look."), call("search_products", {"query": "noise cancelling headphones"})],
            [call("show_product_details", {"product_id": "AUD-102"})],
            [call("add_to_cart", {"product_id": "AUD-102", "quantity": 2})],
            [TextDelta("Added two Aurora ANC headphones to your cart.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        before = await stock(server, "AUD-102")
        thread = await new_thread(server.client, "shop")
        frames = await run_shop(server, thread, "I want noise cancelling headphones, add two to my cart")
        kinds = [f.event for f in frames]
        assert kinds.count("tool.call") == 3
        assert kinds.count("tool.result") == 3
        assert kinds[-1] == "run.completed"
        results = of(frames, "tool.result")
        assert results[0]["ui"]["type"] == "product_list"
        assert "AUD-102" in [p["id"] for p in results[0]["ui"]["products"]]
        assert results[1]["ui"]["type"] == "product"
        assert results[1]["output"]["product"]["features"]
        assert results[2]["ui"]["type"] == "cart"
        assert results[2]["ui"]["summary"]["total_items"] == 2
        assert frames[-1].json["text"] == "Let me look.\n\nAdded two Aurora ANC headphones to your cart."
        assert await stock(server, "AUD-102") == before - 2

        # The model saw each result before its next turn, as tool messages answering its calls.
        last = provider.requests[3]
        assert [m.role for m in last.messages[-6:]] == ["assistant", "tool"] * 3
        assert json.loads(last.messages[-1].content)["cart_summary"]["total_items"] == 2
        assert {t.name for t in last.tools} >= {"search_products", "add_to_cart"}

        # The calls are kept with the answer: the thread's messages show them.
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
        assert [c["name"] for c in messages[-1]["tool_calls"]] == [
            "search_products",
            "show_product_details",
            "add_to_cart",
        ]


async def test_a_hallucinated_id_is_rejected_and_the_model_corrects_itself(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "mechanical keyboard"})],
            [TextDelta("Here are some keyboards.")],
            # Next run: the model invents an id, then a mistyped one, then uses the real one.
            [call("add_to_cart", {"product_id": "KB-9999"})],
            [call("add_to_cart", {"product_id": "KEY-10I"})],
            [call("add_to_cart", {"product_id": "KEY-101"})],
            [TextDelta("Done.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        thread = await new_thread(server.client, "shop")
        await run_shop(server, thread, "show me mechanical keyboards")
        before = await stock(server, "KEY-101")
        frames = await run_shop(server, thread, "add the first one")
        rejected = of(frames, "tool.rejected")
        assert len(rejected) == 2
        assert "KB-9999" in rejected[0]["reason"]
        assert rejected[1]["suggestions"][0]["id"] == "KEY-101"
        assert of(frames, "tool.result")[0]["output"]["cart_item"]["product_id"] == "KEY-101"
        assert await stock(server, "KEY-101") == before - 1
        # The rejection reached the model as the result of its call.
        feedback = json.loads(provider.requests[3].messages[-1].content)
        assert "does not name a product" in feedback["error"]


async def test_invalid_arguments_and_tool_errors_go_back_to_the_model(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "mouse", "limit": 500})],
            [call("search_products", {"query": "glide mouse", "limit": 5})],
            [call("add_to_cart", {"product_id": "MOU-102"})],  # shown, but out of stock
            [call("delete_everything", {})],
            [TextDelta("That mouse is out of stock.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await run_shop(server, thread, "buy the black glide mouse")
        rejected = of(frames, "tool.rejected")
        assert "limit: Input should be less than or equal to 20" in rejected[0]["reason"]
        assert "no tool named 'delete_everything'" in rejected[1]["reason"]
        errors = [r for r in of(frames, "tool.result") if r["is_error"]]
        assert errors[0]["output"]["code"] == "OUT_OF_STOCK"
        assert frames[-1].event == "run.completed"
        async with server.parley.db.session() as session:
            assert (await session.scalars(select(CartItem))).all() == []


async def test_parallel_calls_and_a_multi_step_request(settings_for) -> None:
    provider = ScriptedProvider(
        turns=[
            [call("search_products", {"query": "wireless headphones"})],
            [TextDelta("Found headphones.")],
            [
                call("add_to_cart", {"product_id": "AUD-103"}, index=0),
                call("search_products", {"query": "keyboard"}, index=1),
            ],
            [TextDelta("Added the headphones; here are keyboards.")],
        ]
    )
    async with serve(settings_for(model="scripted:shop"), providers={"scripted:shop": provider}) as server:
        thread = await new_thread(server.client, "shop")
        await run_shop(server, thread, "show me wireless headphones")
        frames = await run_shop(server, thread, "add the headphones to my cart and find me a keyboard")
        assert [f.event for f in frames[1:5]] == ["tool.call", "tool.call", "tool.result", "tool.result"]
        cart, keyboards = of(frames, "tool.result")
        assert cart["ui"]["type"] == "cart"
        assert {p["id"][:3] for p in keyboards["output"]["products"]} == {"KEY"}
        cart_now = await server.parley.shop.cart(thread)
        assert [i["product_id"] for i in cart_now["items"]] == ["AUD-103"]


async def test_the_step_limit_ends_the_loop(settings_for) -> None:
    search = [call("search_products", {"query": "lamp"})]
    provider = ScriptedProvider(
        turns=[search, search, search, [call("view_cart", {})], [TextDelta("unused")]]
    )
    settings = settings_for(model="scripted:shop", tool_max_steps=3)
    async with serve(settings, providers={"scripted:shop": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await run_shop(server, thread, "lamps")
        assert len(of(frames, "tool.result")) == 3
        rejected = of(frames, "tool.rejected")
        assert len(rejected) == 1
        assert "step limit of 3" in rejected[0]["reason"]
        assert provider.requests[3].tool_choice == "none"
        assert frames[-1].event == "run.completed"


async def test_invented_ids_through_the_whole_server_execute_nothing(settings_for) -> None:
    """Invariant 6 end to end: 100+ invented or mutated product ids in tool calls, 0 executed."""
    provider = ScriptedProvider(
        turns=[[call("search_products", {"query": "keyboard", "limit": 8})], [TextDelta("Keyboards.")]]
    )
    async with serve(
        settings_for(model="scripted:shop", tool_max_steps=20), providers={"scripted:shop": provider}
    ) as server:
        thread = await new_thread(server.client, "shop")
        first = await run_shop(server, thread, "keyboards")
        shown = [p["id"] for p in of(first, "tool.result")[0]["output"]["products"]]
        assert len(shown) == 8

        rng = random.Random(11)
        unseen_real = ["AUD-101", "AUD-102", "MOU-101", "MON-101", "SHO-101", "BKF-101", "KIT-102", "FRN-101"]
        bad = unseen_real + [m for value in shown for m in mutations(value, rng)]
        bad += ["Forge TKL Mechanical Keyboard", "the first one", "KEY-1O1", "*", "%", "KEY-%", "null"]
        bad += [f"KEY-{n}" for n in range(120, 160)]
        bad = list(dict.fromkeys(v for v in bad if v not in shown))
        assert len(bad) >= 100
        tools = ["add_to_cart", "show_product_details", "remove_from_cart", "get_recommendations"]
        for start in range(0, len(bad), 30):
            provider.enqueue(
                [
                    call(tools[i % 4], {"product_id": value}, index=i, id_=f"bad{start + i}")
                    for i, value in enumerate(bad[start : start + 30])
                ]
            )
        provider.enqueue([TextDelta("I could not find those.")])

        stocks = {pid: await stock(server, pid) for pid in shown + unseen_real}
        frames = await run_shop(server, thread, "add them all")
        assert len(of(frames, "tool.call")) == len(bad)
        assert len(of(frames, "tool.rejected")) == len(bad)
        assert of(frames, "tool.result") == []
        assert frames[-1].json["text"] == "I could not find those."
        assert {pid: await stock(server, pid) for pid in stocks} == stocks
        assert (await server.parley.shop.cart(thread))["items"] == []


async def test_small_model_mode_server_picks_tools_and_their_arguments(settings_for) -> None:
    """A small model is not asked to write the reply after tools (their summaries are), nor
    arguments the server reads from the words or resolves against what was shown."""
    provider = ScriptedProvider(chooses_tools=False)
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await run_shop(server, thread, "show me wireless headphones")
        assert [(c["name"], c["arguments"]) for c in of(frames, "tool.call")] == [
            ("search_products", {"query": "wireless headphones"})
        ]
        assert provider.requests == []
        reply = frames[-1].json["text"]
        assert reply.startswith("I found 8 products")
        assert "{" not in reply

        frames = await run_shop(
            server, thread, "add the graphite aurora lite headphones to my cart and find me a keyboard"
        )
        calls = of(frames, "tool.call")
        assert [c["name"] for c in calls] == ["add_to_cart", "search_products"]
        assert calls[0]["arguments"] == {"product_id": "AUD-104"}
        assert calls[1]["arguments"] == {"query": "keyboard"}
        assert {p["id"][:3] for p in of(frames, "tool.result")[1]["output"]["products"]} == {"KEY"}
        assert [i["product_id"] for i in (await server.parley.shop.cart(thread))["items"]] == ["AUD-104"]
        assert provider.requests == []

        frames = await run_shop(server, thread, "hello there")
        assert of(frames, "tool.call") == []
        assert frames[-1].json["text"].startswith("Hello! I'm Parley's shopping assistant.")
        assert provider.requests == []


async def test_a_small_model_never_writes_a_shops_reply_of_its_own(settings_for) -> None:
    """What no tool's words claim was the small model's to answer, and it invented products
    ("the Nike Runners' Fitbit") and people ("I'm just a little girl"). Small talk gets the
    assistant's own reply; anything else is looked up in the catalog, found or not."""
    provider = ScriptedProvider(chooses_tools=False, turns=[[TextDelta("Try the Nike Runners' Fitbit!")]] * 4)
    async with serve(settings_for(model="scripted:small"), providers={"scripted:small": provider}) as server:
        thread = await new_thread(server.client, "shop")
        frames = await run_shop(server, thread, "thanks, that's all")
        assert of(frames, "tool.call") == []
        assert frames[-1].json["text"] == "You're welcome! Ask me anything else you need."

        frames = await run_shop(server, thread, "I need a gift for my dad who likes cooking")
        calls = of(frames, "tool.call")
        assert [(c["name"], c["arguments"]) for c in calls] == [
            ("search_products", {"query": "gift dad likes cooking"})
        ]
        reply = frames[-1].json["text"]
        assert reply.startswith("I found 1 product")
        assert "Crisp Air Fryer 5L" in reply

        frames = await run_shop(server, thread, "what would you recommend for a runner?")
        assert [c["arguments"] for c in of(frames, "tool.call")] == [{"query": "runner"}]
        # No product says "runner" (they say "running"): the closest by meaning, said as such.
        reply = frames[-1].json["text"]
        assert reply.startswith('No product mentions "runner"; these 2 are the closest by meaning'), reply
        assert "1. Cloudrun Running Shoes" in reply
        shown = [p["id"] for r in of(frames, "tool.result") for p in (r["ui"] or {}).get("products", [])]
        assert sorted(shown) == ["SHO-101", "SHO-102"]

        frames = await run_shop(server, thread, "what is the capital of France?")
        reply = frames[-1].json["text"]
        assert reply.startswith('I found no products for "capital France". The catalog has beauty'), reply
        assert provider.requests == []
        assert "Nike" not in (await server.client.get(f"/v1/threads/{thread}/messages")).text
