"""The batch webhook through the CLI: a local HTTP server receives exactly one event per batch; an
unreachable URL never fails the batch (a warning is logged)."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import RAVDESS, needs_corpus
from tests.unit.test_cli import no_traceback, run


class Hook:
    """A webhook receiver on 127.0.0.1: records every POST; answers ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.events: list[dict] = []
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests += 1
                if hook.requests <= fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                hook.events.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                hook.bodies.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ser?token=s3cret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def _folder(tmp_path: Path, n: int = 6) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    for f in sorted((RAVDESS / "Actor_09").glob("*.flac"))[::4][:n]:
        (d / f.name).symlink_to(f)
    (d / "broken.wav").write_bytes(b"no audio here" * 10)
    return d


def _db_counts(db: Path, batch: int) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT status, count(*) FROM results WHERE batch_id = ? GROUP BY status", (batch,))
        out = dict(rows.fetchall())
        emo = dict(
            con.execute(
                "SELECT emotion, count(*) FROM results WHERE batch_id = ? AND status = 'done' GROUP BY emotion",
                (batch,),
            ).fetchall()
        )
        low, ood = con.execute(
            "SELECT coalesce(sum(low_confidence = 1), 0), coalesce(sum(out_of_domain = 1), 0) FROM results "
            "WHERE batch_id = ? AND status = 'done'",
            (batch,),
        ).fetchone()
        return {
            "done": out.get("done", 0),
            "failed": out.get("failed", 0),
            "emotions": emo,
            "low_confidence": low,
            "out_of_domain": ood,
        }
    finally:
        con.close()


