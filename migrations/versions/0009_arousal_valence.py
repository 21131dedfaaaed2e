"""Arousal and valence per result and segment (issue 30).

Two nullable ``Float`` columns, ``arousal`` and ``valence``, on ``results`` and ``segments``: how
activated and how positive a file, channel or segment sounds, each in [0, 1] with 0.5 the neutral
point (``ser_model.dimensions``). Rows labelled before this migration keep NULL: their dimensions
were never computed, and no value is made up for them (``ser-batch rescore`` labels a batch again).
``batch_alter_table`` (``render_as_batch``) so SQLite, which cannot add a column inside every kind of
ALTER, takes the same script as PostgreSQL; adding nullable columns never rebuilds or rewrites a row.
Dropping them (the downgrade) rebuilds ``results`` on SQLite, which loses the expression index
``uq_results_batch_path_channel`` (see 0007's caveat): it is dropped before and created again after.

Revision ID: 0009_arousal_valence
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_arousal_valence"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("results", "segments")
_COLUMNS = ("arousal", "valence")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
    op.drop_index("uq_results_batch_path_channel", table_name="results")
    with op.batch_alter_table("results") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
    op.create_index(
        "uq_results_batch_path_channel",
        "results",
        ["batch_id", "path", sa.text("coalesce(channel, -1)")],
        unique=True,
    )
