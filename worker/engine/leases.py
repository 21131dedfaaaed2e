"""Leases: which process is working on a row, for how long, and what happens when it dies.

A chunk's ``pending`` rows are leased to the process that runs it (``results.worker_id``,
``results.lease_expires_at`` = now + ``SER_LEASE_S``) in one statement (:func:`claim`); rows leased
to another live process, or already final, are skipped, so a redelivered or requeued chunk never
runs a file twice at once (on PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED``).
While the chunk runs, :class:`Heartbeat` renews the lease every ``SER_HEARTBEAT_S``; a process
that dies stops renewing, and the sweeper (:mod:`worker.celery_app.sweeper`) requeues its rows once
the lease has expired -- seconds, not the Redis visibility timeout. A lease owner id names its
process by host, PID and start time, so a dead owner is recognised on its own host
(:func:`expire_dead_local_leases`) even when its PID has been reused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from worker.settings import Settings
from worker.storage.db import Result, get_engine, utcnow

log = logging.getLogger(__name__)


def owner_id() -> str:
    """A new lease owner id: ``host:pid:start:random`` (one per chunk run, at most 128 characters).

    ``start`` is the process's start time (:func:`process_start`, empty where unknown), so a later
    process that happens to get the same PID is not mistaken for the owner
    (:func:`expire_dead_local_leases`).
    """
    start = process_start(os.getpid())
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{'' if start is None else start}:{uuid.uuid4().hex[:12]}"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (``/proc/PID/stat`` field 22), or None.

    None where there is no ``/proc`` (not Linux) or no such process. Together with the PID it names a
    process uniquely: PIDs are reused, quickly so in containers with a small PID space.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        # the command name (field 2) is in parentheses and may contain spaces: split after it
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def claim(batch_id: int, paths: Sequence[str], owner: str, *, lease_s: float, url: str | None = None) -> dict[str, int]:
    """Lease the claimable rows of ``paths`` to ``owner`` for ``lease_s`` seconds.

    A row is claimable when it is ``pending`` and not leased to a live owner (no lease, or an
    expired one). One statement, so two processes given the same chunk never both get a row.

    Returns:
        ``{path: attempts}`` of the rows now leased to ``owner`` (attempts before this run).
    """
    now = utcnow()
    engine = get_engine(url)
    cond = [
        Result.batch_id == batch_id,
        Result.path.in_(list(paths)),
        Result.status == "pending",
        or_(Result.lease_expires_at.is_(None), Result.lease_expires_at < now),
    ]
    with Session(engine) as s, s.begin():
        if engine.dialect.name == "postgresql":
            ids = select(Result.id).where(*cond).with_for_update(skip_locked=True).scalar_subquery()
            stmt = update(Result).where(Result.id.in_(ids))
        else:
            stmt = update(Result).where(*cond)
        stmt = stmt.values(worker_id=owner, lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
        rows = s.execute(stmt.returning(Result.path, Result.attempts)).all()
    return {p: n for p, n in rows}


def renew(batch_id: int, paths: Sequence[str], owner: str, *, lease_s: float, url: str | None = None) -> int:
    """Extend the lease of ``owner``'s still-pending rows of ``paths``; returns how many rows it holds."""
    now = utcnow()
    with Session(get_engine(url)) as s, s.begin():
        res = s.execute(
            update(Result)
            .where(
                Result.batch_id == batch_id,
                Result.path.in_(list(paths)),
                Result.worker_id == owner,
                Result.status == "pending",
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_s))
        )
        return int(res.rowcount or 0)


def release(batch_id: int, paths: Sequence[str], *, url: str | None = None) -> int:
    """Drop the leases of the pending rows of ``paths`` (their owner is known to be dead)."""
    with Session(get_engine(url)) as s, s.begin():
        res = s.execute(
            update(Result)
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.status == "pending")
            .values(worker_id=None, lease_expires_at=None)
        )
        return int(res.rowcount or 0)


def expire_leases_of(pids: Sequence[int], *, url: str | None = None) -> int:
    """End now the leases held by processes ``pids`` of this host (they were just terminated).

    The sweeper then requeues their rows at its next round instead of a lease later.

    Returns:
        Number of rows whose lease was ended.
    """
    if not pids:
        return 0
    host = socket.gethostname()[:80]
    owners = or_(*(Result.worker_id.like(f"{host}:{pid}:%") for pid in pids))
    with Session(get_engine(url)) as s, s.begin():
        res = s.execute(update(Result).where(Result.status == "pending", owners).values(lease_expires_at=utcnow()))
        return int(res.rowcount or 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def expire_dead_local_leases(batch_id: int, paths: Sequence[str], *, url: str | None = None) -> int:
    """End the leases on ``paths`` held by processes of this host that no longer exist.

    A pool process killed by the OOM killer or the hard time limit cannot renew its lease, and
    Celery redelivers its chunk at once (``task_reject_on_worker_lost``); without this the
    redelivery would find the rows leased and wait for the lease to run out. Owners on other hosts
    and live processes keep their leases; a dead owner's PID taken by a new process (this one
    included) does not keep it alive (:func:`_owner_dead`).

    Returns:
        Number of rows whose lease was ended.
    """
    host = socket.gethostname()[:80]
    with Session(get_engine(url)) as s:
        owners = set(
            s.scalars(
                select(Result.worker_id).where(
                    Result.batch_id == batch_id,
                    Result.path.in_(list(paths)),
                    Result.status == "pending",
                    Result.worker_id.like(f"{host}:%"),
                    Result.lease_expires_at >= utcnow(),
                )
            )
        )
    dead = [owner for owner in owners if _owner_dead(owner)]
    if not dead:
        return 0
    with Session(get_engine(url)) as s, s.begin():
        res = s.execute(
            update(Result)
            .where(Result.batch_id == batch_id, Result.status == "pending", Result.worker_id.in_(dead))
            .values(lease_expires_at=utcnow())
        )
        return int(res.rowcount or 0)


def _owner_dead(owner: str) -> bool:
    """Whether the local process named by lease owner ``owner`` (see :func:`owner_id`) is gone.

    An owner whose PID is running again, but with another start time, is a process that died and
    whose PID was reused, possibly by this very process; an owner id without a start time (written
    before it was recorded, or where it is unknown) is judged by its PID alone, never dead when the
    PID is this process's.
    """
    parts = owner.split(":")
    try:
        pid = int(parts[1])
    except (IndexError, ValueError):
        return False
    start = int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None
    if start is None:
        return pid != os.getpid() and not _pid_alive(pid)
    return not _pid_alive(pid) or process_start(pid) not in (start, None)


class Heartbeat:
    """Renews a lease every ``heartbeat_s`` seconds from a daemon thread while a chunk runs.

    Use as a context manager around the work; the thread stops on exit. A renewal that fails (the
    database briefly down) is logged and tried again at the next beat: the lease is long enough to
    ride out a few missed beats.
    """

    def __init__(self, batch_id: int, paths: Sequence[str], owner: str, settings: Settings, url: str | None) -> None:
        self.batch_id, self.paths, self.owner, self.url = batch_id, list(paths), owner, url
        self.lease_s, self.every_s = settings.lease_s, settings.heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-heartbeat-{batch_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if renew(self.batch_id, self.paths, self.owner, lease_s=self.lease_s, url=self.url) == 0:
                    return  # every row is final: nothing left to hold
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                log.warning("lease heartbeat of batch %s failed: %s", self.batch_id, e)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
