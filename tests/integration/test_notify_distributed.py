"""The batch webhook in distributed mode: real Redis, PostgreSQL and Celery worker; one event per batch."""

from __future__ import annotations

import time

import pytest
from services import ser_batch, wait_batch_finished

from tests.unit.test_notify import Hook

pytestmark = pytest.mark.integration


def _wait_events(hook: Hook, n: int, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and len(hook.events) < n:
        time.sleep(0.1)


def test_worker_sends_the_event_when_it_writes_the_last_row(broker_url, pg_url, recordings, env_for, start_workers):
    hook = Hook()
    try:
        env = env_for(pg_url, broker_url)
        start_workers(env, name="hookw", concurrency=2).wait_ready()
        folder = recordings(10)
        (folder / "broken.wav").write_bytes(b"not audio" * 20)
        p = ser_batch(["submit", str(folder), "--notify", hook.url, "--chunk-size", "3"], env)  # no --wait
        assert p.returncode == 0, p.stderr
        batch_id = int(p.stdout.strip().splitlines()[0])
        counts = wait_batch_finished(pg_url, batch_id)
        _wait_events(hook, 1)
        time.sleep(2.0)  # a second event, if any, would arrive now
        assert len(hook.events) == 1, hook.events
        ev = hook.events[0]
        assert ev["batch_id"] == batch_id and ev["mode"] == "distributed"
        assert ev["counts"]["done"] == counts["done"] == 10 and ev["counts"]["failed"] == counts["failed"] == 1
        assert ev["status"] == "done_with_failures" and sum(ev["emotions"].values()) == 10
        # `submit --wait` on the same broker: the producer and the worker both try; one event arrives
        p2 = ser_batch(["submit", str(folder), "--notify", hook.url, "--wait", "-q"], env, timeout_s=180)
        assert p2.returncode == 3, p2.stderr
        _wait_events(hook, 2)
        time.sleep(2.0)
        assert [e["batch_id"] for e in hook.events] == [batch_id, batch_id + 1]
    finally:
        hook.close()
