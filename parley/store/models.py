"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.budgets import TokenUsage
from parley.files import File
from parley.keys import ApiKey
from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = ["ApiKey", "Base", "Event", "File", "Message", "Run", "Thread", "TokenUsage", "User"]
