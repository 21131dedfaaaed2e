"""The worker's lifecycle in Celery's signals: warm-up before the fork, set-up after it, the sweeper and watchdog.

Connected when :mod:`worker.celery_app` is imported (``celery -A worker.celery_app worker``):

* ``celeryd_after_setup`` (main process, before the pool forks): warm up the model and the feature
  code once (:func:`worker.engine.warmup.warm_up`), so pool processes share it copy-on-write;
* ``worker_process_init`` (each pool process): its own database connections, single-threaded
  native libraries (:func:`worker.engine.warmup.after_fork`);
* ``worker_ready`` / ``worker_shutdown``: start and stop the sweeper (:mod:`worker.celery_app.sweeper`)
  and the watchdog (:mod:`worker.celery_app.watchdog`);
* ``task_received``: tell the watchdog the consumer is alive.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from worker.celery_app.app import app, settings
from worker.celery_app.config import CLASSIFY_QUEUE
from worker.celery_app.publish import queue_length
from worker.celery_app.sweeper import Sweeper
from worker.celery_app.watchdog import Watchdog
from worker.engine.warmup import after_fork, warm_up
from worker.storage.db import get_engine

log = logging.getLogger(__name__)


@signals.celeryd_after_setup.connect  # main process, logging set up, pool not forked yet
def _warm_up_before_fork(**_: Any) -> None:
    if not settings.broker_url:
        log.error("SER_BROKER_URL is not set: this worker listens on an in-memory broker nobody sends to")
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
    if not settings.broker_url:
        return
    if _sweeper is None:
        _sweeper = Sweeper(settings=settings, celery_app=app).start()
        log.info("sweeper started (every %.0f s, lease %.0f s)", settings.sweep_interval_s, settings.lease_s)
    consumes = set(app.amqp.queues.consume_from or app.amqp.queues)
    if _watchdog is None and settings.watchdog_stall_s > 0 and CLASSIFY_QUEUE in consumes and sender is not None:
        from celery.worker import state

        pool = sender.pool

        def stop_worker(code: int) -> None:
            state.should_stop = code  # what Celery's SIGTERM handler sets: a warm shutdown

        _watchdog = Watchdog(
            stall_s=settings.watchdog_stall_s,
            every_s=max(1.0, min(10.0, settings.watchdog_stall_s / 10)),
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
