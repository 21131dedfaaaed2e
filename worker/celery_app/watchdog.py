"""Last-resort watchdog: a worker that has stopped consuming exits, so its supervisor starts a fresh one.

:mod:`worker.celery_app.consumer` fixes the Redis-restart failure we found; this covers any other way a
consumer can go quiet while alive (celery/celery#8091 collects several). The rule: messages are
waiting in the ``classify`` queue, this worker has an idle pool process, and it has received no
task for ``SER_WATCHDOG_STALL_S`` seconds. A healthy worker in that situation takes a message within
milliseconds; a busy one (every process running a chunk) is never suspected.

Then it asks Celery for a warm shutdown with exit code :data:`EXIT_STALLED` (``state.should_stop``,
the flag Celery's own SIGTERM handler sets), and if the process is still alive a minute later it
exits hard. docker-compose's ``restart: unless-stopped`` or systemd's ``Restart=on-failure`` then
start a new worker; the leases of the chunks it held expire and the sweeper of another worker (or of
the new one) requeues them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

EXIT_STALLED = 70
"""Exit code of a worker the watchdog stopped (EX_SOFTWARE)."""


class StallDetector:
    """Decides from observations whether a consumer is stalled (pure logic, no threads)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._ok_since = time.monotonic()

    def received(self) -> None:
        """A task message reached this worker."""
        self._ok_since = time.monotonic()

    def observe(self, *, waiting: int, idle_processes: int, now: float | None = None) -> bool:
        """Record one observation; True when the worker counts as stalled.

        Args:
            waiting: messages waiting in the queue this worker consumes.
            idle_processes: pool processes without a task.
            now: ``time.monotonic()`` (for tests).
        """
        now = time.monotonic() if now is None else now
        if waiting <= 0 or idle_processes <= 0:
            self._ok_since = now
            return False
        return now - self._ok_since >= self.stall_s


class Watchdog:
    """Checks a :class:`StallDetector` every few seconds in a daemon thread of the worker's main process."""

    def __init__(
        self,
        *,
        stall_s: float,
        every_s: float,
        waiting: Callable[[], int],
        idle_processes: Callable[[], int],
        stop_worker: Callable[[int], None],
    ) -> None:
        self.detector = StallDetector(stall_s)
        self.every_s, self.waiting, self.idle_processes, self.stop_worker = (
            every_s,
            waiting,
            idle_processes,
            stop_worker,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ser-watchdog", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                stalled = self.detector.observe(waiting=self.waiting(), idle_processes=self.idle_processes())
            except Exception as e:  # noqa: BLE001 - the broker being away is not a stall of ours
                log.debug("watchdog: %s", e)
                self.detector.received()
                continue
            if stalled:
                log.critical(
                    "watchdog: messages are waiting and this worker has idle processes but received no task "
                    "for %.0f s: stopping (exit %d) so that its supervisor starts a fresh worker",
                    self.detector.stall_s,
                    EXIT_STALLED,
                )
                self.stop_worker(EXIT_STALLED)
                if not self._stop.wait(60):
                    os._exit(EXIT_STALLED)  # the warm shutdown did not finish: the main loop is wedged
                return

    def start(self) -> Watchdog:
        """Start the thread (returns self)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
