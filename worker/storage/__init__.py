"""Storage: where batches, rows and models live, and nothing about how files are labelled.

- :mod:`.db` -- the schema (batches, results, segments, model versions, jobs), engines and
  sessions, and the bulk writes (insert pending rows, upsert results, replace segments);
- :mod:`.migrate` -- the Alembic migration runner (``ser-batch db upgrade``, schema checks);
- :mod:`.registry` -- the model registry: register, activate and load model versions;
- :mod:`.roles` -- the PostgreSQL roles (reader, worker, admin) of ``ser-batch db roles``.

Imports only :mod:`worker.settings`, :mod:`worker.urls` and :mod:`ser_model` (labels, bundles).
"""
