"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = ["Base", "Event", "Message", "Run", "Thread", "User"]
