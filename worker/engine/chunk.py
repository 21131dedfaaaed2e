"""The batch engine's one route for a chunk of files, run by the Celery task and by embedded ``submit`` alike.

:func:`run_chunk` reads top to bottom as the steps every chunk goes through:

1. **Claim** the chunk's ``pending`` rows: lease them to this process (:mod:`worker.engine.leases`);
   rows final already or leased to another live process are skipped. A heartbeat renews the lease
   while the chunk runs.
2. **Process the files**: decode, featurise, classify each (:func:`worker.engine.analyse.analyse_path`).
   Every start of a file counts in ``results.attempts``; a chunk with a file started before (a
   redelivery) runs one file at a time, so a file that kills its process takes only itself down, and
   a file started :data:`MAX_ATTEMPTS` times is ``failed`` with the reason.
3. **Store the rows** (:func:`worker.engine.rows.store_rows`), the files finished before a time limit
   included; Celery's soft time limit fails the rest with :data:`TIME_LIMIT_REASON`.
4. **Classify ready speakers** (``--speaker-from``, ``--normalise batch``): groups whose files all
   have features now are classified together (:func:`worker.engine.rows.classify_ready_speakers`).
5. **Finalise**: the transaction that writes the batch's last pending row (step 3 or 4) also sets
   its status, counts and ``finished_at`` (:func:`worker.engine.finalise.finalise_batch`).

No Celery import: the Celery task (:mod:`worker.celery_app.tasks`) and the processes of embedded
``submit`` (:mod:`producer.embedded`) both call :func:`run_chunk`. The one thing taken from Celery's
world is billiard's ``SoftTimeLimitExceeded``, the exception a pool process raises in the running
code when the soft time limit passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.engine.analyse import AnalysisPlan, analyse_path, group_mode
from worker.engine.finalise import BatchFinal, finalise_if_complete
from worker.engine.leases import Heartbeat, claim, expire_dead_local_leases, owner_id
from worker.engine.rows import batch_options, classify_ready_speakers, row_counts, row_states, store_rows
from worker.settings import Settings, get_settings
from worker.storage.db import Result, get_engine, utcnow
from worker.storage.registry import LoadedModel, RegistryError, load_model

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Starts of a file after which a redelivered chunk marks it failed instead of trying again."""

TIME_LIMIT_REASON = (
    "time limit exceeded (SER_TASK_SOFT_TIME_LIMIT_S); the file may be too long or the worker overloaded"
)
GIVEN_UP_REASON = "worker process died {n} times while processing this file (killed, out of memory, or hard time limit)"


