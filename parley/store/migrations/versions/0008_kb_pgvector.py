"""knowledge: kb_chunks.embedding (pgvector) where the vector extension is available

On PostgreSQL with pgvector installable, creates the extension (if this role may) and adds
``kb_chunks.embedding vector``: no fixed dimension, since it depends on the embedding model.
Each model's HNSW index is made by the application (parley.knowledge.pgvector), which knows
the dimension. Elsewhere (SQLite, PostgreSQL without pgvector) it changes nothing and vectors
stay float32 bytes in ``kb_chunks.vector``, searched in the process.

Revision ID: 0008_kb_pgvector
Revises: 0007_merge
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_kb_pgvector"
down_revision: str | Sequence[str] | None = "0007_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")) is None:
        return
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")) is None:
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError:
            return  # not allowed to create it here: vectors stay in the application
    op.execute("ALTER TABLE kb_chunks ADD COLUMN IF NOT EXISTS embedding vector")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE kb_chunks DROP COLUMN IF EXISTS embedding")
