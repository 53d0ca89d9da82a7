"""The shop's tools: search, details, recommendations and the cart (seed 000's four, and more).

Every product id argument is a ``Ref("product")``: the model may only name products
that an earlier tool result of the conversation showed.

Each tool writes a short factual summary of its result (counts, prices, stock, what changed,
the cart's total): the reply a small model's user reads. The search and the cart tools also
read their plain arguments (a query, price bounds, a quantity) from the user's words, so a
small model is not asked to write them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import structlog
from pydantic import Field
from sqlalchemy import select

from parley.answers.compose import spoken
from parley.catalog import load_demo_catalog
from parley.shop import Product, Shop, product_json
from parley.tools.base import Ref, Tool, ToolContext, ToolError, ToolResult, Tools, Within, tool
from parley.tools.choice import STOPWORDS, HybridRouter, KeywordRouter, stems

log = structlog.get_logger(__name__)

ProductId = Annotated[
    str,
    Ref("product"),
    Field(min_length=1, max_length=64, description="The id of a product shown by an earlier result."),
]


def _refs(products: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {"product": {p["id"]: p["name"] for p in products}} if products else {}


# -- summaries and plain arguments -----------------------------------------------------------

_SHOWN = 5
#: The search tool's own words: asking for things, and prices ("under 100 dollars").
_ASKING = ("find", "search", "show", "looking", "look", "need", "want", "browse", "under", "cheap", "any")
_PRICE_WORDS = ("price", "dollars", "bucks", "euros", "usd")
_SEARCH_WORDS = frozenset(
    [
        "find",
        "search",
        "show",
        "looking",
        "look",
        "need",
        "want",
        "browse",
        "any",
        "some",
        "something",
        "anything",
        "products",
        "product",
        "items",
        "item",
        "i'm",
        "im",
        "me",
        "get",
        "see",
        "got",
        "have",
        "has",
        # Asking, not naming ("what would you recommend for a runner?")
        "what",
        "which",
        "would",
        "could",
        "recommend",
        "suggest",
    ]
)
#: A price as people write it: "$150", "150 dollars", "80 bucks", "99.90 USD", "50€".
_PRICE = r"[$€£]?\s*(\d+(?:\.\d+)?)(?:\s*(?:[$€£]|dollars?|bucks|usd|euros?|eur|pounds?|gbp)\b|[$€£])?"
_UNDER = re.compile(
    rf"\b(?:under|below|less than|cheaper than|up to|at most|max(?:imum)?|within)\s*{_PRICE}", re.I
)
_OVER = re.compile(rf"\b(?:over|above|more than|at least|min(?:imum)?|from)\s*{_PRICE}", re.I)
_NUMBER_WORDS = {
    w: n
    for n, w in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"], 1)
}
_COUNT = r"(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)"
_QUANTITY = (
    re.compile(
        rf"\b(?:add|buy|get|take|order|put|remove|drop|delete)\s+{_COUNT}\b(?!\s*(?:st|nd|rd|th)\b)", re.I
    ),
    re.compile(rf"\b{_COUNT}\s*(?:x|units?|pieces?|pcs|more|of (?:it|them|those|these|the))\b", re.I),
    re.compile(r"\bquantity\s*(?:of\s*)?(\d{1,2})\b", re.I),
)


def money(value: float) -> str:
    return f"${value:,.2f}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _numbered(products: Sequence[dict[str, Any]]) -> list[str]:
    return [f"{n}. {p['name']}: {money(p['price'])}" for n, p in enumerate(products[:_SHOWN], start=1)]


def _more(products: Sequence[dict[str, Any]]) -> list[str]:
    extra = len(products) - _SHOWN
    return [f"…and {extra} more."] if extra > 0 else []


def _price_range(products: Sequence[dict[str, Any]]) -> str:
    low, high = min(p["price"] for p in products), max(p["price"] for p in products)
    return f"at {money(low)}" if low == high else f"from {money(low)} to {money(high)}"


def _cart_line(summary: dict[str, Any]) -> str:
    if not summary.get("total_items"):
        return "Your cart is now empty."
    units = _plural(int(summary["total_items"]), "item")
    if summary.get("estimated_tax"):
        return (
            f"Your cart now has {units}: subtotal {money(summary['subtotal'])}, "
            f"estimated total {money(summary['estimated_total'])} with tax."
        )
    return f"Your cart now has {units}, total {money(summary['subtotal'])}."


def _bounds(output: dict[str, Any]) -> str:
    """The filters a search had, as words: " in books under $20.00"."""
    parts = [f" in {output['category']}"] if output.get("category") else []
    if output.get("min_price") is not None:
        parts.append(f" over {money(output['min_price'])}")
    if output.get("max_price") is not None:
        parts.append(f" under {money(output['max_price'])}")
    if output.get("in_stock"):
        parts.append(" in stock")
    return "".join(parts)


def search_summary(output: dict[str, Any]) -> str:
    products: list[dict[str, Any]] = output["products"]
    what = f' for "{output["query"]}"' if output.get("query") else ""
    if not products:
        sold = output.get("categories") or []
        kinds = f" The catalog has {spoken(sold)}." if sold else ""
        return f"I found no products{what}{_bounds(output)}.{kinds} Try fewer or different words."
    stocked = sum(1 for p in products if p.get("in_stock"))
    many = f"{_price_range(products)}; {stocked} of them in stock."
    sold_out = "" if stocked else " (out of stock)"
    if output.get("by_meaning"):
        mentions = f"No product mentions{what.removeprefix(' for')}{_bounds(output)}"
        head = (
            f"{mentions}; these {len(products)} are the closest by meaning, {many}"
            if len(products) > 1
            else f"{mentions}; this one is the closest by meaning{sold_out}."
        )
    elif len(products) > 1:
        head = f"I found {_plural(len(products), 'product')}{what}, {many}"
    else:
        head = f"I found 1 product{what}{sold_out}."
    return "\n".join([head, *_numbered(products), *_more(products)])


def details_summary(product: dict[str, Any], related: Sequence[dict[str, Any]]) -> str:
    stock = int(product.get("stock_quantity") or 0)
    parts = [f"{product['name']} costs {money(product['price'])}"]
    parts.append(f"{stock} in stock" if stock else "it is out of stock")
    if product.get("rating") is not None:
        reviews = product.get("reviews_count") or 0
        rated = f"rated {product['rating']:g} out of 5"
        parts.append(f"{rated} from {_plural(int(reviews), 'review')}" if reviews else rated)
    text = "; ".join(parts) + "."
    if related:
        text += " You may also like: " + ", ".join(p["name"] for p in related[:3]) + "."
    return text


def derive_search(text: str) -> dict[str, Any]:
    """A query and price bounds from the user's words: "wireless headphones under 100"."""
    values: dict[str, Any] = {}
    if match := _UNDER.search(text):
        values["max_price"] = float(match.group(1))
    if match := _OVER.search(text):
        values["min_price"] = float(match.group(1))
    if re.search(r"\bin stock\b", text, re.I):
        values["in_stock"] = True
    rest = _OVER.sub(" ", _UNDER.sub(" ", text))
    rest = re.sub(r"\bin stock\b", " ", rest, flags=re.I)
    stop = set(STOPWORDS) | _SEARCH_WORDS
    words = [w for w in re.findall(r"[\w][\w'-]*", rest) if w.casefold() not in stop]
    values["query"] = " ".join(words)[:200]
    return values


