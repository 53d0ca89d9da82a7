"""knowledge bases: the revision a large change stages its chunk rows at

A large change writes its chunk rows ahead in short transactions, stamped with the revision it
reserved (``knowledge_bases.staging``); readers skip that revision until the change publishes.
Publishing then moves the base's revision onto the stamp: one row, whatever the change's size,
instead of re-stamping every staged row while the database's write lock is held.

Revision ID: 0012_kb_staging
Revises: 0011_kb
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_kb_staging"
down_revision: str | Sequence[str] | None = "0011_kb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.add_column(sa.Column("staging", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knowledge_bases") as batch:
        batch.drop_column("staging")
