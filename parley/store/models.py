"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.shop import CartItem, Product
from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = ["Base", "CartItem", "Event", "Message", "Product", "Run", "Thread", "User"]
