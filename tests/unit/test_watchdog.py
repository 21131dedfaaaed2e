"""The consumer watchdog's rule and the Redis-restart consumer fix, without a broker."""

from __future__ import annotations

import pytest

from worker.celery_app.consumer import _keep_transport_client
from worker.celery_app.watchdog import StallDetector


def test_stall_needs_waiting_messages_an_idle_process_and_silence():
    d = StallDetector(stall_s=30)
    # the detector's clock starts at the real time.monotonic() (since boot): the fake clock starts with an
    # observation that resets it, or the first check would depend on the machine's uptime
    assert not d.observe(waiting=0, idle_processes=2, now=1000.0)  # nothing to take: fine
    assert not d.observe(waiting=5, idle_processes=1, now=1000.0)
    assert not d.observe(waiting=5, idle_processes=1, now=1029.0)
    assert d.observe(waiting=5, idle_processes=1, now=1031.0)  # 31 s with work waiting and a free process
    d.received()
    assert not d.observe(waiting=5, idle_processes=1)


def test_a_busy_worker_is_never_stalled():
    d = StallDetector(stall_s=30)
    assert not d.observe(waiting=100, idle_processes=0, now=0.0)
    assert not d.observe(waiting=100, idle_processes=0, now=500.0)
    assert not d.observe(waiting=100, idle_processes=1, now=501.0)  # the clock restarts when a slot frees


class _Transport:
    client: object | None = None


class _Connection:
    """Mimics kombu: collect()/close() detach the transport's client; close() then fails like kombu 5.7."""

    def __init__(self) -> None:
        self._transport = _Transport()
        self._transport.client = self

    def collect(self, socket_timeout=None):
        self._transport.client = None

    def close(self):
        if self._transport.client is None:
            raise AttributeError("'NoneType' object has no attribute 'hostname'")
        self._transport.client = None


def test_lost_connection_cleanup_keeps_the_transport_client_and_never_raises():
    conn = _Connection()
    with pytest.raises(AttributeError):  # what stopped Celery's consumer
        conn.collect()
        conn.close()
    conn = _Connection()
    transport = conn._transport
    _keep_transport_client(conn, transport, conn)
    conn.collect(socket_timeout=1)
    assert transport.client is conn
    conn.close()  # no AttributeError: the client is still there
    assert transport.client is conn  # late acks of the old channel still reach Redis
