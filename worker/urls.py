"""URL and secret checks with no dependencies inside ser-batch: the bottom of :mod:`worker`.

What the settings, the webhook sender and the CLI all need: a database or broker URL with its
password hidden (:func:`redact_url`), a webhook URL cut to ``scheme://host/…`` (:func:`safe_url`,
its path and query often hold a token), and the checks of a webhook URL and of a Standard Webhooks
signing secret (:func:`check_url`, :func:`check_secret`).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url


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
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"not an http(s) URL: {safe_url(url)!r}")
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
