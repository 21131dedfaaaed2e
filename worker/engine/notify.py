"""Webhook: POST one JSON event when a batch is final (``submit --notify URL`` or ``SER_NOTIFY_URL``).

:func:`notify_batch_final` is called by whichever process finalises a batch -- the producer at the end
of an embedded ``submit`` or of ``submit --wait``, and the Celery task that writes a distributed
batch's last row -- and is a no-op for a batch without a webhook or with rows still pending. Exactly
one event is sent per batch, whoever gets there first: the sender claims it by inserting the row
``jobs.id = "notify-<batch id>"`` (a primary key, so the claim is atomic on SQLite and PostgreSQL), and
the same row records the delivery (``status`` done/failed, ``message``).

Delivery never blocks or fails the batch: it runs in a daemon thread with a short timeout, is
retried with exponential backoff on connection errors, timeouts, HTTP 429 and 5xx, and a final
failure is logged as a warning (the batch and its rows are untouched). The receiver gets the header
``Idempotency-Key: batch-<id>-final`` to drop a duplicate should one ever arrive.

With ``SER_NOTIFY_SECRET`` (``whsec_`` + base64 of the key) every POST is signed following the Standard
Webhooks specification (https://www.standardwebhooks.com/, the ``standardwebhooks`` package): headers
``webhook-id`` (the event id, the same on every retry), ``webhook-timestamp`` (Unix seconds of this
attempt) and ``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` with the
base64-decoded key), the body being the exact bytes sent. Without it requests are as before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from worker.urls import safe_url

log = logging.getLogger(__name__)

ATTEMPTS = 4
"""POST attempts per event (1 + 3 retries)."""
BACKOFF_S = 0.5
"""Wait before retry k is ``BACKOFF_S * 2**(k-1)`` seconds: 0.5, 1, 2."""
TIMEOUT_S = 5.0
"""Per-attempt HTTP timeout in seconds (connect 3 s)."""
CLI_WAIT_S = 30.0
"""How long a finishing CLI process waits for its delivery thread before it exits (it is a daemon)."""
EVENT = "batch.final"


def signed_headers(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one POST of ``body``.

    Args:
        secret: ``whsec_...`` (:func:`worker.urls.check_secret`).
        msg_id: ``webhook-id``: the event id, unchanged across retries of one event.
        body: the exact request body.
        now: Unix time of this attempt (default: now).

    Returns:
        ``webhook-id``, ``webhook-timestamp`` (integer seconds) and ``webhook-signature`` (``v1,<base64>``).
    """
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    ts = int(time.time() if now is None else now)
    sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def record_webhook(session: Any, batch: Any, url: str) -> None:
    """Store the webhook of a new batch: the URL in ``batch_webhooks``, ``scheme://host/…`` in its options.

    Args:
        session: open session in the transaction that records the batch.
        batch: the flushed ``worker.storage.db.Batch``.
        url: checked webhook URL (it may hold a token).
    """
    from worker.storage.db import BatchWebhook

    batch.options = {**(batch.options or {}), "notify_url": safe_url(url)}
    session.add(BatchWebhook(batch_id=batch.id, url=url))


def webhook_url(session: Any, batch_id: int) -> str | None:
    """The webhook URL of a batch (``batch_webhooks``), or None."""
    from worker.storage.db import BatchWebhook

    row = session.get(BatchWebhook, batch_id)
    return None if row is None else row.url


