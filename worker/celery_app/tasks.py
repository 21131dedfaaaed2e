"""The ``ser.classify`` Celery task: a thin wrapper around :func:`worker.engine.chunk.run_chunk`.

Loaded by worker processes only (``include=["worker.celery_app.tasks"]`` in :mod:`worker.celery_app.config`); the
producer publishes by name and never imports this module. Everything about a chunk — claim and
lease, attempts and give-up after :data:`~worker.engine.chunk.MAX_ATTEMPTS`, the soft time limit,
speaker-adaptive finishing, finalising the batch — is the batch engine's (:mod:`worker.engine.chunk`),
shared with embedded ``submit``. What is Celery's alone:

* **Redelivery** (``acks_late`` + ``reject_on_worker_lost``; Redis visibility timeout as the last
  resort behind leases): a chunk delivered twice finds its rows final or leased and skips them.
* **Transient database errors** (connection refused, server restart): retried with exponential
  backoff; a file that cannot be decoded is a ``failed`` row, never a retry.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from worker.celery_app.app import app
from worker.celery_app.config import CLASSIFY_TASK
from worker.engine.chunk import GIVEN_UP_REASON, MAX_ATTEMPTS, TIME_LIMIT_REASON, fail_pending, run_chunk
from worker.engine.notify import notify_batch_final
from worker.engine.rows import batch_options
from worker.settings import get_settings

__all__ = ["GIVEN_UP_REASON", "MAX_ATTEMPTS", "TIME_LIMIT_REASON", "TRANSIENT_ERRORS", "classify", "fail_pending"]

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
"""Errors worth a retry: the database (or the network to it) is briefly unavailable."""

_settings = get_settings()


@app.task(
    name=CLASSIFY_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    # Below the visibility timeout: a countdown held longer would be redelivered to another worker.
    retry_backoff_max=max(1, min(600, _settings.visibility_timeout_s // 4)),
    retry_jitter=True,
    max_retries=10,
)
def classify(self: Any, batch_id: int, paths: list[str], model_version: str | None = None) -> dict[str, int]:
    """Label a chunk of files of batch ``batch_id`` and upsert one row per file (:func:`run_chunk`).

    Args:
        batch_id: the batch (committed by the producer before it enqueued).
        paths: files of the batch, as stored in its rows.
        model_version: registered model to use (None: the active one).

    Returns:
        ``{"done": n, "failed": n, "skipped": n}``; skipped files already had a final row or were
        leased to another live process. Ignored by Celery (results live in the database).

    Raises:
        sqlalchemy.exc.OperationalError: database unavailable after all retries.
    """
    counts = run_chunk(batch_id, paths, model_version=model_version)
    if batch_options(batch_id).get("notify_url"):  # the batch's webhook, once its last row is in (sent once)
        notify_batch_final(batch_id)
    return counts