@needs_corpus
def test_submit_notify_posts_one_event_with_counts(tmp_path, hook):
    db = tmp_path / "ser.db"
    p = run(["submit", str(_folder(tmp_path)), "--notify", hook.url, "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr  # broken.wav failed; the batch still finished
    assert len(hook.events) == 1
    ev = hook.events[0]
    want = _db_counts(db, 1)
    assert ev["event"] == "batch.final" and ev["batch_id"] == 1 and ev["status"] == "done_with_failures"
    assert ev["counts"]["done"] == want["done"] == 6 and ev["counts"]["failed"] == want["failed"] == 1
    assert ev["counts"]["total"] == 7 and ev["counts"]["pending"] == 0
    # the flagged rows as stored (the model flags them; the event counts them, it does not decide)
    assert ev["counts"]["low_confidence"] == want["low_confidence"]
    assert ev["counts"]["out_of_domain"] == want["out_of_domain"]
    assert ev["emotions"] == want["emotions"]
    # arousal and valence of the 6 labelled files (the broken one has none): means in [0, 1]
    dims = ev["dimensions"]
    assert dims["n"] == 6 and 0 <= dims["arousal_mean"] <= 1 and 0 <= dims["valence_mean"] <= 1
    assert dims["high_arousal_share"] * 6 == round(dims["high_arousal_share"] * 6)
    assert ev["model_version"].startswith("default-") and ev["mode"] == "embedded"
    assert ev["duration_s"] is not None and ev["duration_s"] >= 0
    assert hook.headers[0]["Idempotency-Key"] == "batch-1-final"
    assert not any(k.lower().startswith("webhook-") for k in hook.headers[0])  # unsigned without a secret
    # the delivery is recorded, and the secret part of the URL is not
    con = sqlite3.connect(db)
    status, request = con.execute("SELECT status, request FROM jobs WHERE id = 'notify-1'").fetchone()
    con.close()
    assert status == "done" and "s3cret" not in request
    # the URL (its token) is kept out of `batches`, which query-only users read
    con = sqlite3.connect(db)
    (options,) = con.execute("SELECT options FROM batches WHERE id = 1").fetchone()
    (stored,) = con.execute("SELECT url FROM batch_webhooks WHERE batch_id = 1").fetchone()
    con.close()
    assert "s3cret" not in options and stored == hook.url
    # a second finaliser (the worker and `submit --wait` both call it) sends nothing more
    from worker.engine.notify import notify_batch_final

    assert notify_batch_final(1, db_url=f"sqlite:///{db}") is None
    assert len(hook.events) == 1


@needs_corpus
def test_ser_notify_url_setting_and_retry_after_503(tmp_path):
    hook = Hook(fail_first=2)
    try:
        db = tmp_path / "ser.db"
        folder = _folder(tmp_path, n=3)
        (folder / "broken.wav").unlink()
        p = run(["submit", str(folder), "-q"], db, SER_NOTIFY_URL=hook.url)
        assert p.returncode == 0, p.stderr
        assert hook.requests == 3  # two 503 answers, retried with backoff, then delivered
        assert len(hook.events) == 1 and hook.events[0]["status"] == "done"
        assert hook.events[0]["counts"]["done"] == 3
        cfg = run(["config"], db, SER_NOTIFY_URL=hook.url)
        assert "s3cret" not in cfg.stdout and "notify_url" in cfg.stdout
    finally:
        hook.close()


def test_unreachable_webhook_logs_a_warning_and_the_batch_completes(tmp_path):
    from tests.conftest import tone, write

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    folder = tmp_path / "rec"
    write(folder / "a.wav", tone(seconds=1.5), 16000)
    write(folder / "b.wav", tone(freq=180, seconds=1.2), 16000)
    db = tmp_path / "ser.db"
    p = run(["submit", str(folder), "--notify", f"http://127.0.0.1:{port}/hook", "-q"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "webhook to" in p.stderr and "failed" in p.stderr and "ConnectError" in p.stderr
    assert _db_counts(db, 1)["done"] == 2
    con = sqlite3.connect(db)
    status, message = con.execute("SELECT status, message FROM jobs WHERE id = 'notify-1'").fetchone()
    batch_status = con.execute("SELECT status FROM batches WHERE id = 1").fetchone()[0]
    con.close()
    assert status == "failed" and "4 attempt(s)" in message
    assert batch_status == "done"


def test_bad_notify_url_is_a_usage_error(tmp_path):
    from tests.conftest import tone, write

    write(tmp_path / "rec" / "a.wav", tone(seconds=1.0), 16000)
    p = run(["submit", str(tmp_path / "rec"), "--notify", "ftp://example.org/x"], tmp_path / "ser.db")
    no_traceback(p)
    assert p.returncode == 2 and "--notify" in p.stderr


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks specification's example secret


def _verify_per_spec(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """A receiver written from the specification alone (stdlib): HMAC-SHA256 of ``id.timestamp.body``."""
    import base64
    import hashlib
    import hmac

    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    if abs(now - int(ts)) > 300:  # the specification's replay tolerance (5 minutes)
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    want = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(v == "v1" and hmac.compare_digest(s, want) for v, _, s in (p.partition(",") for p in sigs.split(" ")))


@needs_corpus
def test_signed_webhook_verifies_per_standard_webhooks(tmp_path):
    import time

    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    hook = Hook(fail_first=1)  # the retry is signed afresh
    try:
        db = tmp_path / "ser.db"
        folder = _folder(tmp_path, n=2)
        p = run(["submit", str(folder), "--notify", hook.url, "-q"], db, SER_NOTIFY_SECRET=SECRET)
        no_traceback(p)
        assert p.returncode == 3, p.stderr
        assert hook.requests == 2 and len(hook.events) == 1
        headers, body = hook.headers[0], hook.bodies[0]
        assert headers["webhook-id"] == "batch-1-final" and headers["webhook-signature"].startswith("v1,")
        assert headers["Content-Type"] == "application/json"
        assert _verify_per_spec(SECRET, headers, body, time.time())
        assert Webhook(SECRET).verify(body, headers)["batch_id"] == 1  # the specification's library agrees
        tampered = body.replace(b'"batch_id":1', b'"batch_id":2')
        assert tampered != body and not _verify_per_spec(SECRET, headers, tampered, time.time())
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(body, headers)  # another secret
        cfg = run(["config"], db, SER_NOTIFY_SECRET=SECRET)
        assert cfg.returncode == 0 and SECRET.removeprefix("whsec_") not in cfg.stdout + cfg.stderr
    finally:
        hook.close()


def test_bad_notify_secret_is_a_usage_error(tmp_path):
    for bad in ("s3cret", "whsec_not base64!", "whsec_AAAA"):
        p = run(["config"], tmp_path / "ser.db", SER_NOTIFY_SECRET=bad)
        no_traceback(p)
        assert p.returncode == 2 and "SER_NOTIFY_SECRET" in p.stderr, p.stderr
        assert bad.removeprefix("whsec_") not in p.stderr or bad == "whsec_AAAA"
