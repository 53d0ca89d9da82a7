"""What ``parley ask`` and ``parley chat`` show besides the reply's text, as the web page does:
tool results as short tables (products with price and stock, the cart), the sources under a
grounded answer, and a spinner until the first token."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

#: Rows of a product list shown; the web shows them all as cards, a terminal the first few.
MAX_ROWS = 8
_NAME_WIDTH = 44


def _cut(text: object, width: int) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= width else value[: width - 1] + "…"


def _money(value: object) -> str:
    return f"${float(str(value)):,.2f}" if value is not None else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _stock(product: dict[str, Any]) -> str:
    count = product.get("stock_quantity")
    if not product.get("in_stock", bool(count)):
        return "out of stock"
    return f"{count} in stock" if count is not None else "in stock"


def products_table(products: Sequence[dict[str, Any]]) -> list[str]:
    rows = [
        [_cut(p.get("name"), _NAME_WIDTH), _money(p.get("price")), _stock(p), str(p.get("id", ""))]
        for p in products[:MAX_ROWS]
    ]
    lines = _table(["PRODUCT", "PRICE", "STOCK", "ID"], rows, right={1})
    if len(products) > MAX_ROWS:
        lines.append(f"… and {len(products) - MAX_ROWS} more")
    return lines


def cart_table(cart: dict[str, Any]) -> list[str]:
    """The cart's items and totals; nothing for an empty cart (the reply says it is empty)."""
    items = cart.get("items") or []
    if not items:
        return []
    rows = [
        [
            str(i.get("quantity", "")),
            _cut(i.get("product_name"), _NAME_WIDTH),
            _money(i.get("unit_price")),
            _money(i.get("total_price")),
        ]
        for i in items
    ]
    lines = _table(["QTY", "IN YOUR CART", "EACH", "TOTAL"], rows, right={0, 2, 3})
    summary = cart.get("summary") or {}
    count = int(summary.get("total_items", 0))
    lines.append(
        f"{count} item{'' if count == 1 else 's'} · subtotal {_money(summary.get('subtotal'))} · "
        f"tax {_money(summary.get('estimated_tax'))} · total {_money(summary.get('estimated_total'))}"
    )
    return lines


def tool_result(ui: dict[str, Any] | None) -> list[str]:
    """The lines a ``tool.result``'s card shows in a terminal (none for a card it does not know)."""
    if not ui:
        return []
    kind = ui.get("type")
    if kind == "product_list":
        products = ui.get("products") or []
        return products_table(products) if products else ["No products found."]
    if kind == "product" and isinstance(ui.get("product"), dict):
        return products_table([ui["product"]])
    if kind == "cart":
        return cart_table(ui)
    return []


def sources(items: Sequence[dict[str, Any]]) -> list[str]:
    """``Sources:`` and one ``[n] title: snippet`` line per source, numbered as the answer cites them."""
    if not items:
        return []
    lines = ["Sources:"]
    for n, source in enumerate(items, 1):
        title = _cut(source.get("title") or source.get("document"), 60)
        snippet = _cut(source.get("snippet"), 80)
        lines.append(f"  [{n}] {title}" + (f": {snippet}" if snippet and snippet != title else ""))
    return lines


class Spinner:
    """A spinner on a terminal until the first token (``stop``); silent when not a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, label: str = "thinking", stream: TextIO | None = None, every: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Spinner:
        if self._thread is None and self.stream.isatty():
            self._thread = threading.Thread(target=self._spin, name="parley-spinner", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stops and clears the spinner's line; idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            self.stream.write(f"\r{frame} {self.label}…")
            self.stream.flush()
            if self._stop.wait(self.every):
                return
