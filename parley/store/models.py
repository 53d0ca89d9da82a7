"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.budgets import TokenUsage
from parley.experiments import Experiment, Exposure
from parley.feedback import Feedback
from parley.files import File
from parley.keys import ApiKey
from parley.shop import CartItem, Product
from parley.store.schema import Base, Event, Message, Run, Thread, User

__all__ = [
    "ApiKey",
    "Base",
    "CartItem",
    "Event",
    "Experiment",
    "Exposure",
    "Feedback",
    "File",
    "Message",
    "Product",
    "Run",
    "Thread",
    "TokenUsage",
    "User",
]
