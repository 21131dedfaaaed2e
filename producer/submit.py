"""Submit orchestration: record a batch, run it on this machine or queue it, follow it, summarise it.

The ``submit`` command (:mod:`producer.cli`) parses its options and calls :func:`open_batch`, then
:func:`run_embedded_batch` (no broker) or :func:`run_distributed` (``SER_BROKER_URL`` set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import typer

from producer.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CliError,
    cli_settings,
    console,
    err,
    open_engine,
    progress_bar,
)
from producer.tables import print_batch_summary


def open_batch(
    paths: list[str] | None,
    *,
    resume: int | None,
    chunk_size: int,
    segment: str,
    segment_min_s: float,
    speaker_from: str | None,
    speaker_of: Callable[[str], str | None] | None,
) -> int:
    """Record a new batch and its ``pending`` rows in one transaction, or find the batch to resume.

    The batch row is committed before any work starts, so a fast worker always finds its rows and an
    interrupted batch can be finished with ``submit --resume``.

    Args:
        paths: files and folders to walk (ignored with ``resume``).
        resume: id of an earlier batch whose pending files are to be finished.
        chunk_size: files per unit of work, recorded in the batch options.
        segment: normalised segment mode (see :func:`ser_model.segment.parse_segment_mode`).
        segment_min_s: recordings shorter than this (seconds) get one label.
        speaker_from: the ``--speaker-from`` spec as given, recorded in the batch options.
        speaker_of: speaker key of a path (parsed ``--speaker-from``), or None.

    Returns:
        The batch id.

    Raises:
        CliError: no such batch, a path that does not exist, no audio files (usage errors).
    """
    from sqlalchemy.orm import Session

    from producer.walk import WalkError, collect_files
    from worker.db import Batch, insert_pending

    s = cli_settings()
    engine = open_engine()
    if resume is not None:
        with Session(engine) as session:
            batch = session.get(Batch, resume)
            if batch is None:
                raise CliError(f"no batch {resume}", EXIT_USAGE)
            batch_id = batch.id
    else:
        try:
            walk = collect_files(list(paths or []))
        except WalkError as e:
            raise CliError(str(e), EXIT_USAGE) from None
        if not walk.files:
            raise CliError(
                f"no audio files found in {', '.join(paths or [])} ({walk.ignored} non-audio file(s) ignored)",
                EXIT_USAGE,
            )
        with Session(engine) as session, session.begin():  # the batch row is committed before any work
            batch = Batch(
                source_paths=[os.path.abspath(p) for p in paths or []],
                status="running",
                mode="distributed" if s.broker_url else "embedded",
                n_files=len(walk.files),
                n_ignored=walk.ignored,
                options={
                    "chunk_size": chunk_size,
                    "segment": segment,
                    "segment_min_s": segment_min_s,
                    "speaker_from": speaker_from,
                },
            )
            session.add(batch)
            session.flush()
            batch_id = batch.id
            speakers = {f: speaker_of(f) for f in walk.files} if speaker_of else None
            insert_pending(session, batch_id, walk.files, walk.sizes, speakers)
        if speakers:
            n_spk = len({v for v in speakers.values() if v is not None})
            n_none = sum(v is None for v in speakers.values())
            err.print(
                f"speakers: {n_spk} found by {speaker_from}" + (f", {n_none} file(s) without one" if n_none else "")
            )
        skipped = f", {walk.ignored} non-audio file(s) ignored" if walk.ignored else ""
        hidden = f", {walk.hidden} hidden entr(y/ies) skipped" if walk.hidden else ""
        err.print(f"batch [bold]{batch_id}[/]: {len(walk.files)} audio file(s){skipped}{hidden}")
    return batch_id


def run_distributed(batch_id: int, chunk_size: int, wait: bool, quiet: bool) -> int:
    """Distributed mode: publish the batch's pending files by task name; optionally wait for the workers.

    Imports neither librosa nor scikit-learn (only Celery's client side and the database). The batch
    and its pending rows are committed before this runs, so no worker can find a chunk without rows.
    """
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.orm import Session

    from worker.registry import active_version
    from worker.settings import redact_url

    s = cli_settings()
    engine = open_engine(migrate=False)
    from worker.publish import default_app, enqueue_chunks

    try:
        default_app()
    except ValueError as e:  # time limits not ordered soft < hard < visibility timeout
        raise CliError(f"bad configuration: {e}", EXIT_USAGE) from None
    with Session(engine) as session:
        model_version = active_version(session)  # one model per batch; None: workers register the default
    todo = pending_paths(engine, batch_id)
    try:
        n_messages = enqueue_chunks(batch_id, todo, chunk_size=chunk_size, model_version=model_version)
    except BrokerError as e:
        raise CliError(
            f"cannot reach the broker {redact_url(s.broker_url or '')}: {' '.join(str(e).split())[:200]}; "
            f"batch {batch_id} is saved, queue it again with `ser-batch submit --resume {batch_id}`"
        ) from None
    err.print(f"queued {len(todo)} file(s) of batch {batch_id} in {n_messages} task(s) of up to {chunk_size} file(s)")
    console.print(batch_id)
    if not wait:
        err.print(f"follow with `ser-batch status {batch_id}`; results with `ser-batch results --batch {batch_id}`")
        return EXIT_OK
    return wait_for_batch(batch_id, len(todo), quiet, chunk_size=chunk_size, model_version=model_version)


DB_DOWN_MAX_S = 300.0
"""How long `submit --wait` keeps polling an unreachable database before it gives up (seconds)."""


ORPHAN_GRACE_S = 10.0
"""`--wait`: pending rows, no progress and an empty broker for this long -> their messages were lost."""


def wait_for_batch(
    batch_id: int,
    n_queued: int,
    quiet: bool,
    poll_s: float = 1.0,
    *,
    chunk_size: int = 8,
    model_version: str | None = None,
) -> int:
    """Show progress from database counts until no row of the batch is pending; then summarise.

    Pending rows with no progress and no message left on the broker for :data:`ORPHAN_GRACE_S`
    seconds lost their message (a worker killed the instant it took it): they are queued again.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.orm import Session

    from worker.db import batch_counts

    engine = open_engine(migrate=False)
    t0 = time.perf_counter()
    last_change, last_finished, hinted, last_requeue = t0, -1, False, t0
    db_down_since: float | None = None
    try:
        with progress_bar(quiet) as progress:
            task = progress.add_task("waiting for workers", total=None)
            while True:
                try:
                    with Session(engine) as session:
                        counts = batch_counts(session, batch_id)
                except (OperationalError, InterfaceError) as e:
                    # The database restarting is no reason to stop following the batch: the workers
                    # retry their writes, so keep polling (and say so) for up to DB_DOWN_MAX_S.
                    now = time.perf_counter()
                    if db_down_since is None:
                        db_down_since = now
                        err.print("[yellow]database unreachable[/]: still waiting (workers retry their writes)")
                    if now - db_down_since > DB_DOWN_MAX_S:
                        reason = " ".join(str(e.orig or e).split())[:200]
                        raise CliError(
                            f"database unreachable for {DB_DOWN_MAX_S:.0f} s ({reason}); the workers go on, "
                            f"follow with `ser-batch status {batch_id}`"
                        ) from None
                    time.sleep(poll_s)
                    continue
                if db_down_since is not None:
                    err.print("database reachable again")
                    db_down_since = None
                finished = counts["done"] + counts["failed"]
                progress.update(task, total=counts["total"], completed=finished)
                if counts["pending"] == 0:
                    break
                now = time.perf_counter()
                if finished != last_finished:
                    last_finished, last_change = finished, now
                    if finished:
                        progress.update(task, description="classifying")
                elif now - last_change > ORPHAN_GRACE_S and now - last_requeue > ORPHAN_GRACE_S:
                    last_requeue = now
                    n = requeue_orphans(batch_id, chunk_size, model_version)
                    if n:
                        err.print(f"[yellow]{n} pending file(s) had no message left on the broker[/]: queued again")
                        last_change = now
                if not hinted and now - last_change > 60:
                    err.print(
                        "[yellow]no progress for 60 s[/]: is a worker running on this broker? (`ser-batch worker`)"
                    )
                    hinted = True
                time.sleep(poll_s)
    except KeyboardInterrupt:
        err.print(f"[yellow]stopped waiting[/]: the workers go on; follow with `ser-batch status {batch_id}`")
        raise typer.Exit(130) from None
    return finish_batch(batch_id, time.perf_counter() - t0, n_queued)


def requeue_orphans(batch_id: int, chunk_size: int, model_version: str | None) -> int:
    """:func:`worker.publish.requeue_orphans` for a batch; 0 when the broker cannot be asked."""
    from kombu.exceptions import OperationalError as BrokerError

    from worker.publish import requeue_orphans as requeue_on_broker

    try:
        return requeue_on_broker(
            batch_id,
            pending_paths(open_engine(migrate=False), batch_id),
            chunk_size=chunk_size,
            model_version=model_version,
        )
    except BrokerError:
        return 0


def pending_paths(engine, batch_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import Result

    with Session(engine) as session:
        q = select(Result.path).where(Result.batch_id == batch_id, Result.status == "pending").order_by(Result.id)
        return list(session.scalars(q))


def run_embedded_batch(batch_id: int, workers: int, chunk_size: int, quiet: bool) -> int:
    from sqlalchemy.orm import Session

    from producer.embedded import run_embedded, warm_up
    from worker.db import batch_counts
    from worker.registry import RegistryError, load_model
    from worker.settings import prepare_process_env

    s = cli_settings()
    prepare_process_env(s)
    engine = open_engine()
    try:
        model = load_model(url=s.database_url)  # verifies the checksum once, before any work
    except RegistryError as e:
        raise CliError(str(e)) from None
    todo = pending_paths(engine, batch_id)
    with Session(engine) as session:
        total = batch_counts(session, batch_id)["total"]
    t0 = time.perf_counter()
    with progress_bar(quiet) as progress:
        task = progress.add_task("warming up", total=total, completed=total - len(todo))
        warm_up()
        progress.update(task, description=f"classifying ({min(workers, max(1, len(todo)))} processes)")
        leftovers = run_embedded(
            batch_id,
            todo,
            url=s.database_url,
            model_version=model.version,
            workers=min(workers, max(1, len(todo) // max(1, chunk_size) or 1)),
            chunk_size=chunk_size,
            on_progress=lambda n: progress.advance(task, n),
        )
    if leftovers:
        mark_failed(batch_id, leftovers, model.version)
    classify_waiting_speakers(batch_id, model)
    wall = time.perf_counter() - t0
    return finish_batch(batch_id, wall, len(todo))


def classify_waiting_speakers(batch_id: int, model: Any) -> None:
    """Speaker-adaptive batches: classify featurised files whose speaker's last file failed instead."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import Result
    from worker.processing import classify_ready_speakers

    url = cli_settings().database_url
    with Session(open_engine(migrate=False)) as session:
        waiting = list(
            session.scalars(
                select(Result.path).where(
                    Result.batch_id == batch_id, Result.status == "pending", Result.features.is_not(None)
                )
            )
        )
    if waiting:
        classify_ready_speakers(batch_id, waiting, model, url=url)


def mark_failed(batch_id: int, reasons: dict[str, str], model_version: str) -> None:
    from worker.db import utcnow
    from worker.processing import store_rows

    rows = [
        {"path": p, "status": "failed", "error": r, "model_version": model_version, "finished_at": utcnow()}
        for p, r in reasons.items()
    ]
    store_rows(batch_id, rows, url=cli_settings().database_url)


def finish_batch(batch_id: int, wall_s: float, n_processed: int) -> int:
    """Record the batch's final counts, print the summary, and return the exit code."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.db import Batch, Result, batch_counts, utcnow

    engine = open_engine(migrate=False)
    with Session(engine) as session, session.begin():
        counts = batch_counts(session, batch_id)
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.n_done, batch.n_failed = counts["done"], counts["failed"]
        if counts["pending"] == 0:
            batch.status = "done"
            batch.finished_at = utcnow()
        per_emotion = dict(
            session.execute(
                select(Result.emotion, func.count())
                .where(Result.batch_id == batch_id, Result.status == "done")
                .group_by(Result.emotion)
                .order_by(func.count().desc())
            ).all()
        )
        failures = list(
            session.execute(
                select(Result.path, Result.error)
                .where(Result.batch_id == batch_id, Result.status == "failed")
                .order_by(Result.id)
                .limit(10)
            ).all()
        )
    print_batch_summary(batch_id, counts, per_emotion, failures, wall_s, n_processed)
    if counts["pending"]:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK
