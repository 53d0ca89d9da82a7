"""runs.finish_reason: why a completed run's reply ended ("stop", "length", "tool_calls")

A reply cut by the length limit says so on ``GET /v1/runs/{id}`` as it does on
``run.completed`` and in ``/v1/chat/completions``. Runs completed before this revision
have none.

Revision ID: 0009_run_finish_reason
Revises: 0008_kb_pgvector
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_run_finish_reason"
down_revision: str | Sequence[str] | None = "0008_kb_pgvector"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("finish_reason", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("finish_reason")
