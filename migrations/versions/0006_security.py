"""Webhook URLs move out of ``batches.options`` into ``batch_webhooks``, which query-only roles cannot read.

A webhook URL often carries a token in its path or query. ``batches`` is read by every analyst
(``ser_reader`` role, see ``ser-batch db roles``); ``batch_webhooks`` is granted to workers and admins
only. ``batches.options["notify_url"]`` keeps ``scheme://host[:port]/…`` for display.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_batches = sa.table("batches", sa.column("id", sa.Integer), sa.column("options", sa.JSON))
_hooks = sa.table("batch_webhooks", sa.column("batch_id", sa.Integer), sa.column("url", sa.Text))


def upgrade() -> None:
    from worker.urls import safe_url

    op.create_table(
        "batch_webhooks",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_batch_webhooks_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batch_webhooks")),
    )
    conn = op.get_bind()
    for batch_id, options in conn.execute(sa.select(_batches.c.id, _batches.c.options)).all():
        url = (options or {}).get("notify_url")
        if not url:
            continue
        conn.execute(_hooks.insert().values(batch_id=batch_id, url=url))
        conn.execute(
            _batches.update().where(_batches.c.id == batch_id).values(options={**options, "notify_url": safe_url(url)})
        )


def downgrade() -> None:
    conn = op.get_bind()
    for batch_id, url in conn.execute(sa.select(_hooks.c.batch_id, _hooks.c.url)).all():
        options = conn.execute(sa.select(_batches.c.options).where(_batches.c.id == batch_id)).scalar() or {}
        conn.execute(_batches.update().where(_batches.c.id == batch_id).values(options={**options, "notify_url": url}))
    op.drop_table("batch_webhooks")
