"""The shop: products with stock, per-thread carts, ranked search and recommendations.

Search ranks with BM25 (``bm25s``, English stemming) over name, brand, category and
description; the index lives in memory and is rebuilt when the catalog changes
(checked by a cheap count/last-update query). Filters (category, price) apply to the
index; stock comes from the database, since it changes with every cart.

Stock is reserved when a product goes into a cart: one conditional ``UPDATE ... SET
stock = stock - n WHERE stock >= n`` inside the cart transaction, so concurrent buyers of
the last units can never oversell (the database serialises them on the product row).
A cart left untouched for ``cart_hold_seconds`` gives its stock back (``release_idle_carts``,
run every so often by ``keep_releasing_idle_carts``): an abandoned conversation must not keep
the last units from every other buyer for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bm25s
import numpy as np
import structlog
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from parley.knowledge.embeddings import Embedder
from parley.store.db import Database
from parley.store.schema import Base, now
from parley.tools.base import ToolError

log = structlog.get_logger(__name__)

#: A sold-out product's search score, as a share of how well it matches (``Shop.search``).
SOLD_OUT_SCORE = 0.9
#: The cosine similarity (MiniLM) a product needs to be found by meaning when no product has
#: a word of the query ("what would you recommend for a runner?": the catalog says "running"):
#: calibrated with ``python -m bench.catalog --only meaning`` (docs/BENCHMARKS.md).
MEANING_FLOOR = 0.4
#: A product found by the query's words is shown when it matches at least this share as well
#: as the best one: "running shoes" listed a thriller "about a city run by algorithms" after
#: the shoes. Chosen with ``python -m bench.catalog --only floor`` (docs/BENCHMARKS.md).
RELATIVE_FLOOR = 0.4
#: The embedding model, loaded on first use (``Knowledge.embedder``).
EmbedderSource = Callable[[], Awaitable[Embedder | None]]


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="ck_products_stock"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(100), index=True)
    brand: Mapped[str | None] = mapped_column(String(200), default=None)
    price: Mapped[float] = mapped_column(Float)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[float | None] = mapped_column(Float, default=None)
    reviews_count: Mapped[int] = mapped_column(Integer, default=0)
    image_url: Mapped[str | None] = mapped_column(String(1000), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    # Changes when the catalog content changes (not the stock): the search index follows it.
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class CartItem(Base):
    __tablename__ = "cart_items"
    __table_args__ = (CheckConstraint("quantity > 0", name="ck_cart_items_quantity"),)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[float] = mapped_column(Float)
    added_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


def product_json(product: Product, *, full: bool = False) -> dict[str, Any]:
    """A product as the tools, the cards and seed 000's API show it."""
    data: dict[str, Any] = {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price": round(product.price, 2),
        "category": product.category,
        "brand": product.brand,
        "image_url": product.image_url,
        "in_stock": product.stock > 0,
        "stock_quantity": product.stock,
        "rating": product.rating,
        "reviews_count": product.reviews_count,
    }
    if full:
        attributes = product.attributes or {}
        data["features"] = attributes.get("features", [])
        data["specifications"] = {k: v for k, v in attributes.items() if k != "features"}
    return data


@dataclass(slots=True)
class Hit:
    product: Product
    score: float
    #: Found by meaning: no product has the query's words (``Shop.search``).
    by_meaning: bool = False


