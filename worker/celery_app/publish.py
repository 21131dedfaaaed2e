"""Publishing to the broker by task name: classify chunks and training jobs; the queue length.

The producer's only view of Celery: it needs the broker, never the task code, librosa or
scikit-learn. Every function takes an optional ``celery_app``; the default is the worker's
application (:data:`worker.celery_app.app.app`, configured from the settings in force).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from worker.celery_app.app import app
from worker.celery_app.config import CLASSIFY_QUEUE, CLASSIFY_TASK, TRAIN_TASK, TRAINING_QUEUE


def default_app() -> Celery:
    """The application configured from the settings in force (:data:`worker.celery_app.app.app`).

    Raises:
        ValueError: time limits not ordered soft < hard < visibility timeout.
    """
    return app


def chunked(paths: Sequence[str], size: int) -> list[list[str]]:
    """Split ``paths`` into lists of at most ``size`` paths, in order."""
    return [list(paths[i : i + size]) for i in range(0, len(paths), size)]


def enqueue_chunks(
    batch_id: int,
    paths: Sequence[str],
    *,
    chunk_size: int,
    model_version: str | None = None,
    celery_app: Celery | None = None,
) -> int:
    """Publish ``ser.classify`` messages by task name for ``paths`` of batch ``batch_id``.

    Needs the broker only: no task code, librosa or scikit-learn is imported. The caller must have
    committed the batch and its pending rows first, so a fast worker always finds them.

    Args:
        batch_id: the committed batch.
        paths: files, as stored in the batch's rows.
        chunk_size: files per message (see ``SER_CHUNK_SIZE``).
        model_version: model every chunk is labelled with (None: the active one when it runs).
        celery_app: app to publish with (default :func:`default_app`).

    Returns:
        Number of messages published (``ceil(len(paths) / chunk_size)``).

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached (after Celery's publish retries).
    """
    a = celery_app or default_app()
    chunks = chunked(paths, chunk_size)
    with a.producer_or_acquire() as producer:  # one connection for the whole batch
        for chunk in chunks:
            a.send_task(
                CLASSIFY_TASK,
                args=[batch_id, chunk],
                kwargs={"model_version": model_version},
                queue=CLASSIFY_QUEUE,
                producer=producer,
            )
    return len(chunks)


def enqueue_train(job_id: str, request: dict[str, Any], *, celery_app: Celery | None = None) -> None:
    """Publish one ``ser.train`` message on the ``training`` queue for job ``job_id``.

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    a = celery_app or default_app()
    a.send_task(TRAIN_TASK, args=[job_id, request], queue=TRAINING_QUEUE)


def queue_length(celery_app: Celery | None = None) -> int:
    """Messages waiting in the ``classify`` queue (not yet delivered to any worker).

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    a = celery_app or default_app()
    with a.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(CLASSIFY_QUEUE))
