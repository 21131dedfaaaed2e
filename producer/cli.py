"""The ``ser-batch`` command line (typer + rich).

Exit codes (for scripts): 0 success (every file ``done``); 3 the batch finished but some files
failed; 2 usage error (bad option, path not found, bad configuration); 1 any other error.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 3

app = typer.Typer(
    help="Batch speech emotion recognition: label folders of recordings into a SQL database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)


_current_batch: int | None = None
"""The batch `submit` is working on, named in the Ctrl-C message so that `--resume` can be copied."""


class CliError(Exception):
    """An error with a user-facing message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class Fmt(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Status(StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from worker.settings import get_settings

    try:
        return get_settings()
    except ValidationError as e:
        msgs = "; ".join(f"SER_{'_'.join(map(str, x['loc'])).upper()}: {x['msg']}" for x in e.errors())
        raise CliError(f"bad configuration: {msgs}", EXIT_USAGE) from None


def _engine(migrate: bool = True):  # type: ignore[no-untyped-def]
    """The database engine, with the embedded SQLite schema brought to head."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker.db import get_engine
    from worker.migrate import ensure_schema

    s = _settings()
    try:
        eng = get_engine(s.database_url)
        if migrate:
            ensure_schema(s.database_url)
    except RuntimeError as e:
        raise CliError(str(e)) from None
    except SQLAlchemyError as e:
        from worker.settings import redact_url

        raise CliError(
            f"cannot open database {redact_url(s.database_url)}: {' '.join(str(e.orig or e).split())[:300]}"
        ) from None
    return eng


# ---------------------------------------------------------------------------------------- submit


@app.command()
def submit(
    paths: Annotated[list[str] | None, typer.Argument(help="Audio files or folders (walked recursively).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Processes for embedded mode [default: all cores].")
    ] = None,
    chunk_size: Annotated[int | None, typer.Option(min=1, help="Files per unit of work.")] = None,
    resume: Annotated[
        int | None, typer.Option(help="Finish the pending files of an earlier batch instead of walking PATHS.")
    ] = None,
    wait_: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Distributed mode: wait and show progress until finished.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    segment: Annotated[
        str,
        typer.Option(
            help="How recordings of at least --segment-min-s are split: vad (speech/pause detection), "
            "window:LEN:HOP (fixed windows, seconds) or none (one label per file)."
        ),
    ] = "vad",
    segment_min_s: Annotated[
        float, typer.Option(min=0.5, help="Recordings shorter than this (seconds) get one label.")
    ] = 10.0,
    speaker_from: Annotated[
        str | None,
        typer.Option(
            help="Which files share a speaker: ravdess, tess, parent (folder name) or regex:PATTERN. "
            "Speakers with enough files are classified after normalising by their own statistics."
        ),
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option(help="POST a JSON event to this URL when the batch is final [default: SER_NOTIFY_URL]."),
    ] = None,
) -> None:
    """Label every audio file under PATHS and record one row per file.

    Without SER_BROKER_URL the batch is processed on this machine with all cores; with it, the files
    are queued for `ser-batch worker` processes. Exit code 0 when every file is done, 3 when some failed.
    """
    from sqlalchemy.orm import Session

    from producer.walk import WalkError, collect_files
    from worker.db import Batch, insert_pending

    s = _settings()
    from worker.settings import prepare_process_env

    prepare_process_env(s)  # before numpy is imported: one BLAS thread per process
    from ser_model.segment import parse_segment_mode

    try:
        seg_spec = str(parse_segment_mode(segment))
    except ValueError as e:
        raise CliError(f"--segment: {e}", EXIT_USAGE) from None
    speaker_of = None
    if speaker_from:
        from ser_model.speakers_from import parse_speaker_spec

        try:
            speaker_of = parse_speaker_spec(speaker_from)
        except ValueError as e:
            raise CliError(f"--speaker-from: {e}", EXIT_USAGE) from None
    notify_url = _notify_url(notify or s.notify_url)
    if resume is None and not paths:
        raise CliError("give at least one file or folder (or --resume BATCH_ID)", EXIT_USAGE)
    engine = _engine()
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
                    "chunk_size": chunk_size or s.chunk_size,
                    "segment": seg_spec,
                    "segment_min_s": segment_min_s,
                    "speaker_from": speaker_from,
                    **({"notify_url": notify_url} if notify_url else {}),
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
    global _current_batch
    _current_batch = batch_id  # for the Ctrl-C message
    try:
        if s.broker_url:
            code = _enqueue_batch(batch_id, chunk_size or s.chunk_size, wait_, quiet)
        else:
            code = _run_embedded_batch(batch_id, workers or s.workers, chunk_size or s.chunk_size, quiet)
    except KeyboardInterrupt:
        # Caught here: typer turns a KeyboardInterrupt into a silent Exit(130) before main() sees it.
        _print_interrupted()
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _notify_url(url: str | None) -> str | None:
    """A checked webhook URL (``--notify`` / ``SER_NOTIFY_URL``), or None."""
    from worker.notify import check_url

    try:
        return check_url(url) if url else None
    except ValueError as e:
        raise CliError(f"--notify / SER_NOTIFY_URL: {e}", EXIT_USAGE) from None


def _enqueue_batch(batch_id: int, chunk_size: int, wait: bool, quiet: bool) -> int:
    """Distributed mode: publish the batch's pending files by task name; optionally wait for the workers.

    Imports neither librosa nor scikit-learn (only Celery's client side and the database). The batch
    and its pending rows are committed before this runs, so no worker can find a chunk without rows.
    """
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.orm import Session

    from worker.registry import active_version
    from worker.settings import redact_url

    s = _settings()
    engine = _engine(migrate=False)
    try:
        from worker.celery_app import enqueue_chunks
    except ValueError as e:  # time limits not ordered soft < hard < visibility timeout
        raise CliError(f"bad configuration: {e}", EXIT_USAGE) from None
    from producer.compare import pinned_model

    with Session(engine) as session:  # one model per batch (a rescore pins it); None: workers register the default
        model_version = pinned_model(engine, batch_id) or active_version(session)
    todo = _pending_paths(engine, batch_id)
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
    return _wait_for_batch(batch_id, len(todo), quiet, chunk_size=chunk_size, model_version=model_version)


DB_DOWN_MAX_S = 300.0
"""How long `submit --wait` keeps polling an unreachable database before it gives up (seconds)."""


ORPHAN_GRACE_S = 10.0
"""`--wait`: pending rows, no progress and an empty broker for this long -> their messages were lost."""


def _wait_for_batch(
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

    engine = _engine(migrate=False)
    t0 = time.perf_counter()
    last_change, last_finished, hinted, last_requeue = t0, -1, False, t0
    db_down_since: float | None = None
    try:
        with _progress(quiet) as progress:
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
                    n = _requeue_orphans(batch_id, chunk_size, model_version)
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
    return _finish_batch(batch_id, time.perf_counter() - t0, n_queued)


def _requeue_orphans(batch_id: int, chunk_size: int, model_version: str | None) -> int:
    """:func:`worker.celery_app.requeue_orphans` for a batch; 0 when the broker cannot be asked."""
    from kombu.exceptions import OperationalError as BrokerError

    from worker.celery_app import requeue_orphans

    try:
        return requeue_orphans(
            batch_id,
            _pending_paths(_engine(migrate=False), batch_id),
            chunk_size=chunk_size,
            model_version=model_version,
        )
    except BrokerError:
        return 0


def _pending_paths(engine, batch_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import Result

    with Session(engine) as session:
        q = select(Result.path).where(Result.batch_id == batch_id, Result.status == "pending").order_by(Result.id)
        return list(session.scalars(q))


def _run_embedded_batch(batch_id: int, workers: int, chunk_size: int, quiet: bool) -> int:
    from sqlalchemy.orm import Session

    from producer.embedded import run_embedded, warm_up
    from worker.db import batch_counts
    from worker.registry import RegistryError, load_model
    from worker.settings import prepare_process_env

    s = _settings()
    prepare_process_env(s)
    engine = _engine()
    try:
        from producer.compare import pinned_model

        model = load_model(pinned_model(engine, batch_id), url=s.database_url)  # checksum verified once, first
    except RegistryError as e:
        raise CliError(str(e)) from None
    todo = _pending_paths(engine, batch_id)
    with Session(engine) as session:
        total = batch_counts(session, batch_id)["total"]
    t0 = time.perf_counter()
    with _progress(quiet) as progress:
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
        _mark_failed(batch_id, leftovers, model.version)
    _classify_waiting_speakers(batch_id, model)
    wall = time.perf_counter() - t0
    return _finish_batch(batch_id, wall, len(todo))


def _classify_waiting_speakers(batch_id: int, model: Any) -> None:
    """Speaker-adaptive batches: classify featurised files whose speaker's last file failed instead."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import Result
    from worker.processing import classify_ready_speakers

    url = _settings().database_url
    with Session(_engine(migrate=False)) as session:
        waiting = list(
            session.scalars(
                select(Result.path).where(
                    Result.batch_id == batch_id, Result.status == "pending", Result.features.is_not(None)
                )
            )
        )
    if waiting:
        classify_ready_speakers(batch_id, waiting, model, url=url)


def _mark_failed(batch_id: int, reasons: dict[str, str], model_version: str) -> None:
    from worker.db import utcnow
    from worker.processing import store_rows

    rows = [
        {"path": p, "status": "failed", "error": r, "model_version": model_version, "finished_at": utcnow()}
        for p, r in reasons.items()
    ]
    store_rows(batch_id, rows, url=_settings().database_url)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=False,
    )


def _finish_batch(batch_id: int, wall_s: float, n_processed: int) -> int:
    """Record the batch's final counts, print the summary, and return the exit code."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.db import Batch, Result, batch_counts, utcnow

    engine = _engine(migrate=False)
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
    _print_summary(batch_id, counts, per_emotion, failures, wall_s, n_processed)
    from worker.notify import CLI_WAIT_S, notify_batch_final

    notify_batch_final(batch_id, db_url=_settings().database_url, wait_s=CLI_WAIT_S)  # webhook, if final and set
    if counts["pending"]:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _print_summary(
    batch_id: int,
    counts: dict[str, int],
    per_emotion: dict[str, int],
    failures: list[Any],
    wall_s: float,
    n_processed: int,
) -> None:
    t = Table(title=f"batch {batch_id}", show_header=True, header_style="bold")
    t.add_column("emotion")
    t.add_column("files", justify="right")
    for emo, n in per_emotion.items():
        t.add_row(str(emo), str(n))
    console.print(t)
    rate = n_processed / wall_s if wall_s > 0 else 0.0
    console.print(
        f"batch {batch_id}: [green]{counts['done']} done[/], "
        f"[{'red' if counts['failed'] else 'green'}]{counts['failed']} failed[/], "
        f"{counts['pending']} pending — {n_processed} file(s) in {wall_s:.1f} s ({rate:.1f} files/s)"
    )
    if failures:
        console.print(
            f"[red]failed files[/] (first 10; all with `ser-batch results --batch {batch_id} --status failed`):"
        )
        for path, error in failures:
            console.print(f"  {path}: {error}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------- worker


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, help="Pool processes [default: SER_WORKERS].")
    ] = None,
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues to serve: classify, training.")
    ] = "classify",
    loglevel: Annotated[LogLevel, typer.Option("--loglevel", "-l", help="Log level.")] = LogLevel.info,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name, e.g. w1@%h [default: celery@HOST].")
    ] = None,
) -> None:
    """Start a Celery worker on SER_BROKER_URL that labels queued files (this process becomes the worker).

    Before starting it brings an SQLite database to the current schema and registers the packaged
    default model (PostgreSQL: run `ser-batch db upgrade` first). It then runs the same as
    `celery -A worker.celery_app worker -Q classify --concurrency N --loglevel info --without-gossip
    --without-mingle`, which warms up (feature code, model) before it takes the first task.
    Serve the training queue with its own worker: `ser-batch worker -Q training -c 1`.
    """
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from worker.registry import RegistryError, ensure_default_model

    s = _settings()
    if not s.broker_url:
        raise CliError("set SER_BROKER_URL (e.g. redis://localhost:6379/0) to start a worker", EXIT_USAGE)
    try:
        from worker.celery_app import check_time_limits

        check_time_limits(s)
    except ValueError as e:
        raise CliError(f"bad configuration: {e}", EXIT_USAGE) from None
    engine = _engine()  # migrates a fresh SQLite; refuses a PostgreSQL behind head
    try:
        with Session(engine) as session, session.begin():
            ensure_default_model(session)
    except (RegistryError, SQLAlchemyError) as e:
        raise CliError(f"cannot register the default model: {' '.join(str(e).split())[:300]}") from None
    engine.dispose()  # the worker opens its own connections
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    argv += [f"--queues={queues}", f"--concurrency={concurrency or s.workers}", f"--loglevel={loglevel.value}"]
    argv += ["--without-gossip", "--without-mingle"]  # no worker-to-worker chatter over Redis; not needed here
    if hostname:
        argv.append(f"--hostname={hostname}")
    err.print("starting: " + " ".join(argv[1:]), highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # like `exec celery ...` in a start script: signals go straight to Celery


# ---------------------------------------------------------------------------------------- results


RESULT_COLUMNS = (
    "batch_id",
    "path",
    "status",
    "emotion",
    "confidence",
    "error",
    "model_version",
    "duration_s",
    "sample_rate",
    "channels",
    "size_bytes",
    "sha256",
    "processing_ms",
    "finished_at",
    "analysis_mode",
    "n_segments",
)


@app.command()
def results(
    batch: Annotated[int | None, typer.Option("--batch", "-b", help="Only this batch [default: all].")] = None,
    status: Annotated[Status | None, typer.Option(help="Only rows with this status.")] = None,
    emotion: Annotated[str | None, typer.Option(help="Only rows (or segments) labelled with this emotion.")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format.")] = Fmt.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    segments: Annotated[
        bool, typer.Option("--segments", help="One row per segment of long recordings instead of per file.")
    ] = False,
) -> None:
    """List result rows as a table, CSV or JSON (one row per file; p_<label> for every label)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ser_model.labels import EMOTIONS
    from worker.db import Batch, Result, Segment

    engine = _engine()
    if segments:
        q = select(Segment, Result.batch_id, Result.path).join(Result, Segment.result_id == Result.id)
        q = q.order_by(Result.batch_id, Result.id, Segment.idx)
        if emotion:
            q = q.where(Segment.emotion == emotion.lower())
    else:
        q = select(Result).order_by(Result.batch_id, Result.id)
        if emotion:
            q = q.where(Result.emotion == emotion.lower())
    if batch is not None:
        q = q.where(Result.batch_id == batch)
    if status is not None:
        q = q.where(Result.status == status.value)
    if limit:
        q = q.limit(limit)
    with Session(engine) as session:
        if batch is not None and session.get(Batch, batch) is None:
            raise CliError(f"no batch {batch}", EXIT_USAGE)
        fetched = list(session.execute(q).all()) if segments else list(session.scalars(q))
        labels = list(EMOTIONS)
        for r in fetched:
            for lab in (r[0] if segments else r).probabilities or {}:
                if lab not in labels:
                    labels.append(lab)
        if segments:
            records = [_segment_record(sg, b, p, labels) for sg, b, p in fetched]
            columns = [*SEGMENT_COLUMNS, *(f"p_{lab}" for lab in labels)]
        else:
            records = [_record(r, labels) for r in fetched]
            columns = [*RESULT_COLUMNS, *(f"p_{lab}" for lab in labels)]
    if fmt is Fmt.table:
        _print_results_table(records, output, segments)
        return
    if fmt is Fmt.csv:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        text = buf.getvalue()
    else:
        text = json.dumps(records, indent=2, default=str) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {len(records)} row(s) to {output}")
    else:
        sys.stdout.write(text)


SEGMENT_COLUMNS = ("batch_id", "path", "result_id", "index", "start_s", "end_s", "emotion", "confidence")


def _segment_record(sg: Any, batch_id: int, path: str, labels: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "batch_id": batch_id,
        "path": path,
        "result_id": sg.result_id,
        "index": sg.idx,
        "start_s": round(sg.start_s, 3),
        "end_s": round(sg.end_s, 3),
        "emotion": sg.emotion,
        "confidence": sg.confidence,
    }
    probs = sg.probabilities or {}
    for lab in labels:
        rec[f"p_{lab}"] = probs.get(lab)
    return rec


def _record(r: Any, labels: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {c: getattr(r, c) for c in RESULT_COLUMNS}
    if isinstance(rec["finished_at"], datetime):
        rec["finished_at"] = rec["finished_at"].isoformat()
    probs = r.probabilities or {}
    for lab in labels:
        rec[f"p_{lab}"] = probs.get(lab)
    return rec


def _print_results_table(records: list[dict[str, Any]], output: Path | None, segments: bool = False) -> None:
    t = Table(show_header=True, header_style="bold")
    cols = (
        ("batch", "path", "#", "start (s)", "end (s)", "emotion", "conf.")
        if segments
        else ("batch", "path", "status", "emotion", "conf.", "duration (s)", "error")
    )
    for col in cols:
        t.add_column(col, overflow="fold")
    for r in records:
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else ""
        if segments:
            t.add_row(
                str(r["batch_id"]),
                r["path"],
                str(r["index"]),
                f"{r['start_s']:.2f}",
                f"{r['end_s']:.2f}",
                r["emotion"] or "",
                conf,
            )
        else:
            t.add_row(
                str(r["batch_id"]),
                r["path"],
                r["status"],
                r["emotion"] or "",
                conf,
                f"{r['duration_s']:.2f}" if r["duration_s"] is not None else "",
                r["error"] or "",
            )
    if output:
        with output.open("w", encoding="utf-8") as fh:
            Console(file=fh, width=200).print(t)
        err.print(f"wrote {len(records)} row(s) to {output}")
    else:
        console.print(t)
        console.print(f"{len(records)} row(s)")


@app.command()
def plot(
    result: Annotated[str, typer.Argument(help="Result id, or a file path (its newest row).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("timeline.png"),
) -> None:
    """Draw the emotion probabilities over time of one (segmented) recording as a PNG timeline."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ser_model.labels import EMOTIONS
    from ser_model.report import plot_timeline
    from worker.db import Result, Segment

    with Session(_engine()) as session:
        if result.isdigit():
            row = session.get(Result, int(result))
        else:
            q = select(Result).where(Result.path.in_([result, os.path.abspath(result)])).order_by(Result.id.desc())
            row = session.scalars(q.limit(1)).first()
        if row is None:
            raise CliError(
                f"no result {result!r} (give a result id from `ser-batch results --format csv` or a path)", EXIT_USAGE
            )
        if row.status != "done":
            raise CliError(f"result {row.id} is {row.status}: {row.error or 'not labelled yet'}", EXIT_USAGE)
        segs = [
            {"start_s": sg.start_s, "end_s": sg.end_s, "emotion": sg.emotion, "probabilities": sg.probabilities}
            for sg in session.scalars(select(Segment).where(Segment.result_id == row.id).order_by(Segment.idx))
        ]
        if not segs:  # a short file: one segment spanning it
            segs = [
                {
                    "start_s": 0.0,
                    "end_s": row.duration_s or 0.0,
                    "emotion": row.emotion,
                    "probabilities": row.probabilities,
                }
            ]
        probs = row.probabilities or {}
        labels = [e for e in EMOTIONS if e in probs] + sorted(set(probs) - set(EMOTIONS))
        title = f"{row.path} ({row.analysis_mode}, {len(segs)} segment(s), overall {row.emotion} {row.confidence:.2f})"
    out = plot_timeline(segs, labels, output, title=title)
    console.print(f"wrote {out}")


# ---------------------------------------------------------------------------------------- status


@app.command()
def status(batch_id: Annotated[int | None, typer.Argument(help="Batch id [default: the latest].")] = None) -> None:
    """Show done/failed/pending counts, files/s and ETA of a batch."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.db import Batch, Result, batch_counts

    engine = _engine()
    with Session(engine) as session:
        if batch_id is None:
            batch_id = session.scalar(select(func.max(Batch.id)))
            if batch_id is None:
                raise CliError("no batches yet: run `ser-batch submit PATH`", EXIT_USAGE)
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise CliError(f"no batch {batch_id}", EXIT_USAGE)
        counts = batch_counts(session, batch_id)
        first, last = session.execute(
            select(func.min(Result.finished_at), func.max(Result.finished_at)).where(
                Result.batch_id == batch_id, Result.status != "pending"
            )
        ).one()
    finished = counts["done"] + counts["failed"]
    start = _aware(batch.created_at)
    end = _aware(last) if counts["pending"] == 0 and last else datetime.now(UTC)
    elapsed = max((end - start).total_seconds(), 1e-9) if start else 0.0
    rate = finished / elapsed if elapsed and finished else 0.0
    eta = counts["pending"] / rate if rate else None
    t = Table(title=f"batch {batch_id}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("status", batch.status)
    t.add_row("mode", batch.mode)
    t.add_row("created", _aware(batch.created_at).isoformat(timespec="seconds"))
    t.add_row("sources", "\n".join(batch.source_paths))
    t.add_row("files", str(counts["total"]))
    t.add_row("done", str(counts["done"]))
    t.add_row("failed", str(counts["failed"]))
    t.add_row("pending", str(counts["pending"]))
    t.add_row("non-audio ignored", str(batch.n_ignored))
    t.add_row("files/s", f"{rate:.1f}")
    t.add_row("ETA", "-" if eta is None else f"{eta:.0f} s")
    console.print(t)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@app.command()
def batches(limit: Annotated[int, typer.Option(min=1, help="Newest N batches.")] = 20) -> None:
    """List batches, newest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import Batch, batch_counts

    engine = _engine()
    t = Table(show_header=True, header_style="bold")
    for col in ("id", "created", "mode", "files", "done", "failed", "pending", "sources"):
        t.add_column(col, overflow="fold")
    with Session(engine) as session:
        for b in session.scalars(select(Batch).order_by(Batch.id.desc()).limit(limit)):
            c = batch_counts(session, b.id)
            t.add_row(
                str(b.id),
                _aware(b.created_at).isoformat(timespec="seconds"),
                b.mode,
                str(c["total"]),
                str(c["done"]),
                str(c["failed"]),
                str(c["pending"]),
                ", ".join(b.source_paths),
            )
    console.print(t)


# ---------------------------------------------------------------------------------------- config, db


@app.command()
def config() -> None:
    """Show the settings in force (passwords redacted) and where each can be changed."""
    from worker.settings import Settings

    s = _settings()
    t = Table(show_header=True, header_style="bold")
    t.add_column("setting")
    t.add_column("environment variable")
    t.add_column("value", overflow="fold")
    t.add_column("meaning", overflow="fold")
    for name, value in s.redacted().items():
        desc = Settings.model_fields[name].description or ""
        t.add_row(name, f"SER_{name.upper()}", "" if value is None else str(value), desc)
    console.print(t)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the database migrations (SQLite or PostgreSQL) up to REVISION."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker.migrate import current_revision, upgrade
    from worker.settings import redact_url

    s = _settings()
    try:
        before = current_revision(s.database_url)
        upgrade(s.database_url, revision)
        after = current_revision(s.database_url)
    except SQLAlchemyError as e:
        raise CliError(f"cannot migrate {redact_url(s.database_url)}: {' '.join(str(e).split())[:300]}") from None
    console.print(f"database {redact_url(s.database_url)}: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current() -> None:
    """Show the migration revision the database is at."""
    from worker.migrate import current_revision, head_revision

    s = _settings()
    _engine(migrate=False)
    console.print(f"current: {current_revision(s.database_url) or 'empty'}; head: {head_revision()}")


# ---------------------------------------------------------------------------------------- train, models


class DatasetKind(StrEnum):
    ravdess = "ravdess"
    tess = "tess"
    folders = "folders"
    csv = "csv"


@app.command()
def train(
    data: Annotated[
        list[str],
        typer.Argument(
            help="Training data: PATH (read as --dataset) or KIND:PATH with KIND ravdess, tess, folders or csv; "
            "several sources of different kinds may be mixed, e.g. ravdess:DIR csv:tolabel.csv."
        ),
    ],
    dataset: Annotated[
        DatasetKind, typer.Option(help="How labels (and speakers) of PATHs without KIND: are read.")
    ] = DatasetKind.ravdess,
    emotions: Annotated[
        str | None, typer.Option(help="Comma-separated subset of labels, e.g. calm,happy,fearful,disgust.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Bundle file to write [default: in SER_MODEL_DIR].")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json and the plots [default: next to the bundle].")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds (grouped by speaker).")] = 5,
    register: Annotated[bool, typer.Option(help="Register the model in the database.")] = True,
    activate: Annotated[bool, typer.Option(help="Make it the active model for new work.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Processes.")] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Train on this machine even when SER_BROKER_URL is set.")
    ] = False,
    weight: Annotated[
        list[str] | None,
        typer.Option(help="KIND=W or KIND:PATH=W: training weight of those sources' files, e.g. csv=3 [default: 1]."),
    ] = None,
) -> None:
    """Train an MLP on labelled recordings, report speaker-independent metrics, save and register a bundle.

    Labels come from RAVDESS or TESS names (fear -> fearful, ps -> surprised), from one folder per
    label, or from a CSV manifest with columns path,label[,speaker]. With SER_BROKER_URL set (and no
    --local) the job runs as a `ser.train` task on the `training` queue and this command follows it.
    """
    from ser_model.datasets import DatasetError
    from ser_model.labels import parse_emotion_list
    from worker.settings import prepare_process_env
    from worker.training import TrainRequest

    s = _settings()
    try:
        wanted = parse_emotion_list(emotions)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    from ser_model.datasets import parse_sources, parse_weights

    try:
        sources = parse_sources(data, dataset.value)
        weights = parse_weights(weight or [], sources)
    except DatasetError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    missing = [src.path for src in sources if not Path(src.path).exists()]
    if missing:
        raise CliError(f"training data not found: {', '.join(missing)}", EXIT_USAGE)
    req = TrainRequest(
        data=[_abs_source(d, src) for d, src in zip(data, sources, strict=True)],
        weights=weights or None,
        dataset=dataset.value,
        emotions=list(wanted) if wanted else None,
        folds=folds,
        activate=activate,
        register=register,
        output=str(output.resolve()) if output else None,
        report=str(report.resolve()) if report else None,
        workers=workers,
    )
    if s.broker_url and not local:
        if not register:
            raise CliError("--no-register needs --local: a queued training job always registers its model", EXIT_USAGE)
        outcome = _train_remote(req)
    else:
        from worker.training import run_training

        prepare_process_env(s)
        _engine()  # migrate/open the database before the long work
        with _progress(False) as progress:
            tasks: dict[str, Any] = {}

            def on(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            try:
                result = run_training(req, settings=s, progress=on, log=lambda m: err.print(m, highlight=False))
            except (DatasetError, ValueError) as e:
                raise CliError(str(e), EXIT_USAGE) from None
        outcome = result.__dict__
    _print_metrics(outcome["metrics"])
    if outcome["metrics"].get("per_source"):
        from producer.labelling import print_per_source

        print_per_source(outcome["metrics"]["per_source"])
    if outcome["metrics"].get("speaker_adaptive"):
        sa = dict(outcome["metrics"]["speaker_adaptive"])
        sa["protocol"] = "with --speaker-from: " + str(sa.get("protocol", "speaker-adaptive"))
        _print_metrics(sa)
    console.print(f"bundle: {outcome['bundle_path']} (sha256 {outcome['sha256'][:16]}...)")
    rep = outcome["report_files"]
    console.print(f"report: {rep['confusion']}, {rep['metrics']}, {rep['loss']}")
    if outcome["version"]:
        active = " (active)" if activate else " (not active: `ser-batch models activate VERSION`)"
        console.print(f"registered model version [bold]{outcome['version']}[/]{active}")


def _abs_source(arg: str, src: Any) -> str:
    """``arg`` with its path made absolute, keeping its ``KIND:`` prefix when it had one."""
    return f"{src.kind}:{os.path.abspath(src.path)}" if arg != src.path else os.path.abspath(arg)


def _train_remote(req: Any) -> dict[str, Any]:
    """Queue a training job on the broker and follow its progress through the ``jobs`` table."""
    import uuid

    from sqlalchemy.orm import Session

    from worker.db import Job

    s = _settings()
    engine = _engine()
    job_id = uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(Job(id=job_id, kind="train", status="queued", request=req.to_json()))
    from celery import Celery

    Celery(broker=s.broker_url).send_task("ser.train", args=[job_id, req.to_json()], queue="training")
    err.print(
        f"training job {job_id} queued on 'training'; waiting for a worker (`ser-batch worker --queues training`)"
    )
    return _follow_job(job_id)


def _follow_job(job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from worker.db import Job

    engine = _engine(migrate=False)
    with _progress(False) as progress:
        tasks: dict[str, Any] = {}
        while True:
            with Session(engine) as session:
                job = session.get(Job, job_id)
                assert job is not None
                status, stage, done, total, message, result = (
                    job.status,
                    job.stage,
                    job.done,
                    job.total,
                    job.message,
                    job.result,
                )
            if stage:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=max(total, 1))
                progress.update(tasks[stage], completed=done, total=max(total, 1))
            if status == "done" and result is not None:
                return result
            if status == "failed":
                raise CliError(f"training job {job_id} failed: {message}")
            time.sleep(poll_s)


def _print_metrics(cv: dict[str, Any]) -> None:
    t = Table(title=cv.get("protocol", ""), show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("files", str(cv.get("n", "")))
    t.add_row("WA (accuracy)", f"{cv['wa']:.3f}")
    t.add_row("UAR", f"{cv['uar']:.3f}")
    t.add_row("macro-F1", f"{cv['macro_f1']:.3f}")
    for lab, r in cv["per_class_recall"].items():
        t.add_row(f"recall {lab}", f"{r:.3f}")
    console.print(t)


@app.command()
def evaluate(
    data: Annotated[list[str], typer.Argument(help="Labelled folders (or CSV manifests with --dataset csv).")],
    dataset: Annotated[DatasetKind, typer.Option(help="How labels are read.")] = DatasetKind.ravdess,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model version [default: the active one].")] = None,
    emotions: Annotated[str | None, typer.Option(help="Only these labels.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write metrics.json and confusion_matrix.png here.")] = None,
) -> None:
    """Metrics (WA, UAR, macro-F1, per-class recall) and confusion matrix of a model on labelled data."""
    from ser_model.datasets import DatasetError
    from ser_model.labels import parse_emotion_list
    from ser_model.report import plot_confusion
    from worker.registry import RegistryError
    from worker.settings import prepare_process_env
    from worker.training import evaluate_model

    s = _settings()
    prepare_process_env(s)
    _engine()
    try:
        wanted = parse_emotion_list(emotions)
        with _progress(False) as progress:
            t = progress.add_task("features", total=None)
            rep = evaluate_model(
                data,
                dataset.value,
                version=model,
                emotions=wanted,
                settings=s,
                progress=lambda st, d, n: progress.update(t, completed=d, total=n),
            )
    except (DatasetError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except RegistryError as e:
        raise CliError(str(e), EXIT_USAGE if "no model version" in str(e) else EXIT_ERROR) from None
    rep["protocol"] = f"model {rep['model_version']} on {', '.join(data)}"
    _print_metrics(rep)
    if rep["n_skipped_labels"]:
        err.print(f"{rep['n_skipped_labels']} file(s) left out: their label is not one the model knows")
    if report:
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
        png = plot_confusion(rep, report / "confusion_matrix.png", title=rep["protocol"])
        console.print(f"report: {png}, {report / 'metrics.json'}")


@models_app.command("list")
def models_list() -> None:
    """List registered model versions (the active one is marked)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.db import ModelVersion
    from worker.registry import RegistryError, ensure_default_model

    engine = _engine()
    with Session(engine) as session, session.begin():
        try:
            ensure_default_model(session)
        except RegistryError as e:
            err.print(f"[yellow]{e}[/]")
        t = Table(show_header=True, header_style="bold")
        for col in ("version", "active", "created", "labels", "WA", "UAR", "macro-F1", "source"):
            t.add_column(col, overflow="fold")
        for m in session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)):
            met = m.metrics or {}
            t.add_row(
                m.version,
                "*" if m.active else "",
                _aware(m.created_at).isoformat(timespec="seconds"),
                ",".join(m.labels),
                _fmt(met.get("wa")),
                _fmt(met.get("uar")),
                _fmt(met.get("macro_f1")),
                m.source,
            )
    console.print(t)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else ""


def _model_row(session: Any, version: str | None) -> Any:
    from worker.db import ModelVersion
    from worker.registry import active_version, ensure_default_model

    ensure_default_model(session)
    version = version or active_version(session)
    row = session.get(ModelVersion, version) if version else None
    if row is None:
        raise CliError(f"no model version {version!r}", EXIT_USAGE)
    return row


@models_app.command("show")
def models_show(
    version: Annotated[str | None, typer.Argument(help="Model version [default: the active one].")] = None,
    report: Annotated[Path | None, typer.Option(help="Also draw its confusion matrix PNG into this folder.")] = None,
) -> None:
    """Show a model's label set, checksum, feature version and cross-validation metrics."""
    from sqlalchemy.orm import Session

    from ser_model.report import plot_confusion

    with Session(_engine()) as session, session.begin():
        m = _model_row(session, version)
        info = {
            "version": m.version,
            "active": m.active,
            "created": _aware(m.created_at).isoformat(timespec="seconds"),
            "labels": ", ".join(m.labels),
            "feature version": m.feature_version,
            "sha256": m.checksum,
            "stored": m.source,
        }
        metrics = dict(m.metrics or {})
    t = Table(show_header=False)
    t.add_column("", style="bold")
    t.add_column("", overflow="fold")
    for k, v in info.items():
        t.add_row(k, str(v))
    console.print(t)
    if metrics.get("wa") is not None:
        _print_metrics(metrics)
        if report and metrics.get("confusion"):
            png = plot_confusion(
                metrics, report / "confusion_matrix.png", title=f"{info['version']}: {metrics.get('protocol', '')}"
            )
            console.print(f"report: {png}")


@models_app.command("activate")
def models_activate(version: Annotated[str, typer.Argument(help="Version to make active.")]) -> None:
    """Make VERSION the active model (one transaction); new work, on every worker, uses it."""
    from sqlalchemy.orm import Session

    from worker.registry import RegistryError, activate, ensure_default_model

    engine = _engine()
    with Session(engine) as session, session.begin():
        ensure_default_model(session)
        try:
            activate(session, version)
        except RegistryError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    console.print(f"active model: {version}")


@models_app.command("export")
def models_export(
    version: Annotated[str, typer.Argument(help="Model version.")],
    output: Annotated[Path, typer.Argument(help="Bundle file to write (.joblib); a .json sidecar goes beside it.")],
) -> None:
    """Write a registered model's bundle (checksum verified) and its metadata sidecar to a file."""
    from sqlalchemy.orm import Session

    from ser_model.model import DEFAULT_MODEL_PATH, BundleError, bundle_from_bytes, sha256_bytes

    with Session(_engine()) as session, session.begin():
        m = _model_row(session, version)
        data = m.bundle if m.bundle is not None else DEFAULT_MODEL_PATH.read_bytes()
        checksum, labels, fv, metrics = m.checksum, list(m.labels), m.feature_version, dict(m.metrics or {})
    try:
        bundle_from_bytes(data, checksum)  # refuse to export a corrupted bundle
    except BundleError as e:
        raise CliError(str(e)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    side = {
        "sha256": sha256_bytes(data),
        "labels": labels,
        "feature_version": fv,
        "version": version,
        "metrics": metrics,
    }
    Path(str(output) + ".json").write_text(json.dumps(side, indent=2, default=str) + "\n")
    console.print(f"wrote {output} and {output}.json (sha256 {checksum[:16]}...)")


# ---------------------------------------------------------------------------------------- entry point


def _print_interrupted() -> None:
    """Ctrl-C: say what is kept and how to finish, naming the batch when there is one."""
    bid = "ID" if _current_batch is None else str(_current_batch)
    err.print(f"[yellow]interrupted[/]: rows already written are kept; finish with `ser-batch submit --resume {bid}`")


def _interrupted() -> NoReturn:
    _print_interrupted()
    sys.exit(130)


def main() -> None:
    """Console-script entry point: run the app and turn errors into messages and exit codes."""
    try:
        rv = app(standalone_mode=False)
    except CliError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(e.code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        # click's usage errors (typer >= 0.22 vendors click as typer._click, so match by behaviour)
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(EXIT_USAGE)
        if type(e).__name__ == "Abort":  # click turns Ctrl-C (KeyboardInterrupt) into Abort
            _interrupted()
        err.print(f"[red]error:[/] {type(e).__name__}: {e}", highlight=False)
        if os.environ.get("SER_DEBUG"):
            raise
        sys.exit(EXIT_ERROR)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


# ---------------------------------------------------------------------------------------- after the labels
# report, labelling loop, re-scoring: commands kept in their own modules, registered here. They import
# this module lazily; under `python -m producer.cli` it must be the same module object (one CliError).
if __name__ == "__main__":
    sys.modules.setdefault("producer.cli", sys.modules[__name__])
from producer import compare as _compare  # noqa: E402
from producer import labelling as _labelling  # noqa: E402
from producer import report as _report  # noqa: E402

app.command()(_report.report)
app.add_typer(_labelling.labels_app, name="labels")
app.command()(_compare.rescore)
app.command()(_compare.diff)

if __name__ == "__main__":
    main()
