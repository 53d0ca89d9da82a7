"""runs: leases, durable cancel requests, durable after-run work; one running run per thread

Workers claim runs with a lease (``lease_until``) renewed by heartbeat; any process may ask
for a cancel (``cancel_requested``); a completed run's memory work is pending until done
(``upkeep_pending``). A partial unique index makes "one running run per thread" hold in the
database, across processes. Threads that somehow hold several running runs keep the oldest
running; the others go back to the queue (the reaper resolves them like any expired lease).

Revision ID: 0010_run_leases
Revises: 0009_run_finish_reason
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_run_leases"
down_revision: str | Sequence[str] | None = "0009_run_finish_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("upkeep_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE runs SET status = 'queued' WHERE status = 'running' AND EXISTS ("
        "SELECT 1 FROM runs AS older WHERE older.thread_id = runs.thread_id "
        "AND older.status = 'running' AND older.created_at < runs.created_at)"
    )
    op.create_index(
        "uq_runs_one_running_per_thread",
        "runs",
        ["thread_id"],
        unique=True,
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )
    op.create_index("ix_runs_upkeep", "runs", ["upkeep_pending"])


def downgrade() -> None:
    op.drop_index("ix_runs_upkeep", table_name="runs")
    op.drop_index("uq_runs_one_running_per_thread", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("upkeep_pending")
        batch.drop_column("cancel_requested")
        batch.drop_column("lease_until")
