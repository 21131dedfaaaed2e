"""The batch engine: how a chunk of a batch is run, by the Celery task and by embedded ``submit`` alike.

:func:`run_chunk` is the one way a chunk is labelled:

1. **Claim.** The chunk's ``pending`` rows are leased to this process (``results.worker_id``,
   ``results.lease_expires_at`` = now + ``SER_LEASE_S``) in one statement; rows leased to another
   live process, or already final, are skipped (a redelivered or requeued chunk never runs a file
   twice at once). On PostgreSQL the rows are picked with ``FOR UPDATE SKIP LOCKED``.
2. **Heartbeat.** While the chunk runs, a thread renews the lease every ``SER_HEARTBEAT_S``; a
   process that dies stops renewing, and the sweeper (:mod:`worker.sweeper`) requeues its rows once
   the lease has expired — seconds, not the Redis visibility timeout.
3. **Attempts and give-up.** Every start of a file counts in ``results.attempts``. A chunk with a
   file started before (a redelivery) runs one file at a time, so a file that kills its process
   takes only itself down; a file started :data:`MAX_ATTEMPTS` times is ``failed`` with the reason.
4. **Time limits.** Celery's soft time limit keeps the files finished so far and fails the rest
   with :data:`TIME_LIMIT_REASON`.
5. **Speaker-adaptive finishing** (``submit --speaker-from``): featurised files whose speaker is
   complete are classified together (:func:`worker.processing.classify_ready_speakers`).
6. **Finalisation.** The transaction that writes the last pending row of a batch also sets the
   batch's status, counts and ``finished_at`` (:func:`finalise_batch`), so ``batches`` never shows
   ``running`` for a finished batch, in either mode.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from worker import processing
from worker.assess import assess_batch
from worker.db import FINAL_BATCH_STATUSES, Batch, Result, get_engine, utcnow
from worker.registry import LoadedModel, RegistryError, load_model
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Starts of a file after which a redelivered chunk marks it failed instead of trying again."""

TIME_LIMIT_REASON = (
    "time limit exceeded (SER_TASK_SOFT_TIME_LIMIT_S); the file may be too long or the worker overloaded"
)
GIVEN_UP_REASON = "worker process died {n} times while processing this file (killed, out of memory, or hard time limit)"


# ------------------------------------------------------------------------------------ finalisation


@dataclass(frozen=True)
class BatchFinal:
    """A batch as it was finalised: final status, counts and when."""

    batch_id: int
    status: str
    n_done: int
    n_failed: int
    finished_at: datetime


def finalise_batch(session: Session, batch_id: int) -> BatchFinal | None:
    """Finalise batch ``batch_id`` when none of its rows is pending; call it in the transaction that wrote rows.

    Sets ``status`` (``done``, or ``done_with_failures`` when some row failed), ``n_done``,
    ``n_failed``, ``finished_at`` and ``warnings`` (:func:`worker.assess.assess_batch`) in the caller's transaction, so the batch record and its last
    row are committed together. The batch row is locked first (PostgreSQL ``FOR NO KEY UPDATE``,
    which does not conflict with the foreign-key checks of concurrent row inserts), and the pending
    rows are counted after the lock: of two transactions writing a batch's last rows at once, the
    second to take the lock sees the first's rows and finalises. SQLite serialises writers anyway.

    Args:
        session: open session inside a transaction that has written rows of the batch.
        batch_id: the batch.

    Returns:
        The final record when this call finalised the batch; None when rows are still pending, the
        batch does not exist, or it was already final (counts are then refreshed, status kept).
    """
    batch = session.scalars(select(Batch).where(Batch.id == batch_id).with_for_update(key_share=True)).one_or_none()
    if batch is None:
        return None
    # called in every chunk's transaction: while rows are pending (nearly always) one index seek on
    # ix_results_pending answers, instead of counting the whole batch per chunk (O(rows) each time)
    if session.scalar(select(Result.id).where(Result.batch_id == batch_id, Result.status == "pending").limit(1)):
        return None
    counts = dict(
        session.execute(
            select(Result.status, func.count()).where(Result.batch_id == batch_id).group_by(Result.status)
        ).all()
    )
    if counts.get("pending", 0):
        return None
    n_done, n_failed = counts.get("done", 0), counts.get("failed", 0)
    already = batch.status in FINAL_BATCH_STATUSES
    batch.n_done, batch.n_failed = n_done, n_failed
    if already:
        return None
    batch.status = "done_with_failures" if n_failed else "done"
    batch.finished_at = utcnow()
    assess_batch(session, batch_id)  # batches.warnings, in the same transaction
    session.flush()
    log.info("batch %s finalised: %s (%d done, %d failed)", batch_id, batch.status, n_done, n_failed)
    return BatchFinal(batch_id, batch.status, n_done, n_failed, batch.finished_at)