class _Index:
    """The BM25 index of one catalog version, with arrays for the filters."""

    def __init__(self, rows: Sequence[tuple[str, str, str, str | None, str, float]], stemmer: Any) -> None:
        self.ids = [r[0] for r in rows]
        self.position = {pid: i for i, pid in enumerate(self.ids)}
        self.categories = np.array([r[2].casefold() for r in rows], dtype=object)
        self.prices = np.array([r[5] for r in rows], dtype=float)
        self.stemmer = stemmer
        self.retriever: bm25s.BM25 | None = None
        #: What an embedder reads of each product, when one is asked to (``Shop._similarity``).
        self.texts = [f"{name}. {category}. {description}" for _, name, category, _, description, _ in rows]
        self.vectors: dict[str, np.ndarray] = {}  # by embedder name
        if rows:
            # The name counts twice: a query naming the product should find it first.
            docs = [
                f"{name} {name} {brand or ''} {category} {description}"
                for _, name, category, brand, description, _ in rows
            ]
            tokens = bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False)
            self.retriever = bm25s.BM25()
            self.retriever.index(tokens, show_progress=False)
            self.vocab = set(tokens.vocab)

    def scores(self, query: str) -> np.ndarray:
        if self.retriever is None:
            return np.zeros(0)
        terms = bm25s.tokenize(
            query, stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        known = [t for t in terms[0] if t in self.vocab]
        if not known:
            return np.zeros(len(self.ids))
        return np.asarray(self.retriever.get_scores(known), dtype=float)

    def mask(self, category: str | None, min_price: float | None, max_price: float | None) -> np.ndarray:
        keep = np.ones(len(self.ids), dtype=bool)
        if category:
            keep &= self.categories == category.casefold()
        if min_price is not None:
            keep &= self.prices >= min_price
        if max_price is not None:
            keep &= self.prices <= max_price
        return keep


class Shop:
    """The catalog and the carts of one server."""

    def __init__(
        self,
        db: Database,
        *,
        tax_rate: float = 0.0,
        recheck_seconds: float = 1.0,
        cart_hold_seconds: float | None = None,
        meaning: EmbedderSource | None = None,
    ) -> None:
        self.db = db
        #: Finds products by meaning when none has the query's words (None: words only).
        self.meaning = meaning
        self.tax_rate = tax_rate
        #: How long a cart keeps its stock after its last change (``None``: for ever).
        self.cart_hold_seconds = cart_hold_seconds
        self.recheck_seconds = recheck_seconds
        self._index: _Index | None = None
        self._version: tuple[int, float] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()
        self._stemmer: Any = None

    # -- catalog -----------------------------------------------------------------

    async def index(self) -> _Index:
        """The search index, rebuilt if the catalog changed since it was built (checked each second)."""
        if self._index is not None and time.monotonic() - self._checked < self.recheck_seconds:
            return self._index
        async with self.db.session() as session:
            count, last = (await session.execute(select(func.count(), func.max(Product.updated_at)))).one()
        version = (int(count), float(last or 0.0))
        self._checked = time.monotonic()
        if self._index is not None and version == self._version:
            return self._index
        async with self._lock:
            if self._index is None or version != self._version:
                async with self.db.session() as session:
                    rows = (
                        await session.execute(
                            select(
                                Product.id,
                                Product.name,
                                Product.category,
                                Product.brand,
                                Product.description,
                                Product.price,
                            ).order_by(Product.id)
                        )
                    ).all()
                if self._stemmer is None:
                    import Stemmer

                    self._stemmer = Stemmer.Stemmer("english")
                self._index = await asyncio.to_thread(_Index, [tuple(r) for r in rows], self._stemmer)
                self._version = version
                log.info("shop_index_built", products=len(rows))
        assert self._index is not None
        return self._index

    async def categories(self) -> list[str]:
        async with self.db.session() as session:
            rows = await session.scalars(select(Product.category).distinct().order_by(Product.category))
            return list(rows)

    async def get(self, product_id: str) -> Product | None:
        async with self.db.session() as session:
            return await session.get(Product, product_id)

    async def search(
        self,
        query: str = "",
        *,
        category: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        in_stock: bool = False,
        limit: int = 10,
    ) -> list[Hit]:
        """Products matching ``query`` best first (BM25); with no query, the best rated. When no
        product has a word of the query, those close to it by meaning (``MEANING_FLOOR``), marked
        ``by_meaning``.

        A sold-out product ranks as if it matched ``SOLD_OUT_SCORE`` as well: below the
        products in stock that match about as well ("wireless headphones" has eight within 5 %
        of the best), above those that match much worse (a product asked for by its full name).
        """
        if not query.strip():
            return await self._browse(category, min_price, max_price, in_stock, limit)
        index = await self.index()
        words = index.scores(query)
        if not len(words):
            return []
        allowed = index.mask(category, min_price, max_price)
        scores, by_meaning = words, False
        if not (words > 0).any() and (similarity := await self._similarity(query, index)) is not None:
            # No product has a word of the query ("runner", where the catalog says "running"):
            # the products close to it by meaning, if any is close enough.
            scores, by_meaning = np.where(similarity >= MEANING_FLOOR, similarity, 0.0), True
        candidates = np.flatnonzero((scores > 0) & allowed)
        if not by_meaning and len(candidates):
            best = float(scores[candidates].max())
            candidates = candidates[scores[candidates] >= RELATIVE_FLOOR * best]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        hits: list[Hit] = []
        batch = max(limit * 3, 30)
        for start in range(0, len(order), batch):
            chunk = [index.ids[i] for i in order[start : start + batch]]
            stmt = select(Product).where(Product.id.in_(chunk))
            if in_stock:
                stmt = stmt.where(Product.stock > 0)
            async with self.db.session() as session:
                found = {p.id: p for p in await session.scalars(stmt)}
            for i, pid in zip(order[start : start + batch], chunk, strict=True):
                product = found.get(pid)
                if product is not None:
                    score = float(scores[i]) * (1.0 if product.stock > 0 else SOLD_OUT_SCORE)
                    hits.append(Hit(product, score, by_meaning=by_meaning))
            # Every product not read yet matches at most as well as the last one read: once the
            # limit-th hit beats it, the rest cannot get in, sold out or not.
            hits.sort(key=lambda hit: -hit.score)  # stable: ties keep the index's order
            if len(hits) >= limit and (
                start + batch >= len(order) or hits[limit - 1].score >= float(scores[order[start + batch]])
            ):
                break
        return hits[:limit]

    async def _similarity(self, query: str, index: _Index) -> np.ndarray | None:
        """Each product's cosine similarity to ``query``, when an embedder whose similarity
        measures meaning is at hand (MiniLM, not the hashing fallback); else ``None``."""
        embedder = await self.meaning() if self.meaning is not None else None
        if embedder is None or embedder.familiar_similarity is None or not index.ids:
            return None
        vectors = index.vectors.get(embedder.name)
        if vectors is None:
            # Once per catalog version and model: 215 products take about a second of MiniLM.
            vectors = np.asarray(await asyncio.to_thread(embedder.embed, index.texts), dtype=np.float32)
            index.vectors[embedder.name] = vectors
        asked = np.asarray(await asyncio.to_thread(embedder.embed_query, query), dtype=np.float32)
        return np.asarray(vectors @ asked, dtype=float)

    async def _browse(
        self,
        category: str | None,
        min_price: float | None,
        max_price: float | None,
        in_stock: bool,
        limit: int,
    ) -> list[Hit]:
        stmt = select(Product)
        if category:
            stmt = stmt.where(func.lower(Product.category) == category.casefold())
        if min_price is not None:
            stmt = stmt.where(Product.price >= min_price)
        if max_price is not None:
            stmt = stmt.where(Product.price <= max_price)
        if in_stock:
            stmt = stmt.where(Product.stock > 0)
        stmt = stmt.order_by(Product.rating.desc().nulls_last(), Product.reviews_count.desc(), Product.id)
        async with self.db.session() as session:
            return [Hit(p, 0.0) for p in await session.scalars(stmt.limit(limit))]

    async def recommend(self, product: Product, *, limit: int = 5) -> list[Product]:
        """Products related to ``product``: similar by text within its category, in stock first."""
        index = await self.index()
        scores = index.scores(f"{product.name} {product.brand or ''} {product.description}")
        same = index.mask(product.category, None, None)
        scores = np.where(same, scores + 1.0, scores)  # same category first, then by similarity
        if product.id in index.position:
            scores[index.position[product.id]] = 0.0
        base = product.name.split(",")[0]
        order = [index.ids[i] for i in np.argsort(-scores, kind="stable")[: limit * 6] if scores[i] > 0]
        async with self.db.session() as session:
            found = {p.id: p for p in await session.scalars(select(Product).where(Product.id.in_(order)))}
        ranked = [found[pid] for pid in order if pid in found and found[pid].name.split(",")[0] != base]
        ranked.sort(key=lambda p: p.stock <= 0)  # stable: in stock first, similarity order kept
        return ranked[:limit]

    async def top_rated(self, category: str, *, limit: int = 5) -> list[Product]:
        return [hit.product for hit in await self._browse(category, None, None, True, limit)]

    # -- carts -------------------------------------------------------------------

    async def add_to_cart(
        self, thread_id: str, product_id: str, quantity: int = 1
    ) -> tuple[CartItem, Product]:
        """Reserve ``quantity`` units and put them in the thread's cart, in one transaction."""
        if quantity < 1:
            raise ToolError("quantity must be at least 1", code="INVALID_QUANTITY")
        async with self.db.transaction() as session:
            reserved = await session.execute(
                update(Product)
                .where(Product.id == product_id, Product.stock >= quantity)
                .values(stock=Product.stock - quantity)
                .returning(Product.price)
            )
            price = reserved.scalar_one_or_none()
            if price is None:
                product = await session.get(Product, product_id)
                if product is None:
                    raise ToolError(f"product {product_id!r} was not found", code="PRODUCT_NOT_FOUND")
                if product.stock <= 0:
                    raise ToolError(f"{product.name} is out of stock", code="OUT_OF_STOCK")
                raise ToolError(
                    f"only {product.stock} units of {product.name} are available",
                    code="INSUFFICIENT_STOCK",
                    details={"requested": quantity, "available": product.stock},
                )
            insert = (sqlite.insert if self.db.is_sqlite else postgresql.insert)(CartItem)
            at = now()
            await session.execute(
                insert.values(
                    thread_id=thread_id,
                    product_id=product_id,
                    quantity=quantity,
                    unit_price=price,
                    added_at=at,
                    updated_at=at,
                ).on_conflict_do_update(
                    index_elements=[CartItem.thread_id, CartItem.product_id],
                    set_={"quantity": CartItem.quantity + quantity, "unit_price": price, "updated_at": at},
                )
            )
            item = await session.get(CartItem, (thread_id, product_id), populate_existing=True)
            product = await session.get(Product, product_id, populate_existing=True)
            assert item is not None
            assert product is not None
            return item, product

    async def remove_from_cart(
        self, thread_id: str, product_id: str, quantity: int | None = None
    ) -> tuple[str, int]:
        """Take units out of the cart (all of them without ``quantity``) and release their stock."""
        async with self.db.transaction() as session:
            item = await session.scalar(
                select(CartItem)
                .where(CartItem.thread_id == thread_id, CartItem.product_id == product_id)
                .with_for_update()
            )
            if item is None:
                raise ToolError(f"product {product_id!r} is not in the cart", code="ITEM_NOT_IN_CART")
            if quantity is None or quantity >= item.quantity:
                removed, action = item.quantity, "removed"
                await session.delete(item)
            else:
                removed, action = quantity, "reduced"
                item.quantity -= quantity
            await session.execute(
                update(Product).where(Product.id == product_id).values(stock=Product.stock + removed)
            )
            # A change to the cart: what stays in it is held again from now (its hold's clock).
            await session.execute(
                update(CartItem).where(CartItem.thread_id == thread_id).values(updated_at=now())
            )
        return action, removed

    async def clear_cart(self, thread_id: str) -> int:
        """Empty the cart and release every reserved unit; returns the units released."""
        return await self._clear(thread_id)

    async def release_idle_carts(self) -> int:
        """Empty every cart untouched for ``cart_hold_seconds``, giving its stock back; returns
        the units released. A cart changed meanwhile (its rows are locked, then looked at
        again) keeps everything."""
        if self.cart_hold_seconds is None:
            return 0
        cutoff = now() - self.cart_hold_seconds
        async with self.db.session() as session:
            idle = (
                await session.scalars(
                    select(CartItem.thread_id)
                    .group_by(CartItem.thread_id)
                    .having(func.max(CartItem.updated_at) < cutoff)
                )
            ).all()
        released = 0
        for thread_id in idle:
            released += await self._clear(thread_id, idle_before=cutoff)
        return released

    async def keep_releasing_idle_carts(self, every: float | None = None) -> None:
        """``release_idle_carts`` every ``every`` seconds (a quarter of the hold, at most a
        minute), until cancelled."""
        if self.cart_hold_seconds is None:
            return
        every = every or min(60.0, self.cart_hold_seconds / 4)
        while True:
            await asyncio.sleep(every)
            try:
                released = await self.release_idle_carts()
            except Exception:
                log.exception("idle_carts_release_failed")
                continue
            if released:
                log.info("idle_carts_released", units=released, hold_seconds=self.cart_hold_seconds)

    async def _clear(self, thread_id: str, *, idle_before: float | None = None) -> int:
        async with self.db.transaction() as session:
            items = (
                await session.scalars(
                    select(CartItem).where(CartItem.thread_id == thread_id).with_for_update()
                )
            ).all()
            if idle_before is not None and any(item.updated_at >= idle_before for item in items):
                return 0  # changed since it was found idle
            for item in items:
                await session.execute(
                    update(Product)
                    .where(Product.id == item.product_id)
                    .values(stock=Product.stock + item.quantity)
                )
            # Only the rows locked above: one another transaction put in meanwhile (PostgreSQL
            # locks rows, not the cart) keeps its units and their reservation.
            await session.execute(
                delete(CartItem).where(
                    CartItem.thread_id == thread_id,
                    CartItem.product_id.in_([item.product_id for item in items]),
                )
            )
        return sum(item.quantity for item in items)

    async def cart(self, thread_id: str) -> dict[str, Any]:
        """The cart of a thread: items (with product names) and a summary."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(CartItem, Product)
                    .join(Product, Product.id == CartItem.product_id)
                    .where(CartItem.thread_id == thread_id)
                    .order_by(CartItem.added_at, CartItem.product_id)
                )
            ).all()
        items = [
            {
                "product_id": item.product_id,
                "product_name": product.name,
                "product_image": product.image_url,
                "quantity": item.quantity,
                "unit_price": round(item.unit_price, 2),
                "total_price": round(item.unit_price * item.quantity, 2),
                "added_at": item.added_at,
            }
            for item, product in rows
        ]
        summary = self.summary(items)
        if items and self.cart_hold_seconds is not None:
            # When its stock goes back unless the cart changes again (epoch seconds).
            summary["reserved_until"] = max(item.updated_at for item, _ in rows) + self.cart_hold_seconds
        return {"items": items, "summary": summary}

    def summary(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        subtotal = round(sum(i["total_price"] for i in items), 2)
        tax = round(subtotal * self.tax_rate, 2)
        return {
            "total_items": sum(i["quantity"] for i in items),
            "total_products": len(items),
            "subtotal": subtotal,
            "estimated_tax": tax,
            "estimated_total": round(subtotal + tax, 2),
        }
