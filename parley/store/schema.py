"""Tables. One schema for SQLite and PostgreSQL; times are epoch seconds (floats).

Domain modules add their own tables to ``Base.metadata`` by importing ``Base``;
``parley.store.models`` imports them all so Alembic and ``create_all`` see them.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: RFC 4648's base32 alphabet to Crockford's (lower-cased): ``new_id`` encodes in C.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id (ULID layout: 48-bit ms time + 80 random bits, 26
    Crockford base32 characters). A large document's ingest makes one per chunk."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    # 130 bits as 26 characters: shifted into 17 bytes, base32 puts them in the first 26.
    encoded = base64.b32encode((value << 6).to_bytes(17, "big"))[:26].translate(_CROCKFORD)
    return f"{prefix}_{encoded.decode()}"


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def row(obj: Base) -> dict[str, Any]:
    """``obj``'s row for a Core ``insert(table)``, its unset columns set to their defaults
    (on ``obj`` too). A Core insert skips the ORM's unit of work, a few hundred
    microseconds per object on the hot path of creating a run."""
    values: dict[str, Any] = {}
    for attr in inspect(type(obj)).column_attrs:
        column = attr.columns[0]
        if attr.key not in obj.__dict__ and column.default is not None:
            default: Any = column.default
            setattr(obj, attr.key, default.arg(None) if default.is_callable else default.arg)
        if attr.key in obj.__dict__:
            values[column.key] = obj.__dict__[attr.key]
    return values


_Model = TypeVar("_Model", bound="Base")


def from_row(model: type[_Model], values: Sequence[Any]) -> _Model:
    """A transient ``model`` from a driver row of its columns, in table order (``Database.read``)."""
    return model(**dict(zip(_keys(model), values, strict=False)))


@cache
def _keys(model: type[Base]) -> tuple[str, ...]:
    mapper = inspect(model)
    return tuple(mapper.get_property_by_column(c).key for c in model.__table__.columns)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Thread(Base):
    __tablename__ = "threads"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    assistant: Mapped[str] = mapped_column(String(100))
    title: Mapped[str | None] = mapped_column(String(300), default=None)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_thread_created", "thread_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    # Tool calls and results, sources, usage: what the context builder and the UI need.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_runs_idempotency"),
        Index("ix_runs_thread_status", "thread_id", "status"),
        Index("ix_runs_status", "status"),
        # One run per thread at a time, across processes: a second claim of the thread fails here.
        Index(
            "uq_runs_one_running_per_thread",
            "thread_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index("ix_runs_upkeep", "upkeep_pending"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assistant: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[str] = mapped_column(Text, default="")
    input_message_id: Mapped[str | None] = mapped_column(String(40), default=None)
    output_message_id: Mapped[str | None] = mapped_column(String(40), default=None)
    output: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    variant: Mapped[str | None] = mapped_column(String(100), default=None)
    multitask: Mapped[str] = mapped_column(String(20), default="reject")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    worker_id: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    #: Until when the worker that claimed the run (``worker_id``) holds it; renewed by heartbeat.
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)
    #: ``cancelled`` or ``interrupted``: asked for by any process, honoured by the run's worker.
    cancel_requested: Mapped[str | None] = mapped_column(String(20), default=None)
    #: The after-run memory work (facts, summary) is still to be done for this completed run.
    upkeep_pending: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    __tablename__ = "run_events"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[str] = mapped_column(Text)  # JSON text, written once and streamed as-is
    created_at: Mapped[float] = mapped_column(Float, default=now)