def finalise_if_complete(batch_id: int, *, url: str | None = None) -> BatchFinal | None:
    """:func:`finalise_batch` in a transaction of its own (for the sweeper and the producer)."""
    with Session(get_engine(url)) as session, session.begin():
        return finalise_batch(session, batch_id)


# ------------------------------------------------------------------------------------ leases


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


# ------------------------------------------------------------------------------------ the chunk


def _count_start(batch_id: int, paths: Sequence[str], *, url: str | None) -> None:
    """Add one to ``attempts`` of the still-pending rows of ``paths``."""
    with Session(get_engine(url)) as s, s.begin():
        s.execute(
            update(Result)
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.status == "pending")
            .values(attempts=Result.attempts + 1)
        )


def _row_states(batch_id: int, paths: Sequence[str], *, url: str | None) -> dict[str, str]:
    with Session(get_engine(url)) as s:
        q = select(Result.path, Result.status).where(Result.batch_id == batch_id, Result.path.in_(list(paths)))
        return dict(s.execute(q).all())


def fail_pending(
    batch_id: int, paths: Sequence[str], reason: str, model_version: str | None = None, *, url: str | None = None
) -> int:
    """Mark those of ``paths`` whose rows are still ``pending`` (or missing) as ``failed`` with ``reason``.

    Rows already ``done`` or ``failed`` are left alone. In a speaker-adaptive batch a featurised
    file waiting for its speaker is not failed (its speaker's files are then classified instead).
    The write finalises the batch when it was the last pending work (:func:`finalise_batch`).

    Args:
        batch_id: the batch.
        paths: candidate files.
        reason: one-line message stored in ``results.error``.
        model_version: recorded on the failed rows.
        url: database URL (default: settings).

    Returns:
        Number of rows marked failed.
    """
    states = _row_states(batch_id, paths, url=url)
    todo = [p for p in paths if states.get(p, "pending") == "pending"]
    by_speaker = processing.group_mode(processing.batch_options(batch_id, url=url)) is not None
    if by_speaker and todo:
        with Session(get_engine(url)) as s:
            ready = set(
                s.scalars(
                    select(Result.path).where(
                        Result.batch_id == batch_id, Result.path.in_(todo), Result.features.is_not(None)
                    )
                )
            )
        todo = [p for p in todo if p not in ready]
    now = utcnow()
    rows = [
        {"path": p, "status": "failed", "error": reason, "model_version": model_version, "finished_at": now}
        for p in todo
    ]
    processing.store_rows(batch_id, rows, url=url)
    if by_speaker and rows:
        # the speakers of these files may now have every other file featurised: classify them
        try:
            processing.classify_ready_speakers(batch_id, todo, load_model(model_version, url=url), url=url)
        except RegistryError:
            pass  # no usable model: those files fail with that reason through their own chunks
    return len(rows)


