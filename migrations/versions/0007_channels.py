"""Per-channel rows for ``submit --channels split``: ``results.channel``/``role``, ``segments.channel``.

The unique key of ``results`` becomes (batch_id, path, channel). A mixed file (every row written
before this revision, every ``--channels mix`` row and every mono file) keeps ``channel`` NULL. NULLs
are distinct in a plain UNIQUE constraint on SQLite and on PostgreSQL before 15 (``NULLS NOT
DISTINCT``), so the key is a unique index on ``(batch_id, path, coalesce(channel, -1))``: two mixed
rows of one file still conflict, upserts name that index as their conflict target on both databases
(``ON CONFLICT (batch_id, path, coalesce(channel, -1))``), and readers see NULL, not a sentinel.
Existing rows are kept as they are (their channel is NULL).

Caveat for later migrations: SQLAlchemy cannot reflect an expression index on SQLite, so a
``batch_alter_table("results")`` (which rebuilds the table on SQLite) loses it; such a migration
must drop the index before and create it again after, as this one does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("channel", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("role", sa.String(length=64), nullable=True))
        batch.drop_constraint("uq_results_batch_path", type_="unique")
    op.create_index(
        "uq_results_batch_path_channel",
        "results",
        ["batch_id", "path", sa.text("coalesce(channel, -1)")],
        unique=True,
    )
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("channel", sa.Integer(), nullable=True))


def downgrade() -> None:
    # per-channel rows cannot be told apart under the old key: keep the mixed rows and channel 0
    # of split files (the lowest channel), drop the other channels' rows and their segments
    op.execute(
        "DELETE FROM results WHERE channel IS NOT NULL AND EXISTS (SELECT 1 FROM results o WHERE "
        "o.batch_id = results.batch_id AND o.path = results.path AND coalesce(o.channel, -1) < results.channel)"
    )
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("channel")
    op.drop_index("uq_results_batch_path_channel", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.create_unique_constraint("uq_results_batch_path", ["batch_id", "path"])
        batch.drop_column("role")
        batch.drop_column("channel")
