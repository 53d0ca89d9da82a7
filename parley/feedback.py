"""Feedback: a user's thumbs up or down (and an optional comment) on an answer they received.

One rating per message: rating again replaces the previous one. Only the owner of the
thread may rate its answers; for anyone else the message does not exist (404).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import Float, ForeignKey, Integer, String, Text, case, func, select
from sqlalchemy.orm import Mapped, mapped_column

from parley.errors import ApiError, not_found
from parley.experiments import Exposure
from parley.store.db import Database
from parley.store.schema import Base, Message, Run, Thread, now
from parley.users import Principal

log = structlog.get_logger(__name__)


class Feedback(Base):
    __tablename__ = "feedback"
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


async def rate(
    db: Database, principal: Principal, message_id: str, rating: int, comment: str | None = None
) -> tuple[Feedback, bool]:
    """Record the caller's rating of one of their answers; returns ``(feedback, created)``."""
    if rating not in (1, -1):
        raise ApiError(422, "invalid_rating", "rating must be 1 (thumbs up) or -1 (thumbs down)")
    async with db.transaction() as session:
        message = await session.scalar(
            select(Message)
            .join(Thread, Thread.id == Message.thread_id)
            .where(Message.id == message_id, Thread.user_id == principal.user_id)
            .with_for_update(of=Message)
        )
        if message is None:
            raise not_found("message", message_id)
        if message.role != "assistant":
            raise ApiError(422, "not_rateable", "only the assistant's answers can be rated")
        feedback = await session.get(Feedback, message_id)
        created = feedback is None
        if feedback is None:
            feedback = Feedback(message_id=message_id, user_id=principal.user_id, run_id=message.run_id)
            feedback.created_at = now()
            session.add(feedback)
        feedback.rating = rating
        feedback.comment = comment
        feedback.updated_at = now()
    log.info("feedback", message_id=message_id, rating=rating, replaced=not created)
    return feedback, created


async def ratings(db: Database, message_ids: Sequence[str]) -> dict[str, int]:
    """The rating of each of these messages that has one (the page shows it after a reload)."""
    if not message_ids:
        return {}
    async with db.session() as session:
        rows = await session.execute(
            select(Feedback.message_id, Feedback.rating).where(Feedback.message_id.in_(message_ids))
        )
        return {str(message_id): int(rating) for message_id, rating in rows.tuples()}


async def stats_by_variant(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """Ratings per experiment variant, of the caller's answers (an admin's: everyone's)."""
    up = func.sum(case((Feedback.rating == 1, 1), else_=0))
    down = func.sum(case((Feedback.rating == -1, 1), else_=0))
    stmt = (
        select(Exposure.experiment_key, Run.variant, func.count(), up, down)
        .select_from(Feedback)
        .join(Run, Run.id == Feedback.run_id)
        .join(Exposure, Exposure.run_id == Run.id)
        .group_by(Exposure.experiment_key, Run.variant)
        .order_by(Exposure.experiment_key, Run.variant)
    )
    if not principal.is_admin:
        stmt = stmt.where(Feedback.user_id == principal.user_id)
    async with db.session() as session:
        rows = (await session.execute(stmt)).all()
    return [
        {"experiment": key, "variant": variant, "rated": int(total), "up": int(u or 0), "down": int(d or 0)}
        for key, variant, total, u, d in rows
    ]