def derive_quantity(text: str) -> dict[str, Any]:
    """A quantity the user said ("add two", "3 units"); none (the tool's default) otherwise."""
    for pattern in _QUANTITY:
        if match := pattern.search(text):
            raw = match.group(1).casefold()
            count = _NUMBER_WORDS.get(raw) or int(raw)
            if 1 <= count <= 99:
                return {"quantity": count}
    return {}


@tool(
    keywords=(*_ASKING, *_PRICE_WORDS),
    action="search the catalog",
    derive=derive_search,
    finds="product",
)
async def search_products(
    ctx: ToolContext,
    query: Annotated[str, Field(max_length=200, description="What to look for, in a few words.")] = "",
    category: Annotated[
        str | None, Field(max_length=100, description="Only this category, e.g. electronics, home, books.")
    ] = None,
    min_price: Annotated[float | None, Field(ge=0, description="Lowest price.")] = None,
    max_price: Annotated[float | None, Field(ge=0, description="Highest price.")] = None,
    in_stock: Annotated[bool, Field(description="Only products in stock.")] = False,
    limit: Annotated[int, Field(ge=1, le=20, description="How many products to return.")] = 8,
) -> ToolResult:
    """Search the product catalog by keywords and optional filters; returns products with their ids."""
    shop = ctx.service(Shop)
    hits = await shop.search(
        query, category=category, min_price=min_price, max_price=max_price, in_stock=in_stock, limit=limit
    )
    products = [product_json(h.product) for h in hits]
    output = {"products": products, "total": len(products), "query": query, "category": category}
    if hits and all(h.by_meaning for h in hits):
        output["by_meaning"] = True  # no product has the query's words: these are the closest
    if not products:
        output["hint"] = "nothing matched; try fewer or different words, or no filters"
        output["categories"] = await shop.categories()
        output |= {"min_price": min_price, "max_price": max_price, "in_stock": in_stock}
    return ToolResult(
        output,
        {"type": "product_list", "query": query, "products": products},
        _refs(products),
        summary=search_summary(output),
    )


