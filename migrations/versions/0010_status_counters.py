"""The trust counts of a final batch kept with it: ``batches.n_low_confidence``, ``batches.n_out_of_domain``.

``ser-batch status`` counted a batch's rows on every call: four passes over them (counts, trust
counts, last finish time, warnings), about 7 s for a batch of a million rows on SQLite. A final
batch already carries ``n_done``, ``n_failed``, ``finished_at`` and ``warnings``, written by the
finaliser in the transaction of its last row; with these two counters as well (labelled rows flagged
``low_confidence`` / ``out_of_domain``, written by the same finaliser), ``status`` answers a final
batch from its batch row (``worker.storage.db.batch_summary``). Final batches recorded before this
revision get their counters here, from their rows; running batches get them when they are finalised.

A batch still running is counted from its rows in one ``GROUP BY status``: the index
``ix_results_batch_progress`` (batch_id, status, low_confidence, out_of_domain, finished_at) replaces
``ix_results_batch_status`` (batch_id, status), its prefix, so that count reads the index alone (SQLite:
0.9 s -> 0.4 s for a million rows; building it takes about 5 s per million rows at upgrade).

Revision ID: 0010_status_counters
Revises: 0009_arousal_valence
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_status_counters"
down_revision: str | None = "0009_arousal_valence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_results_batch_progress",
        "results",
        ["batch_id", "status", "low_confidence", "out_of_domain", "finished_at"],
    )
    op.drop_index("ix_results_batch_status", table_name="results")
    op.add_column("batches", sa.Column("n_low_confidence", sa.Integer(), nullable=True))
    op.add_column("batches", sa.Column("n_out_of_domain", sa.Integer(), nullable=True))
    # the mean arousal/valence summary of a final batch (worker.engine.assess.dimension_summary), kept by
    # the finaliser; NULL until a batch is (re)finalised: status then computes it from the rows
    op.add_column("batches", sa.Column("dimensions", sa.JSON(), nullable=True))
    batches = sa.table(
        "batches", sa.column("id"), sa.column("status"), sa.column("n_low_confidence"), sa.column("n_out_of_domain")
    )
    results = sa.table(
        "results",
        sa.column("batch_id"),
        sa.column("status"),
        sa.column("low_confidence", sa.Boolean()),
        sa.column("out_of_domain", sa.Boolean()),
    )

    def flagged(flag: sa.ColumnClause) -> sa.ScalarSelect:
        return (
            sa.select(sa.func.count())
            .where(results.c.batch_id == batches.c.id, results.c.status == "done", flag.is_(True))
            .scalar_subquery()
        )

    op.execute(
        batches.update()
        .where(batches.c.status.in_(("done", "done_with_failures", "failed")))
        .values(n_low_confidence=flagged(results.c.low_confidence), n_out_of_domain=flagged(results.c.out_of_domain))
    )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("dimensions")
        batch.drop_column("n_out_of_domain")
        batch.drop_column("n_low_confidence")
    op.create_index("ix_results_batch_status", "results", ["batch_id", "status"])
    op.drop_index("ix_results_batch_progress", table_name="results")
