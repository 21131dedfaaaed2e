"""The Celery application of ser-batch: broker, queues, limits and worker-process lifecycle.

Configured from the same :class:`worker.settings.Settings` as the CLI (``SER_BROKER_URL``,
``SER_DATABASE_URL``, ``SER_TASK_SOFT_TIME_LIMIT_S``, ...). Start a worker with::

    ser-batch worker --concurrency 2            # migrates a fresh SQLite, registers the default model
    celery -A worker.celery_app worker -Q classify --concurrency 2 --loglevel info   # the same, plain

Every setting below says why it is set. The producer imports this module only to publish by task
name (:func:`enqueue_chunks`); importing it pulls in neither librosa nor scikit-learn: the task
module and the ML code are loaded by worker processes only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from worker.settings import Settings, get_settings, prepare_process_env

# Before numpy is imported anywhere in a worker: one BLAS/OpenMP/numba thread per process, so that
# prefork concurrency x BLAS threads does not oversubscribe the cores, and a writable
# NUMBA_CACHE_DIR so any numba function (librosa, where still used) compiles once per machine.
_settings = get_settings()
prepare_process_env(_settings)

from celery import Celery, signals  # noqa: E402 - after prepare_process_env on purpose

log = logging.getLogger(__name__)

CLASSIFY_TASK = "ser.classify"
"""Name the producer publishes to; the producer never imports the task function itself."""
TRAIN_TASK = "ser.train"
"""Training task (a later issue): not idempotent, so it acks early and has a queue of its own."""
CLASSIFY_QUEUE = "classify"
TRAINING_QUEUE = "training"


def check_time_limits(s: Settings) -> None:
    """Refuse limits that let Redis hand a running task to a second worker.

    Redis (unlike AMQP) has no per-consumer acknowledgement: an unacknowledged message is given to
    another worker once ``visibility_timeout`` seconds have passed. The soft limit (the task
    records what it finished) must come before the hard limit (the process is killed), and both
    before the visibility timeout, or a slow-but-healthy task would be run twice at once.

    Raises:
        ValueError: the limits are not strictly increasing.
    """
    if not (s.task_soft_time_limit_s < s.task_time_limit_s < s.visibility_timeout_s):
        raise ValueError(
            "need SER_TASK_SOFT_TIME_LIMIT_S < SER_TASK_TIME_LIMIT_S < SER_VISIBILITY_TIMEOUT_S, got "
            f"{s.task_soft_time_limit_s} / {s.task_time_limit_s} / {s.visibility_timeout_s} s"
        )


def make_app(s: Settings) -> Celery:
    """A Celery app configured from settings ``s`` (the module-level :data:`app` uses the settings in force).

    Raises:
        ValueError: time limits not ordered soft < hard < visibility timeout.
    """
    check_time_limits(s)
    celery_app = Celery("ser_batch", include=["worker.tasks", "worker.train_tasks"])
    restore_every_s = max(1, min(60, s.visibility_timeout_s // 10))
    celery_app.conf.update(
        # Unset broker: a memory broker, so importing this module never needs Redis (the CLI
        # refuses distributed commands without SER_BROKER_URL).
        broker_url=s.broker_url or "memory://",
        # Retry the first broker connection instead of crashing a worker that starts before Redis.
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Redis redelivers an unacknowledged message after this many seconds. It must exceed the
            # hard time limit (checked above) and the longest retry countdown (below).
            "visibility_timeout": s.visibility_timeout_s,
            # How often a worker sweeps for messages of dead workers whose visibility timeout has
            # passed (kombu's default sweep is every 100 s); a tenth of the timeout, at most a minute.
            "unacked_restore_interval": restore_every_s,
            "unacked_restore_throttle": 1,
        },
        # Tasks carry ids and paths only: JSON keeps messages readable and rules out pickle.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        # The database is the record of results (one row per file); no result backend, nothing to
        # expire, and no chords (progress is counted from rows).
        result_backend=None,
        task_ignore_result=True,
        # ser.classify is idempotent (an upsert on (batch_id, path)): acknowledge after it ran, so a
        # task whose worker died is delivered again instead of lost ...
        task_acks_late=True,
        # ... including when the pool process was killed (SIGKILL, OOM killer, hard time limit).
        task_reject_on_worker_lost=True,
        # A task that raised or hit a time limit has already written failed rows: do not redeliver.
        task_acks_on_failure_or_timeout=True,
        # One message reserved per process: chunks go to idle processes instead of queueing behind a
        # busy one, and a dying worker holds back as few messages as possible.
        worker_prefetch_multiplier=1,
        # After a lost broker connection, late-ack tasks are redelivered anyway; stop running them
        # here rather than process the same chunk twice at once.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Soft limit: SoftTimeLimitExceeded in the task, which marks unfinished files failed with
        # the reason. Hard limit: the process is killed (the message comes back, see tasks.py).
        task_soft_time_limit=s.task_soft_time_limit_s,
        task_time_limit=s.task_time_limit_s,
        # Classification and training never share processes: training is long, CPU-hungry and not
        # idempotent; it gets its own queue served by a worker with --concurrency 1.
        task_default_queue=CLASSIFY_QUEUE,
        task_routes={
            CLASSIFY_TASK: {"queue": CLASSIFY_QUEUE},
            TRAIN_TASK: {"queue": TRAINING_QUEUE},
        },
        # Workers warm up in the parent before forking (celeryd_after_setup below), so a pool process is up
        # within Celery's 4 s limit; keep some slack for slow machines under load.
        worker_proc_alive_timeout=30.0,
    )
    return celery_app


app = make_app(_settings)
"""The application ``celery -A worker.celery_app worker`` loads."""


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
        celery_app: app to publish with (default :data:`app`).

    Returns:
        Number of messages published (``ceil(len(paths) / chunk_size)``).

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached (after Celery's publish retries).
    """
    a = celery_app or app
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


