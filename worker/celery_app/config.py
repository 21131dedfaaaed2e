"""Celery configuration of ser-batch: task and queue names, limits, and the app factory.

Every setting says why it is set. :func:`make_app` builds an application from a
:class:`worker.settings.Settings`; the worker's application is :data:`worker.celery_app.app`.
Importing this module pulls in neither librosa nor scikit-learn, nor the task code.
"""

from __future__ import annotations

from celery import Celery

from worker.settings import Settings

CLASSIFY_TASK = "ser.classify"
"""Name the producer publishes to; the producer never imports the task function itself."""
TRAIN_TASK = "ser.train"
"""Training task: not idempotent, so it acks early and has a queue of its own."""
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


def restore_timing(s: Settings) -> tuple[int, int]:
    """How often a worker looks for a dead worker's messages, and how long one look may hold the lock.

    kombu's Redis transport gives a message back to the queue once it has been unacknowledged for
    ``visibility_timeout`` seconds; workers look for such messages every ``unacked_restore_interval``
    seconds, one at a time under a Redis lock (``unacked_mutex``) that expires after
    ``unacked_mutex_expire`` seconds. The lock expiry bounds how long a worker SIGKILLed while it held
    the lock delays everybody else's look: kombu's default, 300 s, postponed the redelivery of a dead
    worker's messages by up to five minutes. Looks that overlap once a lock has expired are harmless:
    each message is given back in a transaction that watches the ``unacked`` hash, so it goes back once.

    Returns:
        ``(restore_every_s, mutex_expire_s)``: a tenth of the visibility timeout, between 1 s and 60 s;
        and the lock expiry, one look's interval but at least 5 s (a look giving back thousands of
        messages takes seconds).
    """
    restore_every_s = max(1, min(60, s.visibility_timeout_s // 10))
    return restore_every_s, max(5, restore_every_s)


def make_app(s: Settings) -> Celery:
    """A Celery app configured from settings ``s`` (the module-level :data:`app` uses the settings in force).

    Raises:
        ValueError: time limits not ordered soft < hard < visibility timeout.
    """
    check_time_limits(s)
    celery_app = Celery("ser_batch", include=["worker.celery_app.tasks", "worker.celery_app.train_tasks"])
    restore_every_s, restore_mutex_s = restore_timing(s)
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
            # The lock one sweep holds (kombu's default 300 s). A worker killed in the middle of a
            # sweep leaves it behind, and nobody restores a dead worker's messages until it expires.
            "unacked_mutex_expire": restore_mutex_s,
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
        # ser.classify is idempotent (an upsert on (batch_id, path, channel)): acknowledge after it ran, so a
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
        # Workers warm up in the parent before forking (celeryd_after_setup in worker.celery_app), so a pool process is up
        # within Celery's 4 s limit; keep some slack for slow machines under load.
        worker_proc_alive_timeout=30.0,
        # Celery 5.7's clean-up of a lost Redis connection can raise AttributeError and stop the
        # consumer for good (Redis restarted while acks_late tasks run); this subclass keeps it
        # consuming. The why, read from celery's and kombu's source, is in worker/celery_app/consumer.py.
        worker_consumer="worker.celery_app.consumer:ResilientConsumer",
    )
    return celery_app