def build_event(session: Any, batch_id: int) -> dict[str, Any]:
    """The JSON event of a batch, counted from its result rows.

    Returns:
        ``{"event": "batch.final", "event_id", "batch_id", "status", "mode", "counts": {"total",
        "done", "failed", "low_confidence", "out_of_domain"}, "emotions": {emotion: files},
        "dimensions": {"n", "arousal_mean", "valence_mean", "high_arousal_share",
        "positive_valence_share"} (:func:`worker.engine.assess.dimension_summary`: the mean arousal
        and valence of the labelled rows that have them, and the share above 0.5),
        "model_version" (None when several), "model_versions", "created_at", "finished_at",
        "duration_s", "source_paths", "rescore_of"}``. ``status`` is ``done`` (no file failed),
        ``done_with_failures`` or ``failed`` (every file failed). Times are ISO 8601 UTC;
        ``duration_s`` runs from the batch's creation to its last row. A ``--channels split``
        batch's event also has ``"channels": "split"`` and ``"by_channel": [{"channel", "role",
        "done", "failed", "emotions": {emotion: rows}, "dimensions": {...}}]`` (counts are then rows: one per file
        and channel; ``channel`` None for mono files); a mix batch's event is unchanged.

    Raises:
        LookupError: no such batch.
    """
    from datetime import UTC

    from sqlalchemy import func, select

    from worker.engine.assess import dimension_summary, no_dimensions, trust_counts
    from worker.storage.db import Batch, Result, batch_counts

    batch = session.get(Batch, batch_id)
    if batch is None:
        raise LookupError(f"no batch {batch_id}")
    counts = batch_counts(session, batch_id)
    in_batch = Result.batch_id == batch_id
    emotions = dict(
        session.execute(
            select(Result.emotion, func.count())
            .where(in_batch, Result.status == "done")
            .group_by(Result.emotion)
            .order_by(func.count().desc(), Result.emotion)
        ).all()
    )
    trust = trust_counts(session, batch_id)  # labelled rows, as `status` counts them
    versions = sorted(
        v for v in session.scalars(select(Result.model_version).where(in_batch).distinct()) if v is not None
    )
    last = session.scalar(select(func.max(Result.finished_at)).where(in_batch))

    def aware(dt: Any) -> Any:
        return None if dt is None else dt if dt.tzinfo else dt.replace(tzinfo=UTC)

    created, finished = aware(batch.created_at), aware(batch.finished_at) or aware(last)
    if counts["failed"] == 0:
        status = "done"
    else:
        status = "failed" if counts["done"] == 0 else "done_with_failures"
    options = dict(batch.options or {})
    extra: dict[str, Any] = {}
    if options.get("channels") == "split":
        per: dict[tuple[Any, Any], dict[str, Any]] = {}
        dims_by_channel = dimension_summary(session, batch_id, per_channel=True)
        q = (
            select(Result.channel, Result.role, Result.status, Result.emotion, func.count())
            .where(in_batch)
            .group_by(Result.channel, Result.role, Result.status, Result.emotion)
        )
        for ch, role, st, emo, n in session.execute(q):
            rec = per.setdefault((ch, role), {"channel": ch, "role": role, "done": 0, "failed": 0, "emotions": {}})
            rec.setdefault("dimensions", dims_by_channel.get((ch, role)) or no_dimensions())
            if st in ("done", "failed"):
                rec[st] += int(n)
            if st == "done" and emo is not None:
                rec["emotions"][str(emo)] = rec["emotions"].get(str(emo), 0) + int(n)
        extra = {
            "channels": "split",
            "by_channel": sorted(per.values(), key=lambda r: (r["channel"] is not None, r["channel"] or 0)),
        }
    return {
        "event": EVENT,
        "event_id": f"batch-{batch_id}-final",
        "batch_id": batch_id,
        "status": status,
        "mode": batch.mode,
        "counts": {
            "total": counts["total"],
            "done": counts["done"],
            "failed": counts["failed"],
            "pending": counts["pending"],
            "low_confidence": trust["low_confidence"],
            "out_of_domain": trust["out_of_domain"],
        },
        "emotions": {str(k): int(v) for k, v in emotions.items()},
        "dimensions": dimension_summary(session, batch_id),
        "model_version": versions[0] if len(versions) == 1 else None,
        "model_versions": versions,
        "created_at": created.isoformat() if created else None,
        "finished_at": finished.isoformat() if finished else None,
        "duration_s": round((finished - created).total_seconds(), 3) if created and finished else None,
        "source_paths": list(batch.source_paths or []),
        "rescore_of": options.get("rescore_of"),
        **extra,
    }


