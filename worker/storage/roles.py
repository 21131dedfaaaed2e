"""Least-privilege PostgreSQL roles for ser-batch (``ser-batch db roles``).

Three group roles (``NOLOGIN``; people and services get their own login roles that are members of one):

- ``<prefix>_reader`` (analysts, dashboards): ``SELECT`` on ``batches``, ``results``, ``segments``,
  ``models``, ``jobs`` and ``alembic_version``. Not ``batch_webhooks`` (webhook URLs hold tokens).
  Cannot change anything.
- ``<prefix>_worker`` (Celery workers and ``ser-batch submit``/``rescore``): reads and writes
  ``batches``, ``results``, ``segments``, ``jobs`` and ``batch_webhooks``, uses their id sequences,
  and only *reads* ``models`` and ``alembic_version``: a worker's credentials cannot plant a model.
- ``<prefix>_admin`` (the trainer and the operator): owns every table, so it writes ``models``
  (``ser-batch train``, ``models import/activate``) and runs ``ser-batch db upgrade``.

Apply as a superuser or the database owner with ``CREATEROLE``, after ``ser-batch db upgrade``, and
again after every later upgrade (a new table gets no grants until then).
"""

from __future__ import annotations

import re

READER_TABLES = ("batches", "results", "segments", "models", "jobs", "alembic_version")
"""What a query-only role reads."""
WORKER_WRITES = ("batches", "results", "segments", "jobs", "batch_webhooks")
"""What a worker (or the producer) writes."""
WORKER_READS = ("models", "alembic_version")
"""What a worker reads and never writes."""
ALL_TABLES = tuple(dict.fromkeys((*READER_TABLES, *WORKER_WRITES, *WORKER_READS)))

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def role_names(prefix: str = "ser") -> dict[str, str]:
    """``{"reader": ..., "worker": ..., "admin": ...}`` for ``prefix``.

    Raises:
        ValueError: ``prefix`` is not a plain lower-case identifier.
    """
    if not _NAME.match(prefix):
        raise ValueError(f"role prefix must match {_NAME.pattern}, got {prefix!r}")
    return {k: f"{prefix}_{k}" for k in ("reader", "worker", "admin")}


def roles_sql(database: str, prefix: str = "ser") -> list[str]:
    """The SQL statements that create the roles (if missing) and set their privileges, in order.

    Args:
        database: the database name (for ``GRANT CONNECT``).
        prefix: role name prefix.

    Returns:
        Statements without trailing semicolons; idempotent (safe to run again after an upgrade).

    Raises:
        ValueError: a bad prefix.
    """
    r = role_names(prefix)
    reader, worker, admin = r["reader"], r["worker"], r["admin"]
    db = '"' + database.replace('"', '""') + '"'
    # role names are checked against _NAME (lower-case identifiers) above, so they can be spliced in
    exists = "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{0}') THEN CREATE ROLE {0} NOLOGIN; END IF;"
    create = " ".join(exists.format(name) for name in r.values())
    tables = ", ".join(ALL_TABLES)
    return [
        f"DO $$ BEGIN {create} END $$",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {db} TO {reader}, {worker}, {admin}",
        f"GRANT USAGE ON SCHEMA public TO {reader}, {worker}, {admin}",
        f"GRANT CREATE ON SCHEMA public TO {admin}",
        *(f"ALTER TABLE {t} OWNER TO {admin}" for t in ALL_TABLES),
        f"REVOKE ALL ON {tables} FROM PUBLIC, {reader}, {worker}",
        f"GRANT SELECT ON {', '.join(READER_TABLES)} TO {reader}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(WORKER_WRITES)} TO {worker}",
        f"GRANT SELECT ON {', '.join(WORKER_READS)} TO {worker}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {worker}",
    ]


def apply_roles(url: str, prefix: str = "ser") -> list[str]:
    """Run :func:`roles_sql` on the PostgreSQL database ``url`` in one transaction.

    Returns:
        The statements run.

    Raises:
        ValueError: not PostgreSQL, a bad prefix, or a schema missing tables (run ``db upgrade`` first).
        sqlalchemy.exc.SQLAlchemyError: the server refused (e.g. the login lacks ``CREATEROLE``).
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from worker.storage.db import get_engine

    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise ValueError("database roles exist on PostgreSQL only (SQLite has no users: protect the file instead)")
    engine = get_engine(url)
    missing = sorted(set(ALL_TABLES) - set(inspect(engine).get_table_names()))
    if missing:
        raise ValueError(f"tables missing: {', '.join(missing)}; run `ser-batch db upgrade` first")
    statements = roles_sql(u.database or "postgres", prefix)
    with engine.begin() as conn:
        for stmt in statements:
            conn.exec_driver_sql(stmt)
    return statements
