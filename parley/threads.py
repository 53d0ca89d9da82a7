"""Threads and their messages, always seen through their owner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.errors import not_found
from parley.store.db import Database
from parley.store.schema import Event, Message, Run, Thread, new_id, now
from parley.users import Principal

T = TypeVar("T", bound=tuple[Any, ...])


def visible(stmt: Select[T], principal: Principal, owner_column: Any) -> Select[T]:
    """Restrict a query to what ``principal`` may see: its own rows (admins: all)."""
    return stmt if principal.is_admin else stmt.where(owner_column == principal.user_id)


async def get_thread(
    session: AsyncSession, principal: Principal, thread_id: str, *, lock: bool = False
) -> Thread:
    stmt = visible(select(Thread).where(Thread.id == thread_id), principal, Thread.user_id)
    if lock:
        stmt = stmt.with_for_update()
    thread = await session.scalar(stmt)
    if thread is None:
        raise not_found("thread", thread_id)
    return thread


def new_thread(
    user_id: int, assistant: str, *, metadata: dict[str, Any] | None = None, title: str | None = None
) -> Thread:
    """A thread not stored yet: ``create_thread`` stores it alone, a new run with its first
    messages (``runs.lifecycle.NewRun``) in the run's own transaction."""
    return Thread(
        id=new_id("thr"), user_id=user_id, assistant=assistant, title=title, metadata_=metadata or {}
    )


async def create_thread(
    db: Database,
    principal: Principal,
    assistant: str,
    *,
    metadata: dict[str, Any] | None = None,
    title: str | None = None,
    user_id: int | None = None,
) -> Thread:
    thread = new_thread(
        principal.user_id if user_id is None else user_id, assistant, metadata=metadata, title=title
    )
    async with db.session() as session, session.begin():
        session.add(thread)
    return thread


async def list_threads(
    db: Database, principal: Principal, *, limit: int, before: str | None = None
) -> tuple[Sequence[Thread], bool]:
    """The caller's own threads, newest first; ``before`` is the last id of the previous page.

    When that thread has been deleted since (or was never the caller's), the page still goes
    on from where it was: thread ids are time-ordered, so the next page is the ids below it.
    """
    stmt = select(Thread).where(Thread.user_id == principal.user_id)
    async with db.session() as session:
        if before is not None:
            anchor = await session.scalar(
                visible(select(Thread).where(Thread.id == before), principal, Thread.user_id)
            )
            if anchor is None:
                stmt = stmt.where(Thread.id < before)
            else:
                stmt = stmt.where(
                    (Thread.created_at < anchor.created_at)
                    | ((Thread.created_at == anchor.created_at) & (Thread.id < anchor.id))
                )
        rows = (
            await session.scalars(stmt.order_by(Thread.created_at.desc(), Thread.id.desc()).limit(limit + 1))
        ).all()
    return rows[:limit], len(rows) > limit


async def update_thread(
    db: Database, principal: Principal, thread_id: str, *, title: str | None, metadata: dict[str, Any] | None
) -> Thread:
    async with db.transaction() as session:
        thread = await get_thread(session, principal, thread_id, lock=True)
        if title is not None:
            thread.title = title
        if metadata is not None:
            thread.metadata_ = metadata
        thread.updated_at = now()
    return thread


async def delete_thread_rows(db: Database, thread_id: str) -> None:
    """Delete a thread and everything in it (the caller has already checked ownership)."""
    async with db.transaction() as session:
        run_ids = select(Run.id).where(Run.thread_id == thread_id)
        await session.execute(delete(Event).where(Event.run_id.in_(run_ids)))
        await session.execute(delete(Run).where(Run.thread_id == thread_id))
        await session.execute(delete(Message).where(Message.thread_id == thread_id))
        await session.execute(delete(Thread).where(Thread.id == thread_id))


async def list_messages(
    db: Database, principal: Principal, thread_id: str, *, limit: int, after: str | None = None
) -> tuple[Sequence[Message], bool]:
    """Messages oldest first; ``after`` is the last id of the previous page."""
    async with db.session() as session:
        await get_thread(session, principal, thread_id)
        stmt = select(Message).where(Message.thread_id == thread_id)
        if after is not None:
            anchor = await session.scalar(
                select(Message).where(Message.id == after, Message.thread_id == thread_id)
            )
            if anchor is None:
                raise not_found("message", after)
            stmt = stmt.where(
                (Message.created_at > anchor.created_at)
                | ((Message.created_at == anchor.created_at) & (Message.id > anchor.id))
            )
        rows = (await session.scalars(stmt.order_by(Message.created_at, Message.id).limit(limit + 1))).all()
    return rows[:limit], len(rows) > limit


async def history(session: AsyncSession, thread_id: str) -> Sequence[Message]:
    """Every message of a thread in order, for the context builder."""
    stmt = select(Message).where(Message.thread_id == thread_id).order_by(Message.created_at, Message.id)
    return (await session.scalars(stmt)).all()
