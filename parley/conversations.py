"""Conversations (OpenAI's ``/v1/conversations``): a thread's messages as Responses items.

A conversation is a thread; adding items stores them as messages (``parley.items``), deleting
an item deletes its message, or only the part of it that item is (one of a turn's tool calls,
or its text when the turn also called tools).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from parley import items as item_rows
from parley.store.db import Database
from parley.store.schema import Message, Thread, now
from parley.threads import get_thread
from parley.users import Principal


async def conversation(db: Database, principal: Principal, conversation_id: str) -> Thread:
    async with db.session() as session:
        return await get_thread(session, principal, conversation_id)


async def messages(db: Database, thread_id: str) -> list[Message]:
    async with db.session() as session:
        stmt = select(Message).where(Message.thread_id == thread_id).order_by(Message.created_at, Message.id)
        return list((await session.scalars(stmt)).all())


async def items(db: Database, thread_id: str) -> list[dict[str, Any]]:
    return [item for message in await messages(db, thread_id) for item in item_rows.to_items(message)]


async def add(db: Database, thread_id: str, raw: list[Any]) -> list[dict[str, Any]]:
    """Store input items at the end of the thread; the items as stored."""
    rows = item_rows.to_messages(raw) if raw else []
    start = now()
    async with db.transaction() as session:
        for index, message in enumerate(rows):
            message.thread_id = thread_id
            message.created_at = start + index * 1e-6
            session.add(message)
    return [item for message in rows for item in item_rows.to_items(message)]


async def remove(db: Database, thread_id: str, item_id: str) -> None:
    """Delete one item (404 when the thread has none with that id)."""
    message, item = item_rows.find(await messages(db, thread_id), item_id)
    call = item_rows.parse_call_item_id(item_id) if item["type"] == "function_call" else None
    async with db.transaction() as session:
        if call is not None and (message.content or len(item_rows.client_calls(message)) > 1):
            data = item_rows.without_call(message, call[1])
            await session.execute(update(Message).where(Message.id == message.id).values(data=data))
        elif item["type"] == "message" and item_rows.client_calls(message):
            await session.execute(update(Message).where(Message.id == message.id).values(content=""))
        else:
            await session.execute(delete(Message).where(Message.id == message.id))
