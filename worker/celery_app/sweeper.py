"""The sweeper: requeues work nobody is doing any more and finalises finished batches.

It runs as a timer thread in the main process of every worker (started on ``worker_ready``, see
:mod:`worker.celery_app`) and in ``submit --wait``; there is no extra service. Every
``SER_SWEEP_INTERVAL_S`` seconds it looks at the ``running`` distributed batches and

1. **requeues rows whose lease expired**: a pending row claimed by a process that stopped renewing
   its lease (the worker was SIGKILLed, its machine died, it lost the database for longer than the
   lease). Recovery therefore takes about ``SER_LEASE_S`` + ``SER_SWEEP_INTERVAL_S`` seconds instead
   of the Redis visibility timeout (an hour by default), which stays as the last resort;
2. **requeues pending rows no message covers**: rows never claimed and untouched for
   ``SER_LEASE_S`` while the ``classify`` queue is empty. Their message was lost (kombu's Redis
   transport pops a message before it records it as unacknowledged, so a worker killed in between
   loses it) or is held unacknowledged by a dead worker that had reserved it but not started it;
3. **finalises** batches with no pending row left (normally done by the transaction that wrote the
   last row, :func:`worker.engine.finalise.finalise_batch`; this is the safety net).

Requeueing is safe at any time: a chunk delivered twice skips rows that are final or leased to a
live process (:func:`worker.engine.leases.claim`). Rows are picked with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several workers sweeping at once requeue each row once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from worker.celery_app.publish import enqueue_chunks
from worker.celery_app.publish import queue_length as broker_queue_length
from worker.engine.finalise import finalise_batch
from worker.settings import Settings, get_settings
from worker.storage.db import Batch, Result, get_engine, utcnow

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one sweep did."""

    expired: int = 0
    """Rows whose lease had expired, requeued."""
    orphaned: int = 0
    """Never-claimed rows no message covered, requeued."""
    finalised: list[int] = field(default_factory=list)
    """Batches the sweep finalised."""


def _requeue_rows(session: Session, cond: Any) -> list[tuple[int, str]]:
    """Release the rows matching ``cond`` (lease cleared, ``updated_at`` now); returns (batch_id, path)."""
    running = select(Batch.id).where(Batch.status == "running", Batch.mode == "distributed")
    where = [Result.status == "pending", Result.batch_id.in_(running), cond]
    if session.get_bind().dialect.name == "postgresql":
        ids = select(Result.id).where(*where).with_for_update(skip_locked=True).scalar_subquery()
        stmt = update(Result).where(Result.id.in_(ids))
    else:
        stmt = update(Result).where(*where)
    stmt = stmt.values(worker_id=None, lease_expires_at=None, updated_at=utcnow())
    return [(b, p) for b, p in session.execute(stmt.returning(Result.batch_id, Result.path)).all()]


def _publish(rows: list[tuple[int, str]], url: str | None, celery_app: Any) -> None:
    by_batch: dict[int, list[str]] = {}
    for b, p in rows:
        by_batch.setdefault(b, []).append(p)
    with Session(get_engine(url)) as session:
        opts = {b: dict(session.get(Batch, b).options or {}) for b in by_batch}  # type: ignore[union-attr]
    for b, paths in by_batch.items():
        enqueue_chunks(
            b,
            sorted(paths),
            chunk_size=int(opts[b].get("chunk_size") or 8),
            model_version=opts[b].get("model_version"),
            celery_app=celery_app,
        )


def sweep(
    *,
    url: str | None = None,
    settings: Settings | None = None,
    celery_app: Any = None,
    queue_length: Callable[[], int] | None = None,
) -> SweepReport:
    """One sweep: requeue expired leases and uncovered pending rows, finalise finished batches.

    Args:
        url: database URL (default: settings).
        settings: lease length (default: the settings in force).
        celery_app: app to publish with (default :func:`worker.celery_app.publish.default_app`).
        queue_length: messages waiting in the ``classify`` queue (default: asked from the broker);
            uncovered rows are only requeued when it is 0.

    Returns:
        What was done.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable.
        kombu.exceptions.OperationalError: the broker is unreachable (rows released but not
            published are picked up again by a later sweep once ``SER_LEASE_S`` has passed).
    """
    s = settings or get_settings()
    report = SweepReport()
    engine = get_engine(url)
    now = utcnow()
    with Session(engine) as session, session.begin():
        expired = _requeue_rows(
            session,
            and_(
                Result.worker_id.is_not(None),
                Result.lease_expires_at < now,
                Result.features.is_(None),  # featurised rows wait for their speaker, not for a worker
            ),
        )
    report.expired = len(expired)
    if queue_length is None:

        def queue_length() -> int:
            return broker_queue_length(celery_app)

    orphans: list[tuple[int, str]] = []
    if queue_length() == 0:
        stale = now - timedelta(seconds=s.lease_s)
        with Session(engine) as session, session.begin():
            orphans = _requeue_rows(
                session,
                and_(Result.worker_id.is_(None), Result.features.is_(None), Result.updated_at < stale),
            )
    report.orphaned = len(orphans)
    if expired or orphans:
        _publish(expired + orphans, url, celery_app)
        log.warning(
            "sweeper: requeued %d row(s) with an expired lease and %d row(s) no message covered",
            len(expired),
            len(orphans),
        )
    with Session(engine) as session:
        candidates = list(
            session.scalars(
                select(Batch.id).where(
                    Batch.status == "running",
                    ~select(Result.id).where(Result.batch_id == Batch.id, Result.status == "pending").exists(),
                )
            )
        )
    for b in candidates:
        with Session(engine) as session, session.begin():
            if finalise_batch(session, b) is not None:
                report.finalised.append(b)
    return report


class Sweeper:
    """Runs :func:`sweep` every ``SER_SWEEP_INTERVAL_S`` seconds in a daemon thread until stopped.

    Errors (database or broker briefly down) are logged and the next sweep tries again.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        settings: Settings | None = None,
        celery_app: Any = None,
        on_sweep: Callable[[SweepReport], None] | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.url, self.celery_app, self.on_sweep = url, celery_app, on_sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ser-sweeper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                report = sweep(url=self.url, settings=self.settings, celery_app=self.celery_app)
                if self.on_sweep is not None:
                    self.on_sweep(report)
            except Exception as e:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.warning("sweeper: %s: %s", type(e).__name__, " ".join(str(e).split())[:300])

    def start(self) -> Sweeper:
        """Start the thread (returns self)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for a running sweep to end (at most 10 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