def post_event(
    url: str,
    event: dict[str, Any],
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    timeout_s: float = TIMEOUT_S,
    secret: str | None = None,
) -> tuple[bool, str]:
    """POST ``event`` as JSON with retries; never raises.

    Retried: connection errors, timeouts, HTTP 429 and 5xx. Not retried: other 4xx (the receiver
    refuses this event; retrying cannot help). With ``secret`` every attempt is signed afresh
    (:func:`signed_headers`; same ``webhook-id``, new timestamp).

    Returns:
        ``(delivered, message)``: ``message`` is the HTTP status, or the last error.
    """
    import httpx

    headers = {
        "User-Agent": "ser-batch",
        "X-Ser-Event": str(event.get("event", EVENT)),
        "Idempotency-Key": str(event.get("event_id", "")),
    }
    message = "not sent"
    timeout = httpx.Timeout(timeout_s, connect=min(3.0, timeout_s))
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() if secret else None
    for k in range(1, attempts + 1):
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                if body is None:
                    r = client.post(url, json=event, headers=headers)
                else:
                    sig = signed_headers(secret, str(event.get("event_id", "")), body)  # type: ignore[arg-type]
                    r = client.post(url, content=body, headers={**headers, "Content-Type": "application/json", **sig})
            message = f"HTTP {r.status_code}"
            if r.is_success:
                return True, message
            if r.status_code != 429 and r.status_code < 500:
                return False, message
        except httpx.HTTPError as e:
            message = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        except Exception as e:  # noqa: BLE001 - a webhook must never take its caller down
            return False, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if k < attempts:
            time.sleep(backoff_s * 2 ** (k - 1))
    return False, f"{message} after {attempts} attempt(s)"


def _claim(session_factory: Any, batch_id: int, url: str) -> bool:
    """Insert the ``jobs`` row ``notify-<batch id>``; False when another process already did."""
    from sqlalchemy.exc import IntegrityError

    from worker.storage.db import Job

    try:
        with session_factory() as session, session.begin():
            session.add(Job(id=f"notify-{batch_id}", kind="notify", status="running", request={"url": safe_url(url)}))
        return True
    except IntegrityError:
        return False


def _deliver(url: str, event: dict[str, Any], engine: Any) -> None:
    from sqlalchemy.orm import Session

    from worker.settings import get_settings
    from worker.storage.db import Job

    try:
        secret = get_settings().notify_secret
    except Exception as e:  # noqa: BLE001 - a bad secret is reported, the batch is not failed
        log.warning("batch %s: webhook not sent: bad SER_NOTIFY_SECRET: %s", event["batch_id"], e)
        return
    ok, message = post_event(url, event, secret=secret)
    if ok:
        log.info("batch %s: webhook delivered to %s (%s)", event["batch_id"], safe_url(url), message)
    else:
        log.warning(
            "batch %s: webhook to %s failed: %s (the batch is complete; the event is not sent again)",
            event["batch_id"],
            safe_url(url),
            message,
        )
    try:
        with Session(engine) as session, session.begin():
            job = session.get(Job, f"notify-{event['batch_id']}")
            if job is not None:
                job.status, job.message, job.result = ("done" if ok else "failed"), message, {"delivered": ok}
    except Exception as e:  # noqa: BLE001 - the record of the delivery is best effort
        log.warning("batch %s: cannot record the webhook delivery: %s", event["batch_id"], e)


def notify_batch_final(
    batch_id: int, url: str | None = None, *, db_url: str | None = None, wait_s: float = 0.0
) -> threading.Thread | None:
    """Send the batch's webhook event if the batch is final, has a webhook and nobody sent it yet.

    Safe to call from every place a batch may end (it does nothing otherwise) and never raises:
    errors are logged as warnings.

    Args:
        batch_id: the batch.
        url: webhook URL; default the batch's (:func:`webhook_url`, recorded by ``submit --notify``
            or ``SER_NOTIFY_URL``).
        db_url: database URL; default the settings'.
        wait_s: wait up to this many seconds for the delivery (a CLI about to exit); 0 returns at once.

    Returns:
        The delivery thread (a daemon), or None when nothing is sent.
    """
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, batch_counts, get_engine

    try:
        engine = get_engine(db_url)
        with Session(engine) as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                return None
            url = url or webhook_url(session, batch_id)
            if not url or batch_counts(session, batch_id)["pending"]:
                return None
        if not _claim(lambda: Session(engine), batch_id, url):
            return None
        with Session(engine) as session:
            event = build_event(session, batch_id)
        t = threading.Thread(target=_deliver, args=(url, event, engine), name=f"notify-{batch_id}", daemon=True)
        t.start()
        if wait_s > 0:
            t.join(wait_s)
            if t.is_alive():
                log.warning("batch %s: webhook still being delivered after %.0f s; not waiting", batch_id, wait_s)
        return t
    except Exception as e:  # noqa: BLE001 - a webhook must never fail the batch
        log.warning("batch %s: webhook not sent: %s: %s", batch_id, type(e).__name__, e)
        return None
