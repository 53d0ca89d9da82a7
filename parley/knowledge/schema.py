"""Tables: knowledge bases (owned by a user), their documents, and the documents' chunks.

Vectors: on PostgreSQL with pgvector, in ``kb_chunks.embedding`` (a ``vector`` column that
migration 0008 adds, outside this mapping since SQLite has no such type; see
``parley.knowledge.pgvector``), ranked by the database. Elsewhere, float32 bytes in
``vector``, searched in the process with numpy (12k chunks take about a millisecond).
``vector_model`` names the model in both cases: vectors of another model are recomputed.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.store.schema import Base, now


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_knowledge_bases_user_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    #: Bumped by every change; a process whose index holds an older revision reloads it.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    #: The revision a large change is writing its chunk rows at, ahead of publishing them
    #: (``Knowledge._stage``): readers skip it, and other writers' revisions step over it.
    staging: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class Document(Base):
    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("kb_id", "source", name="uq_kb_documents_source"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    #: Where it came from (a relative path or an upload's name): its identity in the knowledge base.
    source: Mapped[str] = mapped_column(String(500))
    title: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    #: ``ready``; ``processing`` while a job ingests it (``progress`` in percent); ``failed``.
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    progress: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    error: Mapped[str | None] = mapped_column(Text, default=None)


class Chunk(Base):
    __tablename__ = "kb_chunks"
    __table_args__ = (
        Index("ix_kb_chunks_document_position", "document_id", "position"),
        Index("ix_kb_chunks_kb_revision", "kb_id", "revision"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    vector_model: Mapped[str | None] = mapped_column(String(100), default=None)
    #: The knowledge base's revision that last wrote the row (added, moved or retitled it): an index
    #: at revision r catches up by loading the rows above r and the removals above r.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Removal(Base):
    """A chunk removed from a knowledge base at a revision (what an index at an older one drops)."""

    __tablename__ = "kb_removals"
    __table_args__ = (Index("ix_kb_removals_kb_revision", "kb_id", "revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    chunk_id: Mapped[str] = mapped_column(String(40))


class Job(Base):
    """An ingest that runs after its request has been answered: one large document or a batch."""

    __tablename__ = "kb_jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: ``running``, ``completed`` or ``failed`` (the job itself: a file it skipped is in ``results``)
    status: Mapped[str] = mapped_column(String(20), default="running")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    #: JSON: one ``{"source", "status", "document", "chunks", "embedded", "error"}`` per file
    results: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
