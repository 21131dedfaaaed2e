"""The Celery adapter: everything that needs Celery, around the batch engine (:mod:`worker.engine`).

``celery -A worker.celery_app worker`` loads this package: :data:`app` (:mod:`.app`), the worker's
lifecycle in Celery's signals (:mod:`.lifecycle`: warm-up, after-fork set-up, sweeper, watchdog),
and the tasks named in the configuration (:mod:`.tasks` ``ser.classify``, :mod:`.train_tasks`
``ser.train``). Start a worker with::

    ser-batch worker --concurrency 2            # migrates a fresh SQLite, registers the default model
    celery -A worker.celery_app worker -Q classify --concurrency 2 --loglevel info   # the same, plain

The rooms: :mod:`.config` (every Celery setting with why), :mod:`.publish` (the producer's only view
of Celery: publish by task name, queue length), :mod:`.sweeper` (requeue work of dead workers),
:mod:`.consumer` (a consumer that survives Redis restarts), :mod:`.watchdog` (a stalled worker exits).
Embedded ``submit`` needs none of this: it calls :func:`worker.engine.chunk.run_chunk` itself.
"""

from worker.celery_app import lifecycle  # noqa: F401 - connects the worker's signal handlers
from worker.celery_app.app import app

__all__ = ["app"]