def broker_backlog(celery_app: Celery | None = None) -> int:
    """Messages the Redis broker still holds for ``classify``: queued plus delivered-but-unacknowledged.

    Zero while rows are pending means no message will ever reach those rows: kombu's Redis transport
    pops a message (BRPOP) before it records it as unacknowledged, so a worker SIGKILLed in between
    loses that message. See :func:`requeue_orphans`.

    Raises:
        kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    a = celery_app or app
    with a.connection_for_write() as conn:
        client = conn.default_channel.client
        return int(client.llen(CLASSIFY_QUEUE)) + int(client.hlen("unacked"))


def requeue_orphans(
    batch_id: int,
    pending_paths: Sequence[str],
    *,
    chunk_size: int,
    model_version: str | None = None,
    celery_app: Celery | None = None,
) -> int:
    """Queue the pending files of a batch again when the broker holds no message for any of them.

    Safe to call at any time: it does nothing while the broker has a backlog, and a file queued twice
    is labelled once (the task skips rows that are no longer pending).

    Returns:
        Number of files queued again (0 when the broker still holds messages).
    """
    if not pending_paths or broker_backlog(celery_app):
        return 0
    enqueue_chunks(batch_id, pending_paths, chunk_size=chunk_size, model_version=model_version, celery_app=celery_app)
    return len(pending_paths)


# ------------------------------------------------------------------------------ worker lifecycle


def warm_up(url: str | None = None) -> dict[str, Any]:
    """Run the feature extractor once on a 1-s sine (imports, filter banks) and load the active model.

    Runs once in the worker's main process before the pool forks (``celeryd_after_setup``), so every pool
    process starts with compiled feature code and the model in memory, and the first task of a
    fresh worker is as fast as the rest.

    Args:
        url: database URL (default: settings).

    Returns:
        ``{"model_version": str | None, "error": str | None}``; a model that cannot be loaded is
        logged, not raised (tasks then fail their chunk with the reason).
    """
    import numpy as np

    from ser_model.features import extract_features
    from worker.registry import load_model

    t = np.arange(16000, dtype=np.float32) / 16000
    x = extract_features((0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32))
    try:
        model = load_model(url=url)
        model.bundle.predict_proba(x[None, :])  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - a worker without a model still starts; tasks report why
        log.warning("warm-up could not load the model: %s", e)
        return {"model_version": None, "error": str(e)}
    return {"model_version": model.version, "error": None}


@signals.celeryd_after_setup.connect  # main process, logging set up, pool not forked yet
def _warm_up_before_fork(**_: Any) -> None:
    if not _settings.broker_url:
        log.error("SER_BROKER_URL is not set: this worker listens on an in-memory broker nobody sends to")
    from worker.db import get_engine

    result = warm_up()
    get_engine().dispose()  # close the warm-up's connections: pool processes must not inherit sockets
    log.info("ser-batch worker warmed up (model %s)", result["model_version"])


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """In each pool process: own DB connections and single-threaded native libraries."""
    from threadpoolctl import threadpool_limits

    from worker.db import dispose_engines

    dispose_engines()  # never share the parent's pooled connections after fork
    threadpool_limits(1)