def run_chunk(
    batch_id: int,
    paths: Sequence[str],
    *,
    model_version: str | None = None,
    url: str | None = None,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Label a chunk of files of batch ``batch_id``: claim, heartbeat, attempts, time limit, rows.

    Args:
        batch_id: the batch (its pending rows were committed before the chunk was handed out).
        paths: files of the batch, as stored in its rows.
        model_version: registered model to use (None: the active one).
        url: database URL (default: settings).
        settings: leases and limits (default: the settings in force).

    Returns:
        ``{"done": n, "failed": n, "skipped": n}`` for this run; skipped files were final already or
        leased to another live process.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable (transient; the caller retries
            the chunk, whose rows are still claimable once the lease has expired).
    """
    s = settings or get_settings()
    owner = owner_id()
    claimed = claim(batch_id, paths, owner, lease_s=s.lease_s, url=url)
    rest = [p for p in paths if p not in claimed]
    if rest:  # a killed pool process's chunk, redelivered: end its dead owner's lease, then claim again
        expire_dead_local_leases(batch_id, rest, url=url)
        # again even when this process ended no lease: another one may just have ended the same
        # dead owner's leases (on all of its rows), between the first claim and the check above
        claimed |= claim(batch_id, rest, owner, lease_s=s.lease_s, url=url)
    todo = [p for p in paths if p in claimed]
    counts = {"done": 0, "failed": 0, "skipped": len(paths) - len(todo)}
    if not todo:
        return counts
    with Heartbeat(batch_id, todo, owner, s, url):
        try:
            if all(claimed[p] == 0 for p in todo):
                _count_start(batch_id, todo, url=url)
                c = processing.process_paths(batch_id, todo, model_version=model_version, url=url)
                counts["done"] += c["done"]
                counts["failed"] += c["failed"]
            else:
                # One file at a time, each row written at once: a file that kills the process only
                # takes itself down, and its attempts count up to MAX_ATTEMPTS.
                log.warning("batch %s: redelivered chunk of %d file(s), processing one by one", batch_id, len(todo))
                for p in todo:
                    if claimed[p] >= MAX_ATTEMPTS:
                        reason = GIVEN_UP_REASON.format(n=claimed[p])
                        counts["failed"] += fail_pending(batch_id, [p], reason, model_version, url=url)
                        continue
                    _count_start(batch_id, [p], url=url)
                    c = processing.process_paths(batch_id, [p], model_version=model_version, url=url)
                    counts["done"] += c["done"]
                    counts["failed"] += c["failed"]
        except SoftTimeLimitExceeded:
            n = fail_pending(batch_id, todo, TIME_LIMIT_REASON, model_version, url=url)
            log.warning("batch %s: soft time limit hit, %d file(s) marked failed", batch_id, n)
            final = list(_row_states(batch_id, todo, url=url).values())
            counts.update(done=final.count("done"), failed=final.count("failed"))
        except RegistryError as e:
            # No usable model: every file of the chunk fails with the reason (a retry cannot help).
            counts["failed"] += fail_pending(batch_id, todo, f"no usable model: {e}", model_version, url=url)
    return counts


def finish_batch_locally(batch_id: int, model: LoadedModel, *, url: str | None = None) -> BatchFinal | None:
    """End of an embedded run: classify featurised files still waiting for their speaker, then finalise.

    Speaker-adaptive batches only have such files when a speaker's last file failed after the
    others were featurised (each chunk classifies the speakers it completes). Finalisation normally
    happened with the last row; this makes sure of it.
    """
    with Session(get_engine(url)) as session:
        waiting = list(
            session.scalars(
                select(Result.path).where(
                    Result.batch_id == batch_id, Result.status == "pending", Result.features.is_not(None)
                )
            )
        )
    if waiting:
        processing.classify_ready_speakers(batch_id, waiting, model, url=url)
    return finalise_if_complete(batch_id, url=url)


def pending_path_pages(batch_id: int, *, url: str | None = None, page_rows: int = 10_000) -> Iterator[list[str]]:
    """Paths of the batch's ``pending`` rows in submission order, ``page_rows`` at a time.

    Keyset pages (``id > last id ... ORDER BY id LIMIT page_rows``, an index range on
    ``ix_results_pending``), each read in a short transaction of its own: a batch of millions of
    pending files is never held at once, and no read stays open while the caller's processes write
    the rows (on SQLite a long reader would keep the WAL from being checkpointed). Rows that stop
    being pending while the pages are read are simply not returned.
    """
    last = -1
    while True:
        with get_engine(url).connect() as conn:
            page = conn.execute(
                select(Result.id, Result.path)
                .where(Result.batch_id == batch_id, Result.status == "pending", Result.id > last)
                .order_by(Result.id)
                .limit(page_rows)
            ).all()
        if not page:
            return
        last = page[-1][0]
        yield [p for _, p in page]
        if len(page) < page_rows:
            return
