"""Alembic environment: the URL comes from the ser-batch settings object (SER_DATABASE_URL).

A caller may pass an open connection in ``config.attributes["connection"]`` (used by
``worker.storage.migrate.upgrade``); otherwise an engine is made from the settings. ``render_as_batch``
lets ALTER-style migrations run on SQLite too.
"""

from alembic import context

from worker.storage.db import Base, get_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return url
    from worker.settings import get_settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with get_engine(_url()).connect() as connection:
        if connection.dialect.name == "sqlite":
            # table rebuilds must not cascade deletes (see worker.storage.migrate._run); before BEGIN
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
