"""Loading products: the demo catalog shipped with Parley, and any CSV with a column map.

``parley import-products FILE.csv --map id=item_id --map name=name --map price=price ...``:
each ``--map FIELD=COLUMN`` names the CSV column of a product field; ``FIELD=A+B`` joins
several columns with spaces; ``attributes.KEY=COLUMN`` keeps a column as an attribute.
Rows are upserted by id (a later import updates earlier products); rows missing a
required field are skipped and counted, and a repeated id keeps its first row.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from parley.shop import CartItem, Product
from parley.store.db import Database
from parley.store.schema import now

DEMO_CATALOG = Path(__file__).parent / "data" / "demo_catalog.csv"
FIELDS = (
    "id",
    "name",
    "category",
    "price",
    "description",
    "brand",
    "stock",
    "rating",
    "reviews_count",
    "image_url",
)
REQUIRED = ("id", "name", "category", "price")
DEMO_MAP = {f: [f] for f in FIELDS if f != "image_url"} | {"attributes.features": ["features"]}
_BATCH = 500


class MappingError(ValueError):
    pass


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


def parse_map(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["id=item_id", "description=short_description+designer"]`` -> field -> columns."""
    mapping: dict[str, list[str]] = {}
    for spec in specs:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, columns = part.partition("=")
            key = key.strip()
            if not sep or not columns.strip():
                raise MappingError(f"--map {part!r}: write FIELD=COLUMN")
            if key not in FIELDS and not key.startswith("attributes."):
                raise MappingError(
                    f"--map {part!r}: unknown field {key!r}; fields: {', '.join(FIELDS)}, attributes.KEY"
                )
            mapping[key] = [c.strip() for c in columns.split("+") if c.strip()]
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        raise MappingError(f"--map must name a column for: {', '.join(missing)}")
    return mapping


def _number(text: str) -> float | None:
    cleaned = re.sub(r"[^\d.\-]", "", text.replace(",", ""))
    try:
        return float(cleaned)
    except ValueError:
        return None


def read_rows(
    path: Path, mapping: dict[str, list[str]], *, default_stock: int, report: ImportReport
) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        unknown = sorted({c for cols in mapping.values() for c in cols} - columns)
        if unknown:
            raise MappingError(
                f"{path.name} has no column(s) {', '.join(unknown)}; columns: {', '.join(sorted(columns))}"
            )
        seen: set[str] = set()
        for line, raw in enumerate(reader, start=2):
            values = {
                key: " ".join(" ".join((raw.get(c) or "") for c in cols).split())
                for key, cols in mapping.items()
            }
            if any(not values.get(f) for f in REQUIRED):
                report.skipped += 1
                report.problems.append(
                    f"line {line}: missing {', '.join(f for f in REQUIRED if not values.get(f))}"
                )
                continue
            price = _number(values["price"])
            if price is None or price < 0:
                report.skipped += 1
                report.problems.append(f"line {line}: price {values['price']!r} is not a number")
                continue
            if values["id"] in seen:
                report.duplicates += 1
                continue
            seen.add(values["id"])
            stock = _number(values.get("stock", "")) if values.get("stock") else None
            rating = _number(values.get("rating", "")) if values.get("rating") else None
            reviews = _number(values.get("reviews_count", "")) if values.get("reviews_count") else None
            attributes: dict[str, Any] = {}
            for key, value in values.items():
                if key.startswith("attributes.") and value:
                    name = key.removeprefix("attributes.")
                    attributes[name] = value.split("|") if name == "features" else value
            yield {
                "id": values["id"][:64],
                "name": values["name"][:300],
                "category": values["category"][:100],
                "price": price,
                "description": values.get("description", ""),
                "brand": values.get("brand") or None,
                "stock": max(0, int(stock)) if stock is not None else default_stock,
                "rating": rating,
                "reviews_count": int(reviews) if reviews is not None else 0,
                "image_url": values.get("image_url") or None,
                "attributes": attributes,
            }


async def upsert(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    at = now()
    for start in range(0, len(rows), _BATCH):
        batch = [{**r, "created_at": at, "updated_at": at} for r in rows[start : start + _BATCH]]
        stmt = insert(Product).values(batch)
        updated = {c: stmt.excluded[c] for c in FIELDS if c != "id"} | {
            "attributes": stmt.excluded.attributes,
            "updated_at": stmt.excluded.updated_at,
        }
        async with db.session() as session, session.begin():
            await session.execute(stmt.on_conflict_do_update(index_elements=[Product.id], set_=updated))


async def import_csv(
    db: Database,
    path: Path,
    mapping: dict[str, list[str]],
    *,
    default_stock: int = 10,
    replace: bool = False,
) -> ImportReport:
    """Upsert the products of a CSV file; ``replace`` first empties the catalog and every cart."""
    report = ImportReport()
    rows = list(read_rows(path, mapping, default_stock=default_stock, report=report))
    if replace:
        async with db.transaction() as session:
            await session.execute(delete(CartItem))
            await session.execute(delete(Product))
    await upsert(db, rows)
    report.imported = len(rows)
    return report


async def load_demo_catalog(db: Database) -> int:
    """Load the demo catalog into an empty shop; returns the products loaded (0 if not empty)."""
    async with db.session() as session:
        if await session.scalar(select(func.count()).select_from(Product)):
            return 0
    report = ImportReport()
    rows = list(read_rows(DEMO_CATALOG, DEMO_MAP, default_stock=10, report=report))
    await upsert(db, rows)  # an upsert: two processes starting at once both succeed
    return len(rows)
