"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.memory import MemoryFact, MemorySetting
from parley.store.schema import Base, Event, Message, Run, Thread, User
from parley.summaries import ThreadSummary

__all__ = [
    "Base",
    "Event",
    "MemoryFact",
    "MemorySetting",
    "Message",
    "Run",
    "Thread",
    "ThreadSummary",
    "User",
]
