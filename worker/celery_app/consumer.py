"""A Celery consumer that survives a Redis restart (``worker_consumer`` in :mod:`worker.celery_app.config`).

**The failure.** Redis SIGKILLed mid-batch, back 3 s later: in some runs the worker logged
``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")`` right after
``Restoring 1 unacknowledged message(s)`` and never consumed again (celery 5.7.0, kombu 5.7.0; the
symptom reported in celery/celery#8091, #9054). Read from their source:

1. On a lost connection, :meth:`celery.worker.consumer.Consumer.on_connection_error_after_connected`
   calls ``connection.collect()`` and then ``connection.close()`` on the broken connection.
2. kombu's Redis transport has no ``_collect``, so :meth:`kombu.Connection.collect` closes the
   default channel, then detaches the transport (``transport.client = None``) whatever happened.
   Closing a Redis channel that is waiting for a BRPOP reply first reads that reply; with Redis down
   this raises a connection error *before* the channel is marked closed, so the channel stays open.
3. ``connection.close()`` then closes that channel again. It restores the channel's unacknowledged
   messages (acks_late tasks were running), which needs a new Redis connection pool, whose
   parameters come from ``transport.client`` — now None. The ``AttributeError`` is not a connection
   error, so it escapes Celery's ``ignore_errors`` and stops the consumer. A task that finished
   during the outage fails the same way when its acknowledgement goes through the old channel.

**The fix.** For the duration of that clean-up, and afterwards for the old channel's pending
acknowledgements, the old transport keeps its client: the restore and the late acknowledgements
then meet Redis itself — a connection error while it is down (which Celery handles: the message
stays unacknowledged in Redis and the lease sweeper requeues its rows), success once it is back
(the unacknowledged messages go back to the queue at once). Nothing else of Celery's reconnect
logic is changed. No configuration switch avoids the path: it needs only acks_late tasks and a
pending BRPOP, which is every busy worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

log = logging.getLogger(__name__)


class ResilientConsumer(Consumer):
    """:class:`celery.worker.consumer.Consumer` whose broken-connection clean-up cannot stop it."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Celery's clean-up of a lost connection, with the old transport kept attached to its client.

        Celery then terminates the running acks_late tasks
        (``worker_cancel_long_running_tasks_on_connection_loss``); their rows' leases are ended at
        once, so the sweeper requeues those chunks at its next round rather than a lease later.
        """
        conn: Any = self.connection
        transport = getattr(conn, "_transport", None) if conn is not None else None
        client = getattr(transport, "client", None)
        if conn is not None and transport is not None and client is not None:
            _keep_transport_client(conn, transport, client)
        cancelled = _cancelled_pids(self.app)
        super().on_connection_error_after_connected(exc)
        if transport is not None and client is not None:
            transport.client = client  # late acks of the old channel's messages still reach Redis
        if cancelled:
            try:
                from worker.engine.leases import expire_leases_of

                n = expire_leases_of(cancelled)
                log.info(
                    "ended the leases of %d row(s) of the %d task(s) cancelled by the lost connection",
                    n,
                    len(cancelled),
                )
            except Exception as e:  # noqa: BLE001 - the leases then simply run out
                log.warning("could not end the leases of cancelled tasks: %s", e)


def _cancelled_pids(app: Any) -> list[int]:
    """Pool process ids of the tasks Celery cancels on a lost connection (acks_late, not yet acknowledged)."""
    if not app.conf.worker_cancel_long_running_tasks_on_connection_loss:
        return []
    from celery.worker.state import active_requests

    return [
        r.worker_pid
        for r in tuple(active_requests)
        if r.task.acks_late and not r.acknowledged and r.worker_pid is not None
    ]


def _keep_transport_client(conn: Any, transport: Any, client: Any) -> None:
    """Make ``conn.collect()``/``conn.close()`` leave ``transport.client`` set and never raise."""
    collect, close = conn.collect, conn.close

    def collect_keeping_client(*args: Any, **kwargs: Any) -> None:
        try:
            collect(*args, **kwargs)
        finally:
            transport.client = client

    def close_keeping_client() -> None:
        try:
            close()
        except Exception as e:  # noqa: BLE001 - clean-up of a dead connection must not stop the consumer
            log.warning("closing the lost broker connection: %s: %s", type(e).__name__, e)
        finally:
            transport.client = client

    conn.collect, conn.close = collect_keeping_client, close_keeping_client
