"""What every ``ser-batch`` command shares: exit codes, the consoles, errors, settings and the engine.

Kept free of typer so that the modules behind the commands (:mod:`producer.submit`,
:mod:`producer.tables`, :mod:`producer.train_cmds`) can be imported without the command tree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 3
"""Exit codes: every file done; any other error; usage error; the batch finished with failed files."""

console = Console(emoji=False)
"""Results and summaries (stdout)."""
err = Console(stderr=True, emoji=False)
"""Progress, hints and errors (stderr), so stdout stays parseable."""


class CliError(Exception):
    """An error with a user-facing message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def cli_settings() -> Any:
    """The settings in force; a bad ``SER_*`` value is a usage error naming the variable."""
    from pydantic import ValidationError

    from worker.settings import get_settings

    try:
        return get_settings()
    except ValidationError as e:
        msgs = "; ".join(
            f"SER_{'_'.join(map(str, x['loc'])).upper()}: {_plain(x['msg'])}" if x["loc"] else _plain(x["msg"])
            for x in e.errors()
        )
        raise CliError(f"bad configuration: {msgs}", EXIT_USAGE) from None


def _plain(msg: str) -> str:
    """A pydantic message without its ``Value error, `` prefix (the validators' own words)."""
    return msg.removeprefix("Value error, ")


def open_engine(migrate: bool = True) -> Any:
    """The database engine, with the embedded SQLite schema brought to head."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker.storage.db import get_engine
    from worker.storage.migrate import ensure_schema

    s = cli_settings()
    try:
        eng = get_engine(s.database_url)
        if migrate:
            ensure_schema(s.database_url)
    except RuntimeError as e:
        raise CliError(str(e)) from None
    except SQLAlchemyError as e:
        from worker.urls import redact_url

        raise CliError(
            f"cannot open database {redact_url(s.database_url)}: {' '.join(str(e.orig or e).split())[:300]}"
        ) from None
    return eng


def storage_problem(e: BaseException) -> tuple[str, str] | None:
    """What a database error says about the database's storage, or None for any other error.

    SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full"), a file it may not
    write as ``SQLITE_READONLY`` and a write the operating system refused (a full disk on some file
    systems, a file size limit) as ``SQLITE_IOERR`` ("disk I/O error"); PostgreSQL as SQLSTATE 53100
    (disk full) and 25006 (read-only transaction). The error name is read when the driver gives it,
    else the message (an error that crossed a process boundary keeps only its text).

    Args:
        e: an exception, typically a :class:`sqlalchemy.exc.OperationalError` (its driver error in ``orig``).

    Returns:
        ``(what happened, what must change before trying again)``, or None.
    """
    orig = getattr(e, "orig", None) or e
    name = str(getattr(orig, "sqlite_errorname", "") or "")
    state = str(getattr(orig, "sqlstate", "") or "")
    text = str(orig).lower()
    if name.startswith("SQLITE_FULL") or state == "53100" or "database or disk is full" in text:
        return "the disk it is on is full", "there is space"
    if name.startswith("SQLITE_READONLY") or state == "25006" or "readonly database" in text:
        return (
            "it is read-only (no permission to write the file or its folder, or opened read-only)",
            "it can be written",
        )
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "the system refused a write (disk I/O error: a full disk, a file size limit or a failing disk)", (
            "the disk has space and works"
        )
    return None


def storage_error_message(e: BaseException, batch_id: int | None) -> str | None:
    """One line for a database that cannot be written: what happened, what is kept, what to do next.

    Args:
        e: the exception (see :func:`storage_problem`).
        batch_id: the batch being written, if one was recorded (named in ``submit --resume``).

    Returns:
        The message, or None when ``e`` is not a storage problem.
    """
    found = storage_problem(e)
    if found is None:
        return None
    from worker.urls import redact_url

    what, fix = found
    try:
        where = f" {redact_url(cli_settings().database_url)}"
    except CliError:
        where = ""
    kept = "nothing already written is lost (every row committed before the error is kept)"
    then = (
        f"once {fix}, finish with `ser-batch submit --resume {batch_id}`"
        if batch_id is not None
        else f"no batch was recorded by this command; once {fix}, run it again"
    )
    return f"cannot write to the database{where}: {what}; {kept}; {then}"


def resolve_model_option(name: str) -> str:
    """The registered version for ``--model NAME`` (a version, ``default`` or ``fast``).

    Raises:
        CliError: an empty name (``--model ""`` is a mistake, not the default), or no such model (usage
            errors).
    """
    from sqlalchemy.orm import Session

    from worker.storage.registry import RegistryError, resolve_version

    if not name.strip():
        raise CliError(
            "--model is empty: give a registered version (`ser-batch models list`) or a packaged model "
            "(default, fast), or leave the option out for the active model",
            EXIT_USAGE,
        )

    try:
        with Session(open_engine()) as session, session.begin():
            return resolve_version(session, name)
    except RegistryError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr; disabled with ``quiet`` or when stderr is not a terminal."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=False,
    )


def aware(dt: datetime | None) -> datetime | None:
    """``dt`` with UTC attached when the database returned it naive (SQLite)."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def print_interrupted(batch_id: int | None) -> None:
    """Ctrl-C: say what is kept and how to finish, naming the batch when there is one."""
    bid = "ID" if batch_id is None else str(batch_id)
    err.print(f"[yellow]interrupted[/]: rows already written are kept; finish with `ser-batch submit --resume {bid}`")
