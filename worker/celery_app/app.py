"""The Celery application, configured from the settings in force before anything heavy is imported.

:data:`app` is what ``celery -A worker.celery_app worker`` runs and what the producer publishes with
(:mod:`worker.celery_app.publish`). The process environment is prepared first
(:func:`worker.settings.prepare_process_env`: one BLAS/OpenMP/numba thread per process, so that
prefork concurrency x BLAS threads does not oversubscribe the cores, and a writable
``NUMBA_CACHE_DIR``), before numpy is imported anywhere in a worker. Importing this module pulls in
neither librosa nor scikit-learn: the task modules and the ML code are loaded by worker processes only.
"""

from __future__ import annotations

from worker.settings import get_settings, prepare_process_env

settings = get_settings()
"""The settings the application was configured from."""
prepare_process_env(settings)

from worker.celery_app.config import make_app  # noqa: E402 - imports celery: after prepare_process_env on purpose

app = make_app(settings)
"""The application ``celery -A worker.celery_app worker`` loads."""
