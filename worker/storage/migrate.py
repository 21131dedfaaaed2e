"""Running the Alembic migrations from code (``ser-batch db upgrade`` and the embedded auto-upgrade)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

import migrations
from worker.storage.db import get_engine

if TYPE_CHECKING:  # Alembic is imported where a migration is looked at (about 0.1 s of every command)
    from alembic.config import Config

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)

HEAD_REVISION = "0010_status_counters"
"""The newest migration shipped with this version: a database stamped with it needs no Alembic at
start-up (:func:`ensure_schema`). ``tests/unit/test_migrations.py`` checks it is Alembic's head."""


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for the packaged migrations and database ``url`` (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["database_url"] = url
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this version (Alembic reads the scripts)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: head).

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    from alembic import command

    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` for empty)."""
    from alembic import command

    _run(url, command.downgrade, revision)


def _run(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command in one transaction on a connection of ``url``.

    On SQLite, foreign keys are switched off for the migration (and back on after it): a batch
    migration that changes a constraint rebuilds the table (copy, drop, rename), and dropping
    ``batches`` with foreign keys on would delete every ``results`` row through ON DELETE CASCADE.
    ``PRAGMA foreign_key_check`` must find nothing before the transaction commits.
    """
    cfg = alembic_config(url)
    with get_engine(url).connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: before BEGIN
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration to {revision} left broken foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def ensure_schema(url: str) -> bool:
    """Bring the embedded SQLite database up to head automatically; never touches other databases.

    Returns:
        True when a migration ran.

    Raises:
        RuntimeError: a non-SQLite database is behind head (run ``ser-batch db upgrade``).
    """
    if _stamped_revision(url) == HEAD_REVISION:
        return False  # the usual case, without importing Alembic
    head = head_revision()
    cur = current_revision(url)
    if cur == head:
        return False
    if make_url(url).get_backend_name() == "sqlite":
        upgrade(url)
        return True
    raise RuntimeError(
        f"the database is at revision {cur or 'empty'}, this ser-batch needs {head}: run `ser-batch db upgrade`"
    )


def _stamped_revision(url: str) -> str | None:
    """``alembic_version.version_num`` read with one query; None when it cannot be read (Alembic decides)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with get_engine(url).connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no such table (an empty database), or anything else: the full check follows
            return None
