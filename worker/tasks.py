"""Celery tasks: thin wrappers around :func:`worker.processing.process_paths`.

Loaded by worker processes only (``include=["worker.tasks"]`` in :mod:`worker.celery_app`); the
producer publishes by name and never imports this module.

How ``ser.classify`` handles the known failures:

* **Redelivery** (``acks_late`` + ``reject_on_worker_lost``; Redis visibility timeout): rows are
  upserted on (batch_id, path) and files whose row is no longer ``pending`` are skipped, so a
  chunk delivered twice still leaves one row per file.
* **A file that kills its process** (out of memory, hard time limit): a redelivered chunk is
  processed one file at a time, each row written at once, and every start is counted in
  ``results.attempts``; a file started :data:`MAX_ATTEMPTS` times without finishing becomes
  ``failed`` instead of taking workers down forever.
* **Soft time limit**: files finished so far are kept, the rest of the chunk is marked ``failed``
  with the reason ``time limit exceeded``.
* **Transient database errors** (connection refused, server restart): retried with exponential
  backoff; a file that cannot be decoded is a ``failed`` row, never a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

import worker.processing as processing
from worker.celery_app import CLASSIFY_TASK, app
from worker.db import Result, get_engine, utcnow
from worker.notify import notify_batch_final
from worker.registry import RegistryError, load_model
from worker.settings import get_settings

log = logging.getLogger(__name__)

# A time limit must reach the task, not become one file's "internal error" row.
processing.PASSTHROUGH = (SoftTimeLimitExceeded,)

MAX_ATTEMPTS = 3
"""Starts of a file after which a redelivered chunk marks it failed instead of trying again."""

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
"""Errors worth a retry: the database (or the network to it) is briefly unavailable."""

TIME_LIMIT_REASON = (
    "time limit exceeded (SER_TASK_SOFT_TIME_LIMIT_S); the file may be too long or the worker overloaded"
)
GIVEN_UP_REASON = "worker process died {n} times while processing this file (killed, out of memory, or hard time limit)"

_settings = get_settings()


def _row_states(batch_id: int, paths: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``{path: (status, attempts)}`` for the rows of ``paths`` that exist."""
    with Session(get_engine()) as s:
        q = select(Result.path, Result.status, Result.attempts).where(
            Result.batch_id == batch_id, Result.path.in_(list(paths))
        )
        return {p: (st, n) for p, st, n in s.execute(q)}


def _count_start(batch_id: int, paths: Sequence[str]) -> None:
    """Add one to ``attempts`` of the still-pending rows of ``paths``."""
    with Session(get_engine()) as s, s.begin():
        s.execute(
            update(Result)
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.status == "pending")
            .values(attempts=Result.attempts + 1)
        )


def fail_pending(batch_id: int, paths: Sequence[str], reason: str, model_version: str | None = None) -> int:
    """Mark those of ``paths`` whose rows are still ``pending`` (or missing) as ``failed`` with ``reason``.

    Rows already ``done`` or ``failed`` are left alone.

    Args:
        batch_id: the batch.
        paths: candidate files.
        reason: one-line message stored in ``results.error``.
        model_version: recorded on the failed rows.

    Returns:
        Number of rows marked failed.
    """
    states = _row_states(batch_id, paths)
    todo = [p for p in paths if states.get(p, ("pending", 0))[0] == "pending"]
    by_speaker = bool(processing.batch_options(batch_id).get("speaker_from"))
    if by_speaker and todo:  # a file already featurised waits for its speaker, it has not failed
        with Session(get_engine()) as s:
            ready = set(
                s.scalars(
                    select(Result.path).where(
                        Result.batch_id == batch_id, Result.path.in_(todo), Result.features.is_not(None)
                    )
                )
            )
        todo = [p for p in todo if p not in ready]
    now = utcnow()
    rows = [
        {"path": p, "status": "failed", "error": reason, "model_version": model_version, "finished_at": now}
        for p in todo
    ]
    processing.store_rows(batch_id, rows)
    if by_speaker and rows:
        # the speakers of these files may now have every other file featurised: classify them
        try:
            processing.classify_ready_speakers(batch_id, todo, load_model(model_version))
        except RegistryError:
            pass  # no usable model: those files fail with that reason through their own chunks
    return len(rows)


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
    """Label a chunk of files of batch ``batch_id`` and upsert one row per file.

    Args:
        batch_id: the batch (committed by the producer before it enqueued).
        paths: files of the batch, as stored in its rows.
        model_version: registered model to use (None: the active one).

    Returns:
        ``{"done": n, "failed": n, "skipped": n}``; skipped files already had a final row (a
        redelivered chunk). Ignored by Celery (results live in the database).

    Raises:
        sqlalchemy.exc.OperationalError: database unavailable after all retries.
    """
    states = _row_states(batch_id, paths)
    todo = [p for p in paths if states.get(p, ("pending", 0))[0] == "pending"]
    skipped = len(paths) - len(todo)
    if not todo:
        return {"done": 0, "failed": 0, "skipped": skipped}
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or any(
        states.get(p, ("pending", 0))[1] > 0 for p in todo
    )
    counts = {"done": 0, "failed": 0, "skipped": skipped}
    try:
        if not redelivered:
            _count_start(batch_id, todo)
            c = processing.process_paths(batch_id, todo, model_version=model_version)
            counts["done"] += c["done"]
            counts["failed"] += c["failed"]
        else:
            # One file at a time, each row written at once: a file that kills the process only
            # takes itself down, and its attempts count up to MAX_ATTEMPTS.
            log.warning("batch %s: redelivered chunk of %d file(s), processing one by one", batch_id, len(todo))
            for p in todo:
                attempts = states.get(p, ("pending", 0))[1]
                if attempts >= MAX_ATTEMPTS:
                    counts["failed"] += fail_pending(
                        batch_id, [p], GIVEN_UP_REASON.format(n=attempts), model_version=model_version
                    )
                    continue
                _count_start(batch_id, [p])
                c = processing.process_paths(batch_id, [p], model_version=model_version)
                counts["done"] += c["done"]
                counts["failed"] += c["failed"]
    except SoftTimeLimitExceeded:
        n = fail_pending(batch_id, todo, TIME_LIMIT_REASON, model_version=model_version)
        log.warning("batch %s: soft time limit hit, %d file(s) marked failed", batch_id, n)
        final = [st for st, _ in _row_states(batch_id, todo).values()]
        counts.update(done=final.count("done"), failed=final.count("failed"))
    except RegistryError as e:
        # No usable model: every file of the chunk fails with the reason (a retry cannot help).
        counts["failed"] += fail_pending(batch_id, todo, f"no usable model: {e}", model_version=model_version)
    if processing.batch_options(batch_id).get("notify_url"):  # the batch's webhook, once its last row is in
        notify_batch_final(batch_id)
    return counts
