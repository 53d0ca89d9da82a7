"""Token budgets: how many tokens a user may spend per UTC day.

Every model turn reserves its maximum cost (the tokens of its request plus the output
it is allowed, ``PARLEY_BUDGET_OUTPUT_TOKENS``) before the provider is called, with one
conditional UPDATE that succeeds only while ``used + reserved + cost <= limit``, and
reconciles when the turn ends: the reservation is released and the tokens really spent
are added. Output past the allowance is cut off, so a stream cannot overspend, and
concurrent runs cannot together overspend either. Creating a run checks the budget
first, so a user who is out of tokens gets a 429 instead of a run that fails.

Limits: ``PARLEY_DAILY_TOKEN_BUDGET`` for everyone, and per user in the config file::

    [budgets.users]
    alice = 2000000
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import structlog
from sqlalchemy import Float, ForeignKey, Integer, String, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from parley.assistants import Assistants
from parley.config import Settings
from parley.errors import ApiError
from parley.providers.base import Delta, Finish, ProviderError, ProviderRequest, TextDelta, Usage
from parley.providers.route import Route
from parley.store.db import Database, Direct, FirstRow, first_row
from parley.store.schema import Base, Message, Run, Thread, User, now

log = structlog.get_logger(__name__)


class TokenUsage(Base):
    __tablename__ = "token_usage"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


_USER_NAME = select(User.name).where(User.id == bindparam("user_id"))
_USAGE = select(TokenUsage.used, TokenUsage.reserved).where(
    TokenUsage.user_id == bindparam("user_id"), TokenUsage.day == bindparam("day")
)
_HISTORY_CHARS = select(func.coalesce(func.sum(func.length(Message.content)), 0)).where(
    Message.thread_id == bindparam("thread_id")
)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def seconds_to_reset() -> int:
    moment = datetime.now(UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, int((midnight - moment).total_seconds()) + 1)


def estimate_tokens(chars: int) -> int:
    """The same rule of thumb as ``Provider.count_tokens``: ~4 characters per token."""
    return (chars + 3) // 4


@dataclass(frozen=True, slots=True)
class Standing:
    limit: int | None
    used: int
    reserved: int

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used - self.reserved)


def load_user_budgets(config_file: Path | None) -> dict[str, int]:
    if config_file is None:
        return {}
    section = tomllib.loads(config_file.read_text()).get("budgets", {}).get("users", {})
    if not isinstance(section, dict) or not all(isinstance(v, int) and v > 0 for v in section.values()):
        raise ValueError(f"{config_file}: [budgets.users] maps user names to daily token budgets")
    return dict(section)


class Budgets:
    def __init__(self, db: Database, settings: Settings, assistants: Assistants) -> None:
        self._db = db
        self._assistants = assistants
        self.default = settings.daily_token_budget
        self.output_tokens = settings.budget_output_tokens
        self.per_user = load_user_budgets(settings.config_file)

    @property
    def enabled(self) -> bool:
        return self.default is not None or bool(self.per_user)

    async def limit_of(self, first: FirstRow, user_id: int) -> int | None:
        """Today's limit of ``user_id`` (None: unlimited); ``first`` reads a row (``first_row``)."""
        if self.per_user:
            row = await first(_USER_NAME, {"user_id": user_id})
            if row is not None and row[0] in self.per_user:
                return self.per_user[row[0]]
        return self.default

    async def standing(self, first: FirstRow, user_id: int) -> Standing:
        limit = await self.limit_of(first, user_id)
        row = await first(_USAGE, {"user_id": user_id, "day": today()})
        return Standing(limit, row[0] if row else 0, row[1] if row else 0)

    async def admit(self, tx: Direct, thread: Thread, text: str) -> None:
        """Refuse (429) a run whose first turn could not fit in what is left of today's budget.
        Inside the run's creating transaction (nothing to read when budgets are off)."""
        if not self.enabled:
            return
        standing = await self.standing(tx.first, thread.user_id)
        if standing.remaining is None:
            return
        found = await tx.first(_HISTORY_CHARS, {"thread_id": thread.id})
        history = found[0] if found else 0
        instructions = (
            len(self._assistants.get(thread.assistant).instructions)
            if thread.assistant in self._assistants
            else 0
        )
        needed = estimate_tokens(int(history or 0) + instructions + len(text)) + self.output_tokens
        if needed > standing.remaining:
            raise ApiError(
                429,
                "budget_exceeded",
                f"daily token budget exhausted: {standing.used + standing.reserved} of {standing.limit} "
                f"tokens used today and this message needs up to {needed}; the budget resets at "
                "00:00 UTC",
                headers={"Retry-After": str(seconds_to_reset())},
            )

    async def reserve(self, user_id: int, tokens: int) -> tuple[bool, str]:
        """Reserve ``tokens`` of today's budget; ``(granted, day)``."""
        day = today()
        async with self._db.session() as session, session.begin():
            limit = await self.limit_of(first_row(session), user_id)
            if limit is None:
                return True, day
            values = {"user_id": user_id, "day": day, "used": 0, "reserved": 0, "updated_at": now()}
            insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
            await session.execute(insert(TokenUsage).values(values).on_conflict_do_nothing())
            result = await session.execute(
                update(TokenUsage)
                .where(
                    TokenUsage.user_id == user_id,
                    TokenUsage.day == day,
                    TokenUsage.used + TokenUsage.reserved + tokens <= limit,
                )
                .values(reserved=TokenUsage.reserved + tokens, updated_at=now())
            )
            return result.rowcount == 1, day  # type: ignore[attr-defined]

    async def settle(self, user_id: int, day: str, reserved: int, used: int) -> None:
        """Release a reservation and record what was really spent."""
        async with self._db.session() as session, session.begin():
            result = await session.execute(
                update(TokenUsage)
                .where(TokenUsage.user_id == user_id, TokenUsage.day == day)
                .values(
                    reserved=TokenUsage.reserved - reserved,
                    used=TokenUsage.used + used,
                    updated_at=now(),
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                # No budget, so no reservation row: keep the day's usage all the same.
                insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
                stmt = insert(TokenUsage).values(
                    user_id=user_id, day=day, used=used, reserved=0, updated_at=now()
                )
                await session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["user_id", "day"],
                        set_={"used": TokenUsage.used + used, "updated_at": now()},
                    )
                )

    def guard(self, run: Run, route: Route) -> Route:
        """The route a run's turns go through: each one reserved, capped and reconciled."""
        return BudgetedRoute(route, self, run.user_id) if self.enabled else route