@tool(
    keywords=(
        "details",
        "detail",
        "more",
        "about",
        "tell",
        "specs",
        "specifications",
        "describe",
        "features",
    ),
    action="show that product",
    describes="product",
)
async def show_product_details(
    ctx: ToolContext,
    product_id: ProductId,
    include_recommendations: Annotated[bool, Field(description="Also suggest related products.")] = True,
) -> ToolResult:
    """Show everything about one product (description, features, stock), with related products."""
    shop = ctx.service(Shop)
    product = await _product(shop, product_id)
    details = product_json(product, full=True)
    related = (
        [product_json(p) for p in await shop.recommend(product, limit=4)] if include_recommendations else []
    )
    output = {"product": details, "recommendations": related}
    ui = {"type": "product", "product": details, "recommendations": related}
    return ToolResult(
        output,
        ui,
        _refs([details, *related]),
        summary=details_summary(details, related),
        focus={"product": details["id"]},
    )


@tool(
    keywords=(
        "recommend",
        "recommendation",
        "similar",
        "suggest",
        "alternatives",
        "like",
        "goes",
        "instead",
        "popular",
    ),
    action="find recommendations",
)
async def get_recommendations(
    ctx: ToolContext,
    product_id: Annotated[
        ProductId | None, Field(description="Recommend products related to this product.")
    ] = None,
    category: Annotated[
        str | None, Field(max_length=100, description="Or: recommend popular products of this category.")
    ] = None,
    max_results: Annotated[int, Field(ge=1, le=20, description="How many to recommend.")] = 5,
) -> ToolResult:
    """Recommend products related to a product, or popular products of a category."""
    shop = ctx.service(Shop)
    if product_id:
        product = await _product(shop, product_id)
        found = await shop.recommend(product, limit=max_results)
        context: dict[str, Any] = {"based_on_product": product.name, "based_on_category": product.category}
    elif category:
        known = {c.casefold(): c for c in await shop.categories()}
        if category.casefold() not in known:
            raise ToolError(
                f"{category!r} is not a category; categories: {', '.join(known.values())}",
                code="INVALID_REFERENCE",
            )
        found = await shop.top_rated(known[category.casefold()], limit=max_results)
        context = {"based_on_category": known[category.casefold()]}
    else:
        raise ToolError("give a product_id or a category", code="INVALID_REFERENCE")
    products = [product_json(p) for p in found]
    output = {"recommendations": products, "recommendation_context": context, "total": len(products)}
    basis = context.get("based_on_product") or context["based_on_category"]
    summary = (
        "\n".join(
            [
                f"I recommend {_plural(len(products), 'product')} for {basis}:",
                *_numbered(products),
                *_more(products),
            ]
        )
        if products
        else f"I have no recommendations for {basis}."
    )
    return ToolResult(
        output, {"type": "product_list", "products": products, **context}, _refs(products), summary=summary
    )


@tool(
    keywords=("add", "cart", "buy", "purchase", "order", "take", "get", "basket"),
    action="add that to your cart",
    derive=derive_quantity,
)
async def add_to_cart(
    ctx: ToolContext,
    product_id: ProductId,
    quantity: Annotated[int, Field(ge=1, le=99, description="How many units.")] = 1,
) -> ToolResult:
    """Put a product in the shopping cart (its stock is checked and reserved while the cart is in use)."""
    shop = ctx.service(Shop)
    item, product = await shop.add_to_cart(ctx.thread_id, product_id, quantity)
    cart = await shop.cart(ctx.thread_id)
    output = {
        "cart_item": {
            "product_id": item.product_id,
            "product_name": product.name,
            "quantity": item.quantity,
            "unit_price": round(item.unit_price, 2),
            "total_price": round(item.unit_price * item.quantity, 2),
        },
        "cart_summary": cart["summary"],
    }
    added = output["cart_item"]
    summary = (
        f"Added {product.name} to your cart (quantity {added['quantity']}, "
        f"{money(added['unit_price'])} each). " + _cart_line(cart["summary"])
    )
    return ToolResult(
        output,
        {"type": "cart", "added": output["cart_item"], **cart},
        {"product": {product.id: product.name}},
        summary=summary,
        focus={"product": product.id},
    )


