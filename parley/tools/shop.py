"""The shop's tools: search, details, recommendations and the cart (seed 000's four, and more).

Every product id argument is a ``Ref("product")``: the model may only name products
that an earlier tool result of the conversation showed.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from pydantic import Field
from sqlalchemy import select

from parley.catalog import load_demo_catalog
from parley.shop import Product, Shop, product_json
from parley.tools.base import Ref, Tool, ToolContext, ToolError, ToolResult, Tools, tool
from parley.tools.choice import KeywordRouter, stems

log = structlog.get_logger(__name__)

ProductId = Annotated[
    str,
    Ref("product"),
    Field(min_length=1, max_length=64, description="The id of a product shown by an earlier result."),
]


def _refs(products: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {"product": {p["id"]: p["name"] for p in products}} if products else {}


@tool(
    keywords=("find", "search", "show", "looking", "look", "need", "want", "browse", "under", "cheap", "any")
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
    if not products:
        output["hint"] = "nothing matched; try fewer or different words, or no filters"
    return ToolResult(output, {"type": "product_list", "query": query, "products": products}, _refs(products))


@tool(
    keywords=("details", "detail", "more", "about", "tell", "specs", "specifications", "describe", "features")
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
    return ToolResult(output, ui, _refs([details, *related]))


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
    )
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
    return ToolResult(output, {"type": "product_list", "products": products, **context}, _refs(products))


@tool(keywords=("add", "cart", "buy", "purchase", "order", "take", "get", "basket"))
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
    return ToolResult(
        output,
        {"type": "cart", "added": output["cart_item"], **cart},
        {"product": {product.id: product.name}},
    )


@tool(keywords=("remove", "delete", "drop", "take out", "cart", "less", "fewer"))
async def remove_from_cart(
    ctx: ToolContext,
    product_id: ProductId,
    quantity: Annotated[
        int | None, Field(ge=1, description="Units to remove; all of them if omitted.")
    ] = None,
) -> ToolResult:
    """Take a product (or some of its units) out of the shopping cart."""
    shop = ctx.service(Shop)
    action, removed = await shop.remove_from_cart(ctx.thread_id, product_id, quantity)
    cart = await shop.cart(ctx.thread_id)
    output = {
        "action": action,
        "product_id": product_id,
        "removed_quantity": removed,
        "cart_summary": cart["summary"],
    }
    return ToolResult(output, {"type": "cart", **cart})


@tool(keywords=("cart", "basket", "view", "show", "what", "total", "much"))
async def view_cart(ctx: ToolContext) -> ToolResult:
    """Show the shopping cart: its items and totals."""
    cart = await ctx.service(Shop).cart(ctx.thread_id)
    refs = {"product": {i["product_id"]: i["product_name"] for i in cart["items"]}} if cart["items"] else {}
    return ToolResult(cart, {"type": "cart", **cart}, refs)


@tool(keywords=("clear", "empty", "cart", "basket", "start", "over", "everything"))
async def clear_cart(ctx: ToolContext) -> ToolResult:
    """Empty the shopping cart."""
    shop = ctx.service(Shop)
    released = await shop.clear_cart(ctx.thread_id)
    cart = await shop.cart(ctx.thread_id)
    return ToolResult({"cleared_units": released, **cart}, {"type": "cart", **cart})


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
    if isinstance(tools.router, KeywordRouter):
        # So that a small model's "any wireless headphones?" routes to the search tool.
        async with shop.db.session() as session:
            names = list(await session.scalars(select(Product.name).limit(20_000)))
        text = " ".join([*names, *await shop.categories()])
        tools.router.add_vocabulary(search_products.name, stems(text))
