"""Running the Alembic migrations from code (``ser-batch db upgrade`` and the embedded auto-upgrade)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

import migrations
from worker.db import get_engine

SCRIPT_LOCATION = str(Path(migrations.__file__).parent)


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for the packaged migrations and database ``url`` (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["database_url"] = url
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with this version."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None for an empty database)."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: head).

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` for empty)."""
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def ensure_schema(url: str) -> bool:
    """Bring the embedded SQLite database up to head automatically; never touches other databases.

    Returns:
        True when a migration ran.

    Raises:
        RuntimeError: a non-SQLite database is behind head (run ``ser-batch db upgrade``).
    """
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
