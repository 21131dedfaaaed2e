"""URL and secret checks with no dependencies inside ser-batch: the bottom of :mod:`worker`.

What the settings, the webhook sender and the CLI all need: a database or broker URL with its
password hidden (:func:`redact_url`), a webhook URL cut to ``scheme://host/…`` (:func:`safe_url`,
its path and query often hold a token), and the checks of a webhook URL and of a Standard Webhooks
signing secret (:func:`check_url`, :func:`check_secret`), and the forms of database and broker URL
ser-batch can use (:func:`check_database_url`, :func:`check_broker_url`), so that a wrong one is a
configuration error before anything is written.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

DATABASE_FORMS = "sqlite:///PATH (SQLite) or postgresql+psycopg://USER:PASSWORD@HOST[:PORT]/DB (PostgreSQL via psycopg)"
"""The database URLs ser-batch works with, as the error messages name them."""
DATABASE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite", "postgresql+psycopg"})
"""SQLAlchemy drivernames of :data:`DATABASE_FORMS` (psycopg 3 is the PostgreSQL driver installed with ser-batch)."""
BROKER_FORMS = "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (Redis over TLS) or redis+socket:///PATH"
"""The broker URLs ser-batch works with (Celery on Redis), as the error messages name them."""
BROKER_SCHEMES = frozenset({"redis", "rediss", "redis+socket"})


def check_database_url(url: str) -> str:
    """Validate a results-database URL: SQLite, or PostgreSQL through psycopg (3).

    Args:
        url: a SQLAlchemy URL, e.g. ``sqlite:///ser.db`` or ``postgresql+psycopg://u:p@host/db``.

    Returns:
        ``url`` unchanged.

    Raises:
        ValueError: not a URL, or another database or driver (``mysql://...``, ``postgresql://...``,
            whose default driver psycopg2 is not installed); the message names the accepted forms and
            never repeats a password.
    """
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - any parse failure is a bad setting
        raise ValueError(f"not a database URL: {_shown(url)!r}; use {DATABASE_FORMS}") from None
    if u.drivername not in DATABASE_DRIVERS:
        why = (
            "needs a PostgreSQL driver ser-batch does not install"
            if u.get_backend_name() == "postgresql"
            else "is not a supported database"
        )
        raise ValueError(f"{u.drivername}:// {why}; use {DATABASE_FORMS}")
    return url


def check_broker_url(url: str) -> str:
    """Validate a Celery broker URL: Redis (``redis://``, ``rediss://``, ``redis+socket://``).

    Args:
        url: the broker URL, e.g. ``redis://localhost:6379/0``.

    Returns:
        ``url`` unchanged.

    Raises:
        ValueError: no scheme (``garbage``, ``localhost:6379``) or another one; the message names the
            accepted forms and never repeats a password.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not a URL (no scheme): {_shown(url)!r}; use {BROKER_FORMS}")
    if scheme.lower() not in BROKER_SCHEMES:
        raise ValueError(f"{scheme}:// is not supported (ser-batch queues on Redis); use {BROKER_FORMS}")
    return url


def _shown(text: str) -> str:
    """A setting that is not a URL, as an error message may repeat it: whatever precedes an ``@`` hidden."""
    return f"***@{text.rsplit('@', 1)[1]}" if "@" in text else text


def redact_url(url: str) -> str:
    """``scheme://user:***@host/db`` for a URL with a password; other URLs unchanged."""
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001
        return url
    if u.password:
        return u.render_as_string(hide_password=True)
    return url


def safe_url(url: str) -> str:
    """``scheme://host[:port]/…``: a webhook URL without its path and query, which often hold a secret token."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}/…" if u.scheme else "<invalid URL>"


def check_url(url: str) -> str:
    """Validate a webhook URL (http or https with a host).

    Raises:
        ValueError: anything else.
    """
    try:
        u = urlsplit(url)
        ok = u.scheme in ("http", "https") and bool(u.hostname)
    except ValueError:
        ok = False
    if not ok:
        shown = safe_url(url)
        given = f"{shown!r}" if shown != "<invalid URL>" else "the value given (not repeated: it may hold a token)"
        raise ValueError(f"{given} is not an http(s) URL with a host, e.g. https://hooks.example.com/ser")
    return url


def check_secret(secret: str) -> bytes:
    """Validate a Standard Webhooks secret: ``whsec_`` + base64 of 24 to 64 bytes.

    Returns:
        The key bytes.

    Raises:
        ValueError: another form (the message never repeats the secret).
    """
    if not secret.startswith("whsec_"):
        raise ValueError("must start with 'whsec_' (Standard Webhooks secret: whsec_ + base64 of 24-64 bytes)")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key is {len(key)} bytes; use 24 to 64 random bytes")
    return key
