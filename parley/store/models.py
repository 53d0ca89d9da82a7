"""Every table, imported in one place so Alembic and tests see the whole schema."""

from parley.budgets import TokenUsage
from parley.compat.faq import AskedQuestion
from parley.experiments import Experiment, Exposure
from parley.feedback import Feedback
from parley.files import File
from parley.keys import ApiKey
from parley.knowledge.schema import Chunk, Document, KnowledgeBase
from parley.memory import MemoryFact, MemorySetting
from parley.shop import CartItem, Product
from parley.store.schema import Base, Event, Message, Run, Thread, User
from parley.summaries import ThreadSummary

__all__ = [
    "ApiKey",
    "AskedQuestion",
    "Base",
    "CartItem",
    "Chunk",
    "Document",
    "Event",
    "Experiment",
    "Exposure",
    "Feedback",
    "File",
    "KnowledgeBase",
    "MemoryFact",
    "MemorySetting",
    "Message",
    "Product",
    "Run",
    "Thread",
    "ThreadSummary",
    "TokenUsage",
    "User",
]
