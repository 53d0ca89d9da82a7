"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.experiments import Experiment, Exposure
from parley.feedback import Feedback
from parley.shop import CartItem, Product
from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = [
    "Base",
    "CartItem",
    "Event",
    "Experiment",
    "Exposure",
    "Feedback",
    "Message",
    "Product",
    "Run",
    "Thread",
    "User",
]
