"""The worker side of ser-batch, in four rooms with imports that only point down.

- :mod:`worker.celery_app` -- the Celery adapter: the app ``celery -A worker.celery_app worker``
  loads, its configuration, publishing, tasks, the sweeper, the Redis-proof consumer, the watchdog;
- :mod:`worker.training` -- training a model and registering it (``ser-batch train``, ``ser.train``);
- :mod:`worker.engine` -- the batch engine, the same in embedded and distributed mode (no Celery);
- :mod:`worker.storage` -- the schema, sessions, migrations, model registry and database roles;
- :mod:`worker.settings` and :mod:`worker.urls` -- configuration and URL checks, at the bottom.

The layers are a contract checked by import-linter in ``make lint`` (``[tool.importlinter]`` in
``pyproject.toml``): an upward import or a circle fails the build.
"""
