"""Usage analytics: tokens, cost and latency of finished runs, grouped by user, assistant,
model and (UTC) day. Admins see everyone's; other users see their own.

Tokens, cost and latency come from each completed run's ``usage``; failed and cancelled
runs are counted but carry no usage today. Runs of deleted threads are gone from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select

from parley import stats
from parley.events import TERMINAL_STATUSES
from parley.store.db import Database
from parley.store.schema import Run, User
from parley.users import Principal

Dimension = Literal["user", "assistant", "model", "day"]
DIMENSIONS: tuple[Dimension, ...] = ("user", "assistant", "model", "day")
USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd", "latency_ms", "ttft_ms")


@dataclass
class _Bucket:
    runs: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: float = 0
    output_tokens: float = 0
    costs: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)

    def add(self, row: Sequence[Any]) -> None:
        status, input_tokens, output_tokens, cost, latency, ttft = row
        self.runs += 1
        if status == "completed":
            self.completed += 1
        elif status in ("failed", "interrupted"):
            self.failed += 1
        self.input_tokens += input_tokens or 0
        self.output_tokens += output_tokens or 0
        if cost is not None:
            self.costs.append(cost)
        if latency is not None:
            self.latency.append(latency)
        if ttft is not None:
            self.ttft.append(ttft)

    def json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "completed": self.completed,
            "failed": self.failed,
            "input_tokens": int(self.input_tokens),
            "output_tokens": int(self.output_tokens),
            "cost_usd": math.fsum(self.costs),
            "latency_ms": {"mean": stats.mean(self.latency), "p95": stats.percentile(self.latency, 0.95)},
            "ttft_ms": {"mean": stats.mean(self.ttft), "p95": stats.percentile(self.ttft, 0.95)},
        }


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


async def usage_report(
    db: Database,
    principal: Principal,
    *,
    since: float,
    until: float,
    group_by: Sequence[Dimension],
    user_id: int | None = None,
) -> dict[str, Any]:
    # The figures are read out of the usage JSON by the database: decoding whole documents
    # in Python was most of the time spent here.
    stmt = (
        select(
            Run.created_at,
            Run.user_id,
            User.name,
            Run.assistant,
            Run.model,
            Run.status,
            *(Run.usage[key].as_float() for key in USAGE_KEYS),
        )
        .join(User, User.id == Run.user_id)
        .where(Run.created_at >= since, Run.created_at < until, Run.status.in_(TERMINAL_STATUSES))
    )
    if not principal.is_admin:
        stmt = stmt.where(Run.user_id == principal.user_id)
    elif user_id is not None:
        stmt = stmt.where(Run.user_id == user_id)
    async with db.session() as session:
        rows = (await session.execute(stmt)).all()
    total = _Bucket()
    groups: dict[tuple[Any, ...], _Bucket] = {}
    days: dict[int, str] = {}
    for created_at, uid, name, assistant, model, *figures in rows:
        values: dict[str, Any] = {"user": (uid, name), "assistant": assistant, "model": model or ""}
        if "day" in group_by:
            index = int(created_at // 86400)
            values["day"] = days.get(index) or days.setdefault(index, day_of(created_at))
        key = tuple(values[d] for d in group_by)
        bucket = groups.get(key)
        if bucket is None:
            bucket = groups[key] = _Bucket()
        bucket.add(figures)
        total.add(figures)
    data = []
    for key in sorted(groups):
        entry: dict[str, Any] = {}
        for dimension, value in zip(group_by, key, strict=True):
            entry[dimension] = {"id": value[0], "name": value[1]} if dimension == "user" else value
        entry.update(groups[key].json())
        data.append(entry)
    return {"object": "usage", "group_by": list(group_by), "totals": total.json(), "data": data}
