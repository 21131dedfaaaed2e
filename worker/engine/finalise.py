"""Finalising a batch: its status, counts and warnings set in the transaction that writes its last row.

:func:`finalise_batch` is called inside every transaction that writes rows of a batch
(:func:`worker.engine.rows.store_rows`, :func:`worker.engine.rows.classify_ready_speakers`), so the
batch record and its last row are committed together and ``batches`` never shows ``running`` for a
finished batch, in either mode. :func:`finalise_if_complete` is the same in a transaction of its
own: the safety net of the sweeper and of the end of an embedded ``submit``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.engine.assess import assess_batch, dimension_summary, trust_counts
from worker.storage.db import FINAL_BATCH_STATUSES, Batch, Result, get_engine, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchFinal:
    """A batch as it was finalised: final status, counts and when."""

    batch_id: int
    status: str
    n_done: int
    n_failed: int
    finished_at: datetime


def finalise_batch(session: Session, batch_id: int) -> BatchFinal | None:
    """Finalise batch ``batch_id`` when none of its rows is pending; call it in the transaction that wrote rows.

    Sets ``status`` (``done``, or ``done_with_failures`` when some row failed), ``n_done``,
    ``n_failed``, ``n_low_confidence``, ``n_out_of_domain`` (:func:`worker.engine.assess.trust_counts`),
    ``dimensions`` (:func:`worker.engine.assess.dimension_summary`),
    ``finished_at`` and ``warnings`` (:func:`worker.engine.assess.assess_batch`) in the caller's
    transaction, so the batch record and its last row are committed together. The batch row is locked first (PostgreSQL ``FOR NO KEY UPDATE``,
    which does not conflict with the foreign-key checks of concurrent row inserts), and the pending
    rows are counted after the lock: of two transactions writing a batch's last rows at once, the
    second to take the lock sees the first's rows and finalises. SQLite serialises writers anyway.

    Args:
        session: open session inside a transaction that has written rows of the batch.
        batch_id: the batch.

    Returns:
        The final record when this call finalised the batch; None when rows are still pending, the
        batch does not exist, or it was already final (counts are then refreshed, status kept).
    """
    batch = session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update(key_share=True)).one_or_none()
    if batch is None:
        return None
    # called in every chunk's transaction: while rows are pending (nearly always) one index seek on
    # ix_results_pending answers, instead of counting the whole batch per chunk (O(rows) each time)
    if session.scalar(select(Result.id).where(Result.batch_id == batch_id, Result.status == "pending").limit(1)):
        return None
    counts = dict(
        session.execute(
            select(Result.status, func.count()).where(Result.batch_id == batch_id).group_by(Result.status)
        ).all()
    )
    if counts.get("pending", 0):
        return None
    n_done, n_failed = counts.get("done", 0), counts.get("failed", 0)
    already = batch.status in FINAL_BATCH_STATUSES
    batch.n_done, batch.n_failed = n_done, n_failed
    flags = trust_counts(session, batch_id)  # kept with the batch: `status` then reads no result row
    batch.n_low_confidence, batch.n_out_of_domain = flags["low_confidence"], flags["out_of_domain"]
    batch.dimensions = dimension_summary(session, batch_id)  # `status` reads it, not the rows
    if already:
        return None
    batch.status = "done_with_failures" if n_failed else "done"
    batch.finished_at = utcnow()
    assess_batch(session, batch_id)  # batches.warnings, in the same transaction
    session.flush()
    log.info("batch %s finalised: %s (%d done, %d failed)", batch_id, batch.status, n_done, n_failed)
    return BatchFinal(batch_id, batch.status, n_done, n_failed, batch.finished_at)


def finalise_if_complete(batch_id: int, *, url: str | None = None) -> BatchFinal | None:
    """:func:`finalise_batch` in a transaction of its own (for the sweeper and the producer)."""
    with Session(get_engine(url)) as session, session.begin():
        return finalise_batch(session, batch_id)
