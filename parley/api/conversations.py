"""The OpenAI Conversations API: ``/v1/conversations``. A conversation is a Parley thread.

Its items are the thread's messages as Responses items (``parley.items``); a response with
``conversation=`` adds its input and output to it. A conversation made here belongs to the
default assistant until a response names another model; any thread of the caller's is a
conversation too (``thr_...`` ids). Listing items reads the whole thread, then pages.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from parley import conversations
from parley import items as item_rows
from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.responses import checked_metadata
from parley.store.schema import Thread
from parley.threads import create_thread, update_thread

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

MAX_NEW_ITEMS = 20
DEFAULT_ASSISTANT = "general"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ConversationCreate(_Body):
    items: list[Any] = Field(default_factory=list, max_length=MAX_NEW_ITEMS)
    metadata: dict[str, str] | None = None


class ConversationUpdate(_Body):
    metadata: dict[str, str]


class ItemsCreate(_Body):
    items: list[Any] = Field(min_length=1, max_length=MAX_NEW_ITEMS)


def conversation_json(thread: Thread) -> dict[str, Any]:
    metadata = thread.metadata_ or {}
    return {
        "id": thread.id,
        "object": "conversation",
        "created_at": int(thread.created_at),
        "metadata": {k: v for k, v in metadata.items() if isinstance(v, str)},
    }


def _default_assistant(parley: Any) -> str:
    names = [a.name for a in parley.assistants.all()]
    return DEFAULT_ASSISTANT if DEFAULT_ASSISTANT in names else names[0]


@router.post("")
async def create(body: ConversationCreate, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    metadata = checked_metadata(body.metadata)
    if body.items:
        item_rows.to_messages(body.items)  # a bad item is a 422 before anything is stored
    thread = await create_thread(parley.db, principal, _default_assistant(parley), metadata=metadata)
    await conversations.add(parley.db, thread.id, body.items)
    return conversation_json(thread)


@router.get("/{conversation_id}")
async def read(conversation_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    return conversation_json(await conversations.conversation(parley.db, principal, conversation_id))


@router.post("/{conversation_id}")
async def update_(
    conversation_id: str, body: ConversationUpdate, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    metadata = checked_metadata(body.metadata)
    thread = await update_thread(parley.db, principal, conversation_id, title=None, metadata=metadata)
    return conversation_json(thread)


@router.delete("/{conversation_id}")
async def delete_(conversation_id: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    await parley.runs.delete_thread(principal, conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    parley: ParleyDep,
    principal: PrincipalDep,
    after: str | None = Query(None, max_length=100, description="The last item id of the previous page."),
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
) -> dict[str, Any]:
    thread = await conversations.conversation(parley.db, principal, conversation_id)
    found = await conversations.items(parley.db, thread.id)
    return item_rows.page(found, after=after, limit=limit, order=order)


@router.post("/{conversation_id}/items")
async def create_items(
    conversation_id: str, body: ItemsCreate, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    thread = await conversations.conversation(parley.db, principal, conversation_id)
    added = await conversations.add(parley.db, thread.id, body.items)
    return item_rows.page(added, after=None, limit=len(added) or 1, order="asc")


@router.get("/{conversation_id}/items/{item_id}")
async def read_item(
    conversation_id: str, item_id: str, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    thread = await conversations.conversation(parley.db, principal, conversation_id)
    _, item = item_rows.find(await conversations.messages(parley.db, thread.id), item_id)
    return item


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, parley: ParleyDep, principal: PrincipalDep
) -> dict[str, Any]:
    thread = await conversations.conversation(parley.db, principal, conversation_id)
    await conversations.remove(parley.db, thread.id, item_id)
    return conversation_json(thread)
