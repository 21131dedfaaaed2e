"""Speaker-adaptive batches: stored feature vectors and a (batch_id, speaker) index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("features", sa.LargeBinary(), nullable=True))
    op.create_index("ix_results_batch_speaker", "results", ["batch_id", "speaker"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_results_batch_speaker", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("features")
