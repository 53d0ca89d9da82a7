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


class Chunk(Base):
    __tablename__ = "kb_chunks"
    __table_args__ = (Index("ix_kb_chunks_document_position", "document_id", "position"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    vector_model: Mapped[str | None] = mapped_column(String(100), default=None)
