"""Leases on result rows and a final batch status for batches with failed files.

``results.worker_id`` / ``results.lease_expires_at``: who is working on a pending row and until when
(renewed by a heartbeat); the sweeper requeues rows whose lease expired. ``batches.status`` may now
be ``done_with_failures`` (wider column) and old finished batches get their final status and counts
from their rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('pending', 'running', 'done', 'failed')"
_NEW = "status IN ('pending', 'running', 'done', 'done_with_failures', 'failed')"

# Batches whose every row is final get the status and counts their rows say (the old code left
# distributed batches submitted without --wait at 'running' with zero counts).
_BACKFILL = """
UPDATE batches SET
    n_done = (SELECT count(*) FROM results r WHERE r.batch_id = batches.id AND r.status = 'done'),
    n_failed = (SELECT count(*) FROM results r WHERE r.batch_id = batches.id AND r.status = 'failed'),
    status = CASE WHEN EXISTS (SELECT 1 FROM results r WHERE r.batch_id = batches.id AND r.status = 'failed')
                  THEN 'done_with_failures' ELSE 'done' END,
    finished_at = COALESCE(finished_at, (SELECT max(r.finished_at) FROM results r WHERE r.batch_id = batches.id))
WHERE status IN ('running', 'done')
  AND EXISTS (SELECT 1 FROM results r WHERE r.batch_id = batches.id)
  AND NOT EXISTS (SELECT 1 FROM results r WHERE r.batch_id = batches.id AND r.status = 'pending')
"""


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.drop_constraint(op.f("ck_batches_status"), type_="check")
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))
        batch.create_check_constraint(op.f("ck_batches_status"), _NEW)
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.execute("UPDATE batches SET status = 'done' WHERE status = 'done_with_failures'")
    with op.batch_alter_table("batches") as batch:
        batch.drop_constraint(op.f("ck_batches_status"), type_="check")
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
        batch.create_check_constraint(op.f("ck_batches_status"), _OLD)
    with op.batch_alter_table("results") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("worker_id")
