"""The Celery application ``celery -A worker.celery_app worker`` loads, and its worker-process lifecycle.

Configured from the same :class:`worker.settings.Settings` as the CLI (``SER_BROKER_URL``,
``SER_DATABASE_URL``, ``SER_TASK_SOFT_TIME_LIMIT_S``, ...). Start a worker with::

    ser-batch worker --concurrency 2            # migrates a fresh SQLite, registers the default model
    celery -A worker.celery_app worker -Q classify --concurrency 2 --loglevel info   # the same, plain

The configuration (each setting with why) is in :mod:`worker.celery_config`, publishing by task
name in :mod:`worker.publish`, warm-up and after-fork set-up in :mod:`worker.warmup`. Importing
this module pulls in neither librosa nor scikit-learn: the task modules and the ML code are loaded
by worker processes only.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.settings import get_settings, prepare_process_env

# Before numpy is imported anywhere in a worker: one BLAS/OpenMP/numba thread per process, so that
# prefork concurrency x BLAS threads does not oversubscribe the cores, and a writable
# NUMBA_CACHE_DIR so any numba function (librosa, where still used) compiles once per machine.
_settings = get_settings()
prepare_process_env(_settings)

from celery import signals  # noqa: E402 - after prepare_process_env on purpose

from worker.celery_config import (  # noqa: E402,F401 - re-exported for existing imports
    CLASSIFY_QUEUE,
    CLASSIFY_TASK,
    TRAIN_TASK,
    TRAINING_QUEUE,
    check_time_limits,
    make_app,
)
from worker.publish import chunked, enqueue_chunks  # noqa: E402,F401
from worker.sweeper import Sweeper  # noqa: E402
from worker.warmup import after_fork, warm_up  # noqa: E402,F401
from worker.watchdog import Watchdog  # noqa: E402

log = logging.getLogger(__name__)

app = make_app(_settings)
"""The application ``celery -A worker.celery_app worker`` loads."""


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
    after_fork()


_sweeper: Sweeper | None = None
_watchdog: Watchdog | None = None


@signals.worker_ready.connect  # main process, pool started, consumer about to consume
def _start_sweeper_and_watchdog(sender: Any = None, **_: Any) -> None:
    """Every worker sweeps (expired leases and uncovered rows requeued, batches finalised) and watches itself."""
    global _sweeper, _watchdog
    if not _settings.broker_url:
        return
    if _sweeper is None:
        _sweeper = Sweeper(settings=_settings, celery_app=app).start()
        log.info("sweeper started (every %.0f s, lease %.0f s)", _settings.sweep_interval_s, _settings.lease_s)
    consumes = set(app.amqp.queues.consume_from or app.amqp.queues)
    if _watchdog is None and _settings.watchdog_stall_s > 0 and CLASSIFY_QUEUE in consumes and sender is not None:
        from celery.worker import state

        from worker.publish import queue_length

        pool = sender.pool

        def stop_worker(code: int) -> None:
            state.should_stop = code  # what Celery's SIGTERM handler sets: a warm shutdown

        _watchdog = Watchdog(
            stall_s=_settings.watchdog_stall_s,
            every_s=max(1.0, min(10.0, _settings.watchdog_stall_s / 10)),
            waiting=lambda: queue_length(app),
            idle_processes=lambda: pool.num_processes - len(state.reserved_requests),
            stop_worker=stop_worker,
        ).start()


@signals.task_received.connect
def _note_task_received(**_: Any) -> None:
    if _watchdog is not None:
        _watchdog.detector.received()


@signals.worker_shutdown.connect
def _stop_sweeper_and_watchdog(**_: Any) -> None:
    global _sweeper, _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
