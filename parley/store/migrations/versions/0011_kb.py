"""knowledge at scale: chunk revisions and removals (incremental index catch-up), document
status and progress, ingest jobs

Every write to a knowledge base stamps the chunk rows it adds, moves or retitles with the
base's new revision and records the ids it removes in ``kb_removals``: a process whose index
is at revision r brings it up to date by reading the rows above r, in time proportional to
the change. Rows written before this revision carry 0 (indexes load them whole at start).

Revision ID: 0011_kb
Revises: 0010_run_leases
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_kb"
down_revision: str | Sequence[str] | None = "0010_run_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kb_chunks") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_kb_chunks_kb_revision", ["kb_id", "revision"], unique=False)
    with op.batch_alter_table("kb_documents") as batch:
        batch.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="ready"))
        batch.add_column(sa.Column("progress", sa.Integer(), nullable=False, server_default="100"))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "kb_removals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kb_id", sa.String(length=40), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("chunk_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["kb_id"], ["knowledge_bases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kb_removals_kb_revision", "kb_removals", ["kb_id", "revision"], unique=False)
    op.create_table(
        "kb_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kb_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("results", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["kb_id"], ["knowledge_bases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kb_jobs_kb_id", "kb_jobs", ["kb_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_kb_jobs_kb_id", table_name="kb_jobs")
    op.drop_table("kb_jobs")
    op.drop_index("ix_kb_removals_kb_revision", table_name="kb_removals")
    op.drop_table("kb_removals")
    with op.batch_alter_table("kb_documents") as batch:
        batch.drop_column("error")
        batch.drop_column("progress")
        batch.drop_column("status")
    with op.batch_alter_table("kb_chunks") as batch:
        batch.drop_index("ix_kb_chunks_kb_revision")
        batch.drop_column("revision")
