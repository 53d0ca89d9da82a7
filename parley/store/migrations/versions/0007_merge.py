"""merge the feature branches (identity, shop, knowledge, memory, experiments) into one head

Each feature was built on 0001 in parallel; this revision joins them so that later
migrations have a single parent. It changes no table.

Revision ID: 0007_merge
Revises: 0002_identity, 0003_shop, 0004_knowledge, 0005_memory, 0006_experiments
"""

from collections.abc import Sequence

revision: str = "0007_merge"
down_revision: str | Sequence[str] | None = (
    "0002_identity",
    "0003_shop",
    "0004_knowledge",
    "0005_memory",
    "0006_experiments",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