class BudgetedRoute(Route):
    """A route whose turns are metered; everything but ``stream`` is the wrapped route's."""

    def __init__(self, route: Route, budgets: Budgets, user_id: int) -> None:
        self._route = route
        self._budgets = budgets
        self._user_id = user_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._route, name)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        counter = self.primary.count_tokens
        allowed = min(request.max_tokens or self._budgets.output_tokens, self._budgets.output_tokens)
        input_tokens = sum(counter(m.content) for m in request.messages) + counter(request.prefix)
        cost = input_tokens + allowed
        granted, day = await self._budgets.reserve(self._user_id, cost)
        if not granted:
            raise ProviderError(
                f"daily token budget exhausted: this turn needs up to {cost} tokens; "
                "the budget resets at 00:00 UTC",
                code="budget_exceeded",
            )
        produced = 0
        reported: Usage | None = None
        try:
            stream = cast(
                AsyncGenerator[Delta, None], self._route.stream(replace(request, max_tokens=allowed))
            )
            async with aclosing(stream):
                async for delta in stream:
                    if isinstance(delta, TextDelta):
                        tokens = counter(delta.text)
                        if produced + tokens > allowed:
                            yield Finish("length")
                            return
                        produced += tokens
                    elif isinstance(delta, Usage):
                        reported = delta
                    yield delta
        finally:
            spent = (
                reported.input_tokens + reported.output_tokens
                if reported is not None
                else input_tokens + produced
            )
            await asyncio.shield(self._settle(day, cost, spent))

    async def _settle(self, day: str, reserved: int, used: int) -> None:
        try:
            await self._budgets.settle(self._user_id, day, reserved, used)
        except Exception as exc:
            log.error("budget_settle_failed", error=f"{type(exc).__name__}: {exc}", user_id=self._user_id)


def standing_json(standing: Standing) -> dict[str, Any]:
    return {
        "daily_tokens": standing.limit,
        "used": standing.used,
        "reserved": standing.reserved,
        "remaining": standing.remaining,
        "resets_in_seconds": seconds_to_reset(),
    }