async def in_cart(ctx: ToolContext) -> list[tuple[str, str, float | None]]:
    """The products in the thread's cart: what "remove the shoes" can mean."""
    cart = await ctx.service(Shop).cart(ctx.thread_id)
    return [(i["product_id"], i["product_name"], i["unit_price"]) for i in cart["items"]]


@tool(
    keywords=("remove", "delete", "drop", "take out", "cart", "less", "fewer"),
    action="remove that from your cart",
    derive=derive_quantity,
    within=Within(in_cart, "in your cart"),
)
async def remove_from_cart(
    ctx: ToolContext,
    product_id: ProductId,
    quantity: Annotated[
        int | None, Field(ge=1, description="Units to remove; all of them if omitted.")
    ] = None,
) -> ToolResult:
    """Take a product (or some of its units) out of the shopping cart."""
    shop = ctx.service(Shop)
    product = await shop.get(product_id)
    action, removed = await shop.remove_from_cart(ctx.thread_id, product_id, quantity)
    cart = await shop.cart(ctx.thread_id)
    output = {
        "action": action,
        "product_id": product_id,
        "removed_quantity": removed,
        "cart_summary": cart["summary"],
    }
    name = product.name if product is not None else product_id
    what = name if action == "removed" else f"{removed} of {name}"
    return ToolResult(
        output,
        {"type": "cart", **cart},
        summary=f"Removed {what} from your cart. {_cart_line(cart['summary'])}",
    )


@tool(keywords=("cart", "basket", "view", "show", "what", "total", "much"), action="show your cart")
async def view_cart(ctx: ToolContext) -> ToolResult:
    """Show the shopping cart: its items and totals."""
    cart = await ctx.service(Shop).cart(ctx.thread_id)
    refs = {"product": {i["product_id"]: i["product_name"] for i in cart["items"]}} if cart["items"] else {}
    return ToolResult(cart, {"type": "cart", **cart}, refs, summary=cart_summary(cart))


def cart_summary(cart: dict[str, Any]) -> str:
    items = cart["items"]
    if not items:
        return "Your cart is empty."
    lines = [f"Your cart has {_plural(len(items), 'product')}:"]
    lines += [
        f"{n}. {i['product_name']}, quantity {i['quantity']}: {money(i['total_price'])}"
        for n, i in enumerate(items, 1)
    ]
    summary = cart["summary"]
    if summary.get("estimated_tax"):
        lines.append(
            f"Subtotal {money(summary['subtotal'])}, estimated total {money(summary['estimated_total'])} with tax."
        )
    else:
        lines.append(f"Total {money(summary['subtotal'])}.")
    return "\n".join(lines)


@tool(keywords=("clear", "empty", "cart", "basket", "start", "over", "everything"), action="empty your cart")
async def clear_cart(ctx: ToolContext) -> ToolResult:
    """Empty the shopping cart."""
    shop = ctx.service(Shop)
    released = await shop.clear_cart(ctx.thread_id)
    cart = await shop.cart(ctx.thread_id)
    summary = (
        f"I emptied your cart and put {_plural(released, 'item')} back on the shelf."
        if released
        else "Your cart was already empty."
    )
    return ToolResult({"cleared_units": released, **cart}, {"type": "cart", **cart}, summary=summary)


async def _product(shop: Shop, product_id: str) -> Product:
    product = await shop.get(product_id)
    if product is None:
        raise ToolError(f"product {product_id!r} no longer exists", code="PRODUCT_NOT_FOUND")
    return product


TOOLS: list[Tool] = [
    search_products,
    show_product_details,
    get_recommendations,
    add_to_cart,
    remove_from_cart,
    view_cart,
    clear_cart,
]


async def start(shop: Shop, tools: Tools, *, demo_catalog: bool) -> None:
    """At server start: load the demo catalog into an empty shop; teach the router product words."""
    if demo_catalog and (loaded := await load_demo_catalog(shop.db)):
        log.info("demo_catalog_loaded", products=loaded)
    if isinstance(tools.router, KeywordRouter | HybridRouter):
        # So that a small model's "any wireless headphones?" routes to the search tool.
        async with shop.db.session() as session:
            names = list(await session.scalars(select(Product.name).limit(20_000)))
        text = " ".join([*names, *await shop.categories()])
        tools.router.add_vocabulary(search_products.name, stems(text))
