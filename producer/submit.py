"""Submit orchestration: record a batch, run it on this machine or queue it, follow it, summarise it.

The ``submit`` command (:mod:`producer.cli`) parses its options and calls :func:`open_batch`, then
:func:`run_embedded_batch` (no broker) or :func:`run_distributed` (``SER_BROKER_URL`` set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.markup import escape

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

WALK_PAGE_FILES = 10_000
"""Files recorded per transaction while walking (and, in distributed mode, queued right after)."""


def open_batch(
    paths: list[str] | None,
    *,
    resume: int | None,
    chunk_size: int,
    segment: str,
    segment_min_s: float,
    speaker_from: str | None,
    speaker_of: Callable[[str], str | None] | None,
    notify_url: str | None = None,
    normalise: str | None = None,
    model_version: str | None = None,
    channels: str = "mix",
    channel_names: list[str] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_page: Callable[[int, list[str]], None] | None = None,
    quiet: bool = False,
) -> int:
    """Record a new batch and its ``pending`` rows as the walk goes, or find the batch to resume.

    The walk is streamed: files are recorded :data:`WALK_PAGE_FILES` at a time, each page in its own
    transaction, and ``on_page`` is called after each commit (distributed mode queues the page's
    files there), so memory does not grow with the number of files and workers can start before
    the walk ends. The batch row is committed before its first rows; it carries
    ``options["walk_complete"]`` (False until the walk ended), so a walk interrupted by Ctrl-C is
    walked again by ``submit --resume`` (files already recorded are left alone).

    Args:
        paths: files and folders to walk (ignored with ``resume``).
        resume: id of an earlier batch whose pending files are to be finished.
        chunk_size: files per unit of work, recorded in the batch options.
        segment: normalised segment mode (see :func:`ser_model.segment.parse_segment_mode`).
        segment_min_s: recordings shorter than this (seconds) get one label.
        speaker_from: the ``--speaker-from`` spec as given, recorded in the batch options.
        speaker_of: speaker key of a path (parsed ``--speaker-from``), or None.
        notify_url: checked webhook URL (:func:`check_notify_url`), stored in ``batch_webhooks`` (which
            query-only roles cannot read; ``options["notify_url"]`` holds ``scheme://host/…``) so that
            whichever process finishes the batch sends the event; None: no webhook. A resumed batch
            keeps the webhook it was recorded with.
        normalise: ``"batch"`` to label the batch's files together after normalising them by the
            batch's statistics (``options["normalise"]``; ``speaker_of`` then gives every file one key).
        model_version: a registered model version to pin the batch to (``options["model_version"]``,
            as ``rescore`` does), or None for the active model.
        channels: ``"mix"`` or ``"split"`` (``--channels``); ``split`` is recorded in the options
            with ``channel_names`` (a ``mix`` batch's options are unchanged).
        channel_names: roles of channel 0, 1, ... (``--channel-names``).
        on_batch: called with the batch id as soon as the batch row is committed (for the Ctrl-C message).
        on_page: called with the batch id and the paths of each page of new rows, after its commit.
        quiet: no walk progress.

    Returns:
        The batch id.

    Raises:
        CliError: no such batch, a path that does not exist, no audio files (usage errors).
    """
    from sqlalchemy.orm import Session

    from producer.walk import WalkError
    from worker.engine.notify import record_webhook
    from worker.storage.db import Batch

    s = cli_settings()
    engine = open_engine()
    if resume is not None:
        with Session(engine) as session:
            batch = session.get(Batch, resume)
            if batch is None:
                raise CliError(f"no batch {resume}", EXIT_USAGE)
            batch_id, options, sources = batch.id, dict(batch.options or {}), list(batch.source_paths or [])
        if on_batch:
            on_batch(batch_id)
        if options.get("walk_complete") is False:  # Ctrl-C during the walk: walk again, record what is missing
            err.print(f"batch {batch_id}: its walk was interrupted; walking {escape(', '.join(sources))} again")
            spk = options.get("speaker_from")
            if spk:
                from ser_model.speakers_from import parse_speaker_spec

                speaker_of = parse_speaker_spec(spk)
            elif options.get("normalise") == "batch":
                from ser_model.speaker import MODE_BATCH

                def speaker_of(_path: str) -> str:
                    return MODE_BATCH

            try:
                _record_walk(sources, batch_id, lambda: batch_id, speaker_of, None, quiet)
            except WalkError as e:
                raise CliError(f"batch {batch_id}: {e}", EXIT_USAGE) from None
        return batch_id

    def new_batch() -> int:
        with Session(engine) as session, session.begin():  # committed before any row or work
            batch = Batch(
                source_paths=[os.path.abspath(p) for p in paths or []],
                status="running",
                mode="distributed" if s.broker_url else "embedded",
                n_files=0,
                options={
                    "chunk_size": chunk_size,
                    "segment": segment,
                    "segment_min_s": segment_min_s,
                    "speaker_from": speaker_from,
                    **({"normalise": normalise} if normalise else {}),
                    **({"model_version": model_version} if model_version else {}),
                    **(
                        {"channels": "split", "channel_names": list(channel_names or [])} if channels == "split" else {}
                    ),
                    "walk_complete": False,
                },
            )
            session.add(batch)
            session.flush()
            if notify_url:
                record_webhook(session, batch, notify_url)
            new_id = batch.id
        if on_batch:
            on_batch(new_id)
        return new_id

    try:
        batch_id, n, walk = _record_walk(list(paths or []), None, new_batch, speaker_of, on_page, quiet)
    except WalkError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if batch_id is None:
        raise CliError(
            f"no audio files found in {', '.join(paths or [])} ({walk.ignored} non-audio file(s) ignored)",
            EXIT_USAGE,
        )
    if speaker_of and not normalise:
        from sqlalchemy import func, select

        from worker.storage.db import Result

        with Session(engine) as session:
            n_spk, n_none = session.execute(
                select(func.count(Result.speaker.distinct()), func.count().filter(Result.speaker.is_(None))).where(
                    Result.batch_id == batch_id
                )
            ).one()
        err.print(
            f"speakers: {n_spk} found by {escape(str(speaker_from))}"
            + (f", {n_none} file(s) without one" if n_none else "")
        )
    skipped = f", {walk.ignored} non-audio file(s) ignored" if walk.ignored else ""
    hidden = f", {walk.hidden} hidden entr(y/ies) skipped" if walk.hidden else ""
    err.print(f"batch [bold]{batch_id}[/]: {n} audio file(s){skipped}{hidden}")
    if normalise == "batch":
        from ser_model.speaker import MIN_BATCH_FILES

        if n < MIN_BATCH_FILES:
            err.print(
                f"[yellow]--normalise batch needs at least {MIN_BATCH_FILES} files[/]: these {n} are labelled "
                "each file alone (analysis_mode global)"
            )
    return batch_id


def _record_walk(
    paths: list[str],
    batch_id: int | None,
    make_batch: Callable[[], int],
    speaker_of: Callable[[str], str | None] | None,
    on_page: Callable[[int, list[str]], None] | None,
    quiet: bool,
) -> tuple[int | None, int, Any]:
    """Walk ``paths`` and record ``pending`` rows a page at a time; the batch is made at the first file.

    Returns:
        ``(batch id or None when no file was found, rows in the batch, the walk's counters)``. The
        batch's ``n_files``, ``n_ignored`` and ``options["walk_complete"]`` are set at the end.

    Raises:
        producer.walk.WalkError: a path does not exist (before anything is recorded).
    """
    from sqlalchemy.orm import Session

    from producer.walk import WalkResult, iter_files
    from worker.storage.db import Batch, batch_counts, insert_pending

    engine = open_engine(migrate=False)
    stats = WalkResult()
    files = iter_files(paths, stats)  # checks every path before walking
    page: list[tuple[str, int | None]] = []
    n_walked = 0
    with progress_bar(quiet) as progress:
        task = progress.add_task("walking (files recorded)", total=None)

        def flush() -> None:
            nonlocal batch_id, page, n_walked
            if not page:
                return
            if batch_id is None:
                batch_id = make_batch()
            todo = [p for p, _ in page]
            sizes = {p: n for p, n in page if n is not None}
            speakers = {p: speaker_of(p) for p in todo} if speaker_of else None
            with Session(engine) as session, session.begin():
                insert_pending(session, batch_id, todo, sizes, speakers)
            n_walked += len(page)
            page = []
            progress.update(task, completed=n_walked)
            if on_page:
                on_page(batch_id, todo)

        for item in files:
            page.append(item)
            if len(page) >= WALK_PAGE_FILES:
                flush()
        flush()
    if batch_id is None:
        return None, 0, stats
    with Session(engine) as session, session.begin():
        total = batch_counts(session, batch_id)["total"]
        batch = session.get(Batch, batch_id)
        if batch is not None:
            batch.n_files, batch.n_ignored = total, stats.ignored
            batch.options = {**(batch.options or {}), "walk_complete": True}
    return batch_id, total, stats


class PageQueue:
    """Distributed ``submit``: queue each page of recorded files as soon as it is committed.

    The first page pins the batch to one model and marks it distributed (as :func:`run_distributed`
    does for a resumed batch); every page is split into chunks of ``chunk_size`` files.
    """

    def __init__(self, chunk_size: int) -> None:
        from worker.celery_app.publish import default_app

        try:
            self.app = default_app()
        except ValueError as e:  # time limits not ordered soft < hard < visibility timeout
            raise CliError(f"bad configuration: {e}", EXIT_USAGE) from None
        self.chunk_size = chunk_size
        self.n_files = self.n_messages = 0
        self.model_version: str | None = None
        self.pinned = False

    def __call__(self, batch_id: int, paths: list[str]) -> None:
        from worker.celery_app.publish import enqueue_chunks

        if not self.pinned:
            self.model_version = _pin_distributed(batch_id)
            self.pinned = True
        with _broker_errors(batch_id):
            self.n_messages += enqueue_chunks(
                batch_id, paths, chunk_size=self.chunk_size, model_version=self.model_version, celery_app=self.app
            )
        self.n_files += len(paths)


def parse_channel_names(spec: str | None) -> list[str]:
    """``--channel-names agent,customer`` -> ``["agent", "customer"]`` (role of channel 0, 1, ...).

    Raises:
        ValueError: an empty name, a name longer than 64 characters, or a name given twice.
    """
    if spec is None or not spec.strip():
        return []
    names = [n.strip() for n in spec.split(",")]
    if any(not n for n in names):
        raise ValueError(f"--channel-names {spec!r}: empty name; give one name per channel, e.g. agent,customer")
    if any(len(n) > 64 for n in names):
        raise ValueError("--channel-names: a name is longer than 64 characters")
    if len(set(names)) != len(names):
        raise ValueError(f"--channel-names {spec!r}: a name is given twice")
    return names


def configured_chunk_size(option: int | None) -> int | None:
    """``--chunk-size`` if given, else ``SER_CHUNK_SIZE`` if set, else None (embedded mode picks one)."""
    s = cli_settings()
    return option or (s.chunk_size if "chunk_size" in s.model_fields_set else None)


def check_encoder_setting() -> None:
    """Embedded mode labels on this machine: ``SER_ENCODER_DIR``, when set, must be a folder with a
    ``model.bin`` here (checked before a batch is recorded; workers and a distributed producer do not
    need it, so it is not a check of every command's settings).

    Raises:
        CliError: set to a folder without ``model.bin`` (usage error).
    """
    from ser_model.encoder import ENCODER_DIR_ENV, default_encoder_dir

    folder = os.environ.get(ENCODER_DIR_ENV)
    if folder and not (default_encoder_dir() / "model.bin").is_file():  # the folder the encoder will load
        raise CliError(
            f"{ENCODER_DIR_ENV}: no model.bin in {folder}: give a CTranslate2 Whisper folder, or unset it for the "
            "packaged one",
            EXIT_USAGE,
        )


def check_notify_url(url: str | None) -> str | None:
    """A checked webhook URL (``--notify`` / ``SER_NOTIFY_URL``), or None when none is given.

    Raises:
        CliError: not an http(s) URL with a host (usage error).
    """
    from worker.urls import check_url

    try:
        return check_url(url) if url else None
    except ValueError as e:
        raise CliError(f"--notify / SER_NOTIFY_URL: {e}", EXIT_USAGE) from None


def pinned_model(batch_id: int) -> str | None:
    """The model version a batch is pinned to (``options["model_version"]``), or None.

    ``rescore`` pins its batch to the model it was given; ``run_distributed`` records the model a
    distributed batch was queued with. Either way every chunk, every worker and a ``--resume`` use it.
    """
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch

    with Session(open_engine(migrate=False)) as session:
        batch = session.get(Batch, batch_id)
        return (batch.options or {}).get("model_version") if batch is not None else None


def _pin_distributed(batch_id: int) -> str | None:
    """Mark a batch distributed and pin it to one model; returns that model version.

    The model is the one the batch is pinned to (rescore, an earlier queueing), else the active one;
    None: the workers register the packaged default and use it.
    """
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch
    from worker.storage.registry import active_version

    with Session(open_engine(migrate=False)) as session, session.begin():
        batch = session.get(Batch, batch_id)
        model_version = ((batch.options or {}).get("model_version") if batch else None) or active_version(session)
        if batch is not None:
            # the sweepers look after distributed batches and requeue lost chunks with the same model
            # (a batch started embedded and resumed here becomes distributed)
            batch.mode = "distributed"
            batch.options = {**(batch.options or {}), "model_version": model_version}
    return model_version


@contextmanager
def _broker_errors(batch_id: int) -> Iterator[None]:
    """A broker that cannot be reached is a one-line error naming the batch to resume."""
    from kombu.exceptions import OperationalError as BrokerError

    from worker.urls import redact_url

    try:
        yield
    except BrokerError as e:
        raise CliError(
            f"cannot reach the broker {redact_url(cli_settings().broker_url or '')}: "
            f"{' '.join(str(e).split())[:200]}; batch {batch_id} is saved, queue it again with "
            f"`ser-batch submit --resume {batch_id}`"
        ) from None


def run_distributed(batch_id: int, chunk_size: int, wait: bool, quiet: bool, queued: PageQueue | None = None) -> int:
    """Distributed mode: publish the batch's pending files by task name; optionally wait for the workers.

    Imports neither librosa nor scikit-learn (only Celery's client side and the database). The batch
    and its pending rows are committed before this runs, so no worker can find a chunk without rows.
    The pending paths are read and published a page at a time; ``queued``: the walk already queued
    every file (:class:`PageQueue`), only the summary and the wait are left.
    """
    from worker.engine.rows import pending_path_pages

    if queued is None:
        queued = PageQueue(chunk_size)
        for paths in pending_path_pages(batch_id, url=cli_settings().database_url, page_rows=WALK_PAGE_FILES):
            queued(batch_id, paths)
    n, n_messages = queued.n_files, queued.n_messages
    err.print(f"queued {n} file(s) of batch {batch_id} in {n_messages} task(s) of up to {chunk_size} file(s)")
    console.print(batch_id)
    if not wait:
        err.print(f"follow with `ser-batch status {batch_id}`; results with `ser-batch results --batch {batch_id}`")
        return EXIT_OK
    return wait_for_batch(batch_id, n, quiet)


DB_DOWN_MAX_S = 300.0
"""How long `submit --wait` keeps polling an unreachable database before it gives up (seconds)."""


def wait_for_batch(
    batch_id: int,
    n_queued: int,
    quiet: bool,
    poll_s: float = 1.0,
) -> int:
    """Show progress from database counts until no row of the batch is pending; then summarise.

    Every ``SER_SWEEP_INTERVAL_S`` seconds it also runs the workers' sweeper
    (:func:`worker.celery_app.sweeper.sweep`): rows whose lease expired (their worker died) and pending rows no
    message covers are queued again, so a batch finishes even when every worker that held its
    chunks is gone.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.orm import Session

    from worker.engine.finalise import finalise_if_complete
    from worker.storage.db import batch_counts

    engine = open_engine(migrate=False)
    t0 = time.perf_counter()
    last_change, last_finished, hinted, last_sweep = t0, -1, False, t0
    sweep_every = cli_settings().sweep_interval_s
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
                    # finalised with the last row; the safety net of the sweeper, at once (idempotent)
                    finalise_if_complete(batch_id, url=cli_settings().database_url)
                    break
                now = time.perf_counter()
                if finished != last_finished:
                    last_finished, last_change = finished, now
                    if finished:
                        progress.update(task, description="classifying")
                if now - last_sweep >= sweep_every:
                    last_sweep = now
                    n = run_sweep()
                    if n:
                        err.print(f"[yellow]{n} pending file(s) lost their worker or message[/]: queued again")
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


def run_sweep() -> int:
    """One :func:`worker.celery_app.sweeper.sweep` from the producer; returns the rows queued again (0 on errors)."""
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import SQLAlchemyError

    from worker.celery_app.sweeper import sweep

    try:
        report = sweep(url=cli_settings().database_url, settings=cli_settings())
    except (BrokerError, SQLAlchemyError):
        return 0  # the broker or database is briefly away: the next sweep tries again
    return report.expired + report.orphaned


def run_embedded_batch(batch_id: int, workers: int, chunk_size: int | None, quiet: bool) -> int:
    """Embedded mode: label the batch's pending files with a local process pool, then summarise.

    The processes run the batch engine (:func:`worker.engine.chunk.run_chunk`); files whose chunk could
    not be run even alone (a process killed by the OS) get a ``failed`` row with the reason.
    ``chunk_size`` None (neither ``--chunk-size`` nor ``SER_CHUNK_SIZE`` given) picks it from the
    number of files and processes (:func:`producer.embedded.auto_chunk_size`).
    """
    from itertools import chain

    from sqlalchemy.orm import Session

    from producer.embedded import auto_chunk_size, run_embedded, warm_up
    from worker.engine.chunk import fail_pending, finish_batch_locally
    from worker.engine.rows import pending_path_pages
    from worker.settings import prepare_process_env
    from worker.storage.db import batch_counts
    from worker.storage.registry import RegistryError, load_model

    s = cli_settings()
    prepare_process_env(s)
    open_engine()
    try:
        # the batch's pinned model (rescore), else the active one; the checksum is verified once, first
        model = load_model(pinned_model(batch_id), url=s.database_url)
    except RegistryError as e:
        raise CliError(
            f"{e}; batch {batch_id} is saved with its files pending: finish it with "
            f"`ser-batch submit --resume {batch_id}` once the model loads"
        ) from None
    _set_mode(batch_id, "embedded")  # a distributed batch resumed here: the workers' sweepers leave it alone
    with Session(open_engine(migrate=False)) as session:
        counts = batch_counts(session, batch_id)
    total, n_todo = counts["total"], counts["pending"]
    # the pending files are read a page at a time as the pool asks for chunks: nothing O(files) is held
    todo = chain.from_iterable(pending_path_pages(batch_id, url=s.database_url, page_rows=WALK_PAGE_FILES))
    chunk_size = chunk_size or auto_chunk_size(n_todo, workers)
    t0 = time.perf_counter()
    with progress_bar(quiet) as progress:
        task = progress.add_task("warming up", total=total, completed=total - n_todo)
        warm_up(model.bundle)
        progress.update(task, description=f"classifying ({min(workers, max(1, n_todo))} processes)")
        leftovers = run_embedded(
            batch_id,
            todo,
            url=s.database_url,
            model_version=model.version,
            workers=min(workers, max(1, n_todo // max(1, chunk_size) or 1)),
            chunk_size=chunk_size,
            on_progress=lambda n: progress.advance(task, n),
        )
    by_reason: dict[str, list[str]] = {}
    for path, reason in leftovers.items():
        by_reason.setdefault(reason, []).append(path)
    for reason, paths in by_reason.items():
        fail_pending(batch_id, paths, reason, model.version, url=s.database_url)
    finish_batch_locally(batch_id, model, url=s.database_url)
    wall = time.perf_counter() - t0
    return finish_batch(batch_id, wall, n_todo)


def _set_mode(batch_id: int, mode: str) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch

    with Session(open_engine(migrate=False)) as session, session.begin():
        session.execute(update(Batch).where(Batch.id == batch_id).values(mode=mode))


def finish_batch(batch_id: int, wall_s: float, n_processed: int) -> int:
    """Record the batch's final counts, print the summary, send the webhook, and return the exit code.

    The summary carries the trust counts (rows flagged ``low_confidence`` / ``out_of_domain``), the
    mean arousal and valence (:func:`worker.engine.assess.dimension_summary`) and the batch's warnings (:func:`worker.engine.assess.assess_batch`, stored when the batch was finalised).
    The webhook (``options["notify_url"]``) is sent when no row is pending any more, at most once per
    batch (:func:`worker.engine.notify.notify_batch_final`); this waits for its delivery at most
    :data:`worker.engine.notify.CLI_WAIT_S` seconds and never fails the batch.
    """
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.engine.assess import assess_batch, dimension_summary, trust_counts
    from worker.engine.notify import CLI_WAIT_S, notify_batch_final
    from worker.storage.db import Batch, Result, batch_counts

    engine = open_engine(migrate=False)
    with Session(engine) as session, session.begin():
        counts = batch_counts(session, batch_id)
        trust = trust_counts(session, batch_id)
        dims = dimension_summary(session, batch_id)
        batch = session.get(Batch, batch_id)
        warnings = list(batch.warnings or []) if batch is not None and batch.warnings is not None else None
        if warnings is None and not counts["pending"]:
            warnings = assess_batch(session, batch_id, store=False)  # a batch finalised before the warnings existed
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
    print_batch_summary(
        batch_id,
        counts,
        per_emotion,
        failures,
        wall_s,
        n_processed,
        trust=trust,
        warnings=warnings or [],
        dimensions=dims,
    )
    notify_batch_final(batch_id, db_url=cli_settings().database_url, wait_s=CLI_WAIT_S)  # if final and set
    if counts["pending"]:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK
