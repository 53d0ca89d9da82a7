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


@dataclass
class _Bucket:
    runs: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    costs: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)

    def add(self, status: str, usage: dict[str, Any] | None) -> None:
        self.runs += 1
        self.completed += status == "completed"
        self.failed += status in ("failed", "interrupted")
        if not usage:
            return
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        for target, key in ((self.costs, "cost_usd"), (self.latency, "latency_ms"), (self.ttft, "ttft_ms")):
            value = usage.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                target.append(float(value))

    def json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "completed": self.completed,
            "failed": self.failed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": math.fsum(self.costs),
            "latency_ms": {"mean": stats.mean(self.latency), "p95": stats.percentile(self.latency, 0.95)},
            "ttft_ms": {"mean": stats.mean(self.ttft), "p95": stats.percentile(self.ttft, 0.95)},
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
    stmt = (
        select(Run.created_at, Run.user_id, User.name, Run.assistant, Run.model, Run.status, Run.usage)
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
    for created_at, uid, name, assistant, model, status, usage in rows:
        values = {
            "user": (uid, name),
            "assistant": assistant,
            "model": model or "",
            "day": day_of(created_at),
        }
        key = tuple(values[d] for d in group_by)
        groups.setdefault(key, _Bucket()).add(status, usage)
        total.add(status, usage)
    data = []
    for key in sorted(groups):
        entry: dict[str, Any] = {}
        for dimension, value in zip(group_by, key, strict=True):
            entry[dimension] = {"id": value[0], "name": value[1]} if dimension == "user" else value
        entry.update(groups[key].json())
        data.append(entry)
    return {"object": "usage", "group_by": list(group_by), "totals": total.json(), "data": data}