def run_chunk(
    batch_id: int,
    paths: Sequence[str],
    *,
    model_version: str | None = None,
    url: str | None = None,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Label a chunk of files of batch ``batch_id``: claim, process, store, classify ready speakers, finalise.

    Args:
        batch_id: the batch (its pending rows were committed before the chunk was handed out).
        paths: files of the batch, as stored in its rows.
        model_version: registered model to use (None: the active one, re-read at every chunk, so a
            newly activated model is used from the next chunk on).
        url: database URL (default: settings).
        settings: leases and limits (default: the settings in force).

    Returns:
        ``{"done": n, "failed": n, "skipped": n}`` for this run: final rows of the claimed files (a
        split file counts per channel; files waiting for their speaker count in neither), and files
        skipped because they were final already or leased to another live process.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable (transient; the caller retries
            the chunk, whose rows are still claimable once the lease has expired).
    """
    s = settings or get_settings()
    owner = owner_id()
    claimed = _claim(batch_id, paths, owner, s, url)  # 1. claim: {path: starts before this run}
    todo = [p for p in paths if p in claimed]
    counts = {"done": 0, "failed": 0, "skipped": len(paths) - len(todo)}
    if not todo:
        return counts
    with Heartbeat(batch_id, todo, owner, s, url):
        try:
            model = load_model(model_version, url=url)
            plan = AnalysisPlan.of(batch_options(batch_id, url=url))
            for run in _runs(todo, claimed):
                if len(run) == 1 and claimed[run[0]] >= MAX_ATTEMPTS:
                    fail_pending(batch_id, run, GIVEN_UP_REASON.format(n=claimed[run[0]]), model_version, url=url)
                    continue
                _count_start(batch_id, run, url=url)
                rows: list[dict] = []
                try:
                    for path in run:
                        rows.extend(analyse_path(path, model, plan))  # 2. process the files
                finally:
                    store_rows(batch_id, rows, url=url)  # 3. store the rows (5. finalise with the last)
                if plan.group_mode is not None:
                    classify_ready_speakers(batch_id, run, model, url=url)  # 4. (5. finalise with the last)
        except SoftTimeLimitExceeded:
            n = fail_pending(batch_id, todo, TIME_LIMIT_REASON, model_version, url=url)
            log.warning("batch %s: soft time limit hit, %d file(s) marked failed", batch_id, n)
        except RegistryError as e:
            # No usable model: every file of the chunk fails with the reason (a retry cannot help).
            fail_pending(batch_id, todo, f"no usable model: {e}", model_version, url=url)
    return counts | row_counts(batch_id, todo, url=url)


def _claim(batch_id: int, paths: Sequence[str], owner: str, s: Settings, url: str | None) -> dict[str, int]:
    """Lease the claimable rows of ``paths``; a dead local owner's leases (a killed pool process) are ended first."""
    claimed = claim(batch_id, paths, owner, lease_s=s.lease_s, url=url)
    rest = [p for p in paths if p not in claimed]
    if rest:  # a killed pool process's chunk, redelivered: end its dead owner's lease, then claim again
        expire_dead_local_leases(batch_id, rest, url=url)
        # again even when this process ended no lease: another one may just have ended the same
        # dead owner's leases (on all of its rows), between the first claim and the check above
        claimed |= claim(batch_id, rest, owner, lease_s=s.lease_s, url=url)
    return claimed


def _runs(todo: list[str], claimed: dict[str, int]) -> Iterator[list[str]]:
    """The chunk as one run; after a redelivery (a file was started before) one file at a time."""
    if all(claimed[p] == 0 for p in todo):
        yield todo
        return
    # One file at a time, each row written at once: a file that kills the process only takes
    # itself down, and its attempts count up to MAX_ATTEMPTS.
    log.warning("redelivered chunk of %d file(s), processing one by one", len(todo))
    for p in todo:
        yield [p]


def _count_start(batch_id: int, paths: Sequence[str], *, url: str | None) -> None:
    """Add one to ``attempts`` of the still-pending rows of ``paths``."""
    with Session(get_engine(url)) as s, s.begin():
        s.execute(
            update(Result)
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.status == "pending")
            .values(attempts=Result.attempts + 1)
        )


def fail_pending(
    batch_id: int, paths: Sequence[str], reason: str, model_version: str | None = None, *, url: str | None = None
) -> int:
    """Mark those of ``paths`` whose rows are still ``pending`` (or missing) as ``failed`` with ``reason``.

    Rows already ``done`` or ``failed`` are left alone. In a speaker-adaptive batch a featurised
    file waiting for its speaker is not failed (its speaker's files are then classified instead).
    The write finalises the batch when it was the last pending work (:func:`worker.engine.finalise.finalise_batch`).

    Args:
        batch_id: the batch.
        paths: candidate files.
        reason: one-line message stored in ``results.error``.
        model_version: recorded on the failed rows.
        url: database URL (default: settings).

    Returns:
        Number of rows marked failed.
    """
    states = row_states(batch_id, paths, url=url)
    todo = [p for p in paths if states.get(p, "pending") == "pending"]
    by_speaker = group_mode(batch_options(batch_id, url=url)) is not None
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
    store_rows(batch_id, rows, url=url)
    if by_speaker and rows:
        # the speakers of these files may now have every other file featurised: classify them
        try:
            classify_ready_speakers(batch_id, todo, load_model(model_version, url=url), url=url)
        except RegistryError:
            pass  # no usable model: those files fail with that reason through their own chunks
    return len(rows)


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
        classify_ready_speakers(batch_id, waiting, model, url=url)
    return finalise_if_complete(batch_id, url=url)
