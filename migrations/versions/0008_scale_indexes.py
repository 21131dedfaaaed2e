"""A partial index over the pending rows, for the sweeper and for reading pending files in pages.

``ix_results_pending`` (batch_id, id) WHERE status = 'pending'. The sweeper (every ``SER_SWEEP_INTERVAL_S`` seconds) releases pending rows of running distributed
batches whose lease expired. Without an index over pending rows SQLite answered it with a scan of
the whole ``results`` table (every batch ever run; about 1 s per million rows while holding the write
lock). ``ix_results_pending`` holds only the rows still pending, so it stays small however many
finished rows the database keeps, and a row leaves it when it is labelled. The same index serves
the keyset pages of ``worker.engine.rows.pending_path_pages`` (``id > last ORDER BY id LIMIT n``: an
index range per page instead of sorting every pending row of the batch on PostgreSQL) and the
``finalise_batch`` check for a pending row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_results_pending",
        "results",
        ["batch_id", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_results_pending", table_name="results")
