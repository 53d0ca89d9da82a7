"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.compat.faq import AskedQuestion
from parley.knowledge.schema import Chunk, Document, KnowledgeBase
from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = [
    "AskedQuestion",
    "Base",
    "Chunk",
    "Document",
    "Event",
    "KnowledgeBase",
    "Message",
    "Run",
    "Thread",
    "User",
]
