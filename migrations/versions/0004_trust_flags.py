"""Trust flags: out-of-domain score and flags per result and segment, warnings per batch.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FLAG_TABLES = ("results", "segments")


def upgrade() -> None:
    for table in _FLAG_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("ood_score", sa.Float(), nullable=True))
            batch.add_column(sa.Column("out_of_domain", sa.Boolean(), nullable=True))
            batch.add_column(sa.Column("low_confidence", sa.Boolean(), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("warnings")
    for table in reversed(_FLAG_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("low_confidence")
            batch.drop_column("out_of_domain")
            batch.drop_column("ood_score")
