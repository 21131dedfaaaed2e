"""The ``ser-batch`` command line (typer + rich): the command tree, option parsing and thin commands.

Exit codes (for scripts; README.md, "Exit codes"): 0 success (every file ``done``); 3 the batch finished
but some files failed; 2 usage error (bad option, path not found, bad configuration), found before
anything is written; 1 any other error (e.g. a database that cannot be written); 130 interrupted.

The work behind the commands lives next to this module: :mod:`producer.submit` (record, run, queue
and follow a batch), :mod:`producer.tables` (tables and CSV/JSON exports), :mod:`producer.train_cmds`
(training and model commands) and :mod:`producer.common` (errors, consoles, settings, engine).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from producer import compare, labelling, report, train_cmds
from producer.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CliError,
    aware,
    cli_settings,
    console,
    err,
    open_engine,
    print_interrupted,
    resolve_model_option,
    storage_error_message,
)
from producer.tables import print_results_table

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "CliError", "app", "main"]


def _literal(text: str | None) -> str | None:
    """``text`` with rich's markup escaped, so that ``[default: ...]`` is printed and not read as a tag."""
    return None if text is None else escape(text)


def _reflow(text: str) -> str:
    """A docstring's paragraphs each on one line (rich keeps a docstring's line breaks, which then fall
    mid-sentence at the terminal's width); lines that start a list item or are indented stay as they are."""
    out = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        merged = [lines[0]]
        for line in lines[1:]:
            if line.startswith((" ", "-", "*", "\t")) or not merged[-1].strip():
                merged.append(line)
            else:
                merged[-1] = f"{merged[-1].rstrip()} {line.strip()}"
        out.append("\n".join(merged))
    return "\n\n".join(out)


def literal_help(command: Any) -> None:
    """Make the help of ``command``, its parameters and all its subcommands read exactly as written.

    typer renders help with rich markup on, which takes ``[default: all cores]`` for a style tag and
    drops it ("Processes for embedded mode ."). The commands' help texts here are plain text, so the
    brackets are escaped once, when the click command tree is built (:class:`LiteralHelpGroup`).

    Args:
        command: A click command or group (typer's ``TyperCommand`` / ``TyperGroup``).
    """
    for attr in ("help", "short_help", "epilog"):
        if isinstance(getattr(command, attr, None), str):
            setattr(command, attr, _literal(_reflow(getattr(command, attr))))
    for param in getattr(command, "params", []):
        if isinstance(getattr(param, "help", None), str):
            param.help = _literal(param.help)
    for sub in getattr(command, "commands", {}).values():
        literal_help(sub)


class LiteralHelpGroup(typer.core.TyperGroup):
    """The root command group: every help text of the tree printed as written (see :func:`literal_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        literal_help(self)


app = typer.Typer(
    cls=LiteralHelpGroup,
    help="Batch speech emotion recognition: label folders of recordings into a SQL database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")


_current_batch: int | None = None
"""The batch `submit` is working on, named in the Ctrl-C message so that `--resume` can be copied."""


class ChannelMode(StrEnum):
    """How multi-channel files are labelled (``submit --channels``)."""

    mix = "mix"
    split = "split"


class Fmt(StrEnum):
    """Output formats of ``results``."""

    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


class Status(StrEnum):
    """Row statuses ``results --status`` filters on."""

    pending = "pending"
    done = "done"
    failed = "failed"


class Normalise(StrEnum):
    """``submit --normalise``: label files alone, or normalised by their batch's statistics."""

    none = "none"
    batch = "batch"


# ---------------------------------------------------------------------------------------- submit


@app.command()
def submit(
    paths: Annotated[list[str] | None, typer.Argument(help="Audio files or folders (walked recursively).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Processes for embedded mode [default: all cores].")
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Files per unit of work [default: SER_CHUNK_SIZE (32) per task in distributed mode; "
            "embedded: about 4 units per process, at most 32 files].",
        ),
    ] = None,
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
            help="Which files share a speaker: ravdess, tess, parent (folder name), file (each file its own "
            "speaker) or regex:PATTERN; with --channels split also one per channel, ROLE=SPEC;ROLE=SPEC. "
            "Speakers with enough files are classified after normalising by their own statistics."
        ),
    ] = None,
    normalise: Annotated[
        Normalise,
        typer.Option(
            help="batch: normalise the features of the whole batch by its own statistics before labelling "
            "(one recording channel, mixed emotions; at least 20 files); none: every file alone."
        ),
    ] = Normalise.none,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model: a registered version, or a packaged model: default (accurate) or fast "
            "[default: the active one]."
        ),
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option(help="POST a JSON event to this URL when the batch is final [default: SER_NOTIFY_URL]."),
    ] = None,
    channels: Annotated[
        ChannelMode,
        typer.Option(
            help="mix: every file is mixed to mono, one row per file. split: each channel of a multi-channel "
            "file is its own recording (a call: agent and customer), one row per channel; another party's "
            "bleed into a channel is gated; mono files keep one row."
        ),
    ] = ChannelMode.mix,
    channel_names: Annotated[
        str | None,
        typer.Option(help="With --channels split: role of channel 0, 1, ... as a comma list, e.g. agent,customer."),
    ] = None,
) -> None:
    """Label every audio file under PATHS and record one row per file (per channel with --channels split).

    Without SER_BROKER_URL the batch is processed on this machine with all cores; with it, the files
    are queued for `ser-batch worker` processes. Exit code 0 when every file is done, 3 when some failed
    (each has a failed row with its reason), 2 for a usage error or bad setting found before anything is
    written, 1 for any other error (the batch is kept: finish it with --resume N), 130 when interrupted.
    """
    from producer.submit import (
        PageQueue,
        check_encoder_setting,
        check_notify_url,
        configured_chunk_size,
        open_batch,
        run_distributed,
        run_embedded_batch,
    )

    s = cli_settings()
    from worker.settings import prepare_process_env

    prepare_process_env(s)  # before numpy is imported: one BLAS thread per process
    from ser_model.segment import parse_segment_mode

    try:
        seg_spec = str(parse_segment_mode(segment))
    except ValueError as e:
        raise CliError(f"--segment: {e}", EXIT_USAGE) from None
    from producer.submit import parse_channel_names

    try:
        names = parse_channel_names(channel_names)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    if names and channels != ChannelMode.split:
        raise CliError("--channel-names needs --channels split", EXIT_USAGE)
    speaker_of = None
    if speaker_from is not None and not speaker_from.strip():
        raise CliError("--speaker-from is empty: give ravdess, tess, parent, file or regex:PATTERN", EXIT_USAGE)
    if speaker_from:
        from ser_model.speakers_from import channel_speaker_keys, parse_speaker_spec, split_channel_specs

        try:
            if channels == ChannelMode.split:
                by_channel = channel_speaker_keys(speaker_from, names)
                speaker_of = lambda p: by_channel(p, None, None)  # noqa: E731 - a mono file's key
            elif split_channel_specs(speaker_from) is not None:
                raise ValueError("a key per channel (ROLE=SPEC;...) needs --channels split")
            else:
                speaker_of = parse_speaker_spec(speaker_from)
        except ValueError as e:
            raise CliError(f"--speaker-from: {e}", EXIT_USAGE) from None
    if normalise is Normalise.batch:
        if speaker_from:
            raise CliError("--normalise batch and --speaker-from are alternatives: choose one", EXIT_USAGE)
        from ser_model.speaker import MODE_BATCH

        def speaker_of(_path: str) -> str:
            return MODE_BATCH  # one normalisation group: the whole batch

    notify_url = check_notify_url(notify or s.notify_url)
    if resume is None and not paths:
        raise CliError("give at least one file or folder (or --resume BATCH_ID)", EXIT_USAGE)
    model_version = resolve_model_option(model) if model is not None else None

    if not s.broker_url:  # labelled here: the encoder folder must be here too
        check_encoder_setting()

    def named(batch_id: int) -> None:
        global _current_batch
        _current_batch = batch_id  # for the Ctrl-C message, as soon as the batch row exists

    # distributed: each page of walked files is queued as soon as it is recorded
    queue = PageQueue(chunk_size or s.chunk_size) if s.broker_url and resume is None else None
    try:
        batch_id = open_batch(
            paths,
            resume=resume,
            chunk_size=chunk_size or s.chunk_size,
            segment=seg_spec,
            segment_min_s=segment_min_s,
            speaker_from=speaker_from,
            speaker_of=speaker_of,
            notify_url=notify_url,
            normalise=normalise.value if normalise is not Normalise.none else None,
            model_version=model_version,
            channels=str(channels.value),
            channel_names=names,
            on_batch=named,
            on_page=queue,
            quiet=quiet,
        )
        if s.broker_url:
            code = run_distributed(batch_id, chunk_size or s.chunk_size, wait_, quiet, queued=queue)
        else:
            code = run_embedded_batch(batch_id, workers or s.workers, configured_chunk_size(chunk_size), quiet)
    except KeyboardInterrupt:
        # Caught here: typer turns a KeyboardInterrupt into a silent Exit(130) before main() sees it.
        _print_interrupted()
        raise typer.Exit(130) from None
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------- worker


class LogLevel(StrEnum):
    """Celery log levels."""

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

    from worker.storage.registry import RegistryError, ensure_default_model

    s = cli_settings()
    if not s.broker_url:
        raise CliError("set SER_BROKER_URL (e.g. redis://localhost:6379/0) to start a worker", EXIT_USAGE)
    try:
        from worker.celery_app.config import check_time_limits

        check_time_limits(s)
    except ValueError as e:
        raise CliError(f"bad configuration: {e}", EXIT_USAGE) from None
    engine = open_engine()  # migrates a fresh SQLite; refuses a PostgreSQL behind head
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
    # like `exec celery ...` in a start script: signals go straight to Celery; argv is this Python and fixed
    # Celery options (no shell, no user-supplied program)
    os.execv(sys.executable, argv)  # nosec B606


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
    confident: Annotated[
        bool,
        typer.Option(
            "--confident",
            help="Leave out rows (or segments) flagged low_confidence: calibrated confidence under the "
            "model's threshold. Failed and pending rows are kept (filter them with --status).",
        ),
    ] = False,
) -> None:
    """List result rows as a table, CSV, JSON Lines or a JSON array (one row per file; p_<label> for every label).

    The csv, jsonl and json formats are streamed: rows are read in pages and written as they come,
    so a batch of millions of rows exports in constant memory. The table view shows at most the
    first 1000 rows.

    Every row carries the trust flags: low_confidence (calibrated confidence under the model's
    threshold; the label is still given), out_of_domain (the recording is unlike the training data)
    and ood_score (the distance behind that flag); empty when the model does not compute them.
    And the two dimensions: arousal (how activated) and valence (how positive), each in [0, 1] with
    0.5 the neutral point; empty for rows labelled before they existed.
    """
    from sqlalchemy import select

    from producer.export import (
        TABLE_MAX_ROWS,
        emotion_choices,
        export_query,
        export_rows,
        model_labels,
        result_where,
        write_csv,
        write_stream,
    )
    from worker.storage.db import Batch

    engine = open_engine()
    where = result_where(
        batch=batch,
        status=status.value if status else None,
        emotion=emotion,
        confident=confident,
        segments=segments,
    )
    table = fmt is Fmt.table
    # the table view holds its rows (rich lays them out): bounded, with a hint past the bound
    shown = (limit if limit and limit <= TABLE_MAX_ROWS else TABLE_MAX_ROWS + 1) if table else limit
    with engine.connect() as conn:
        if batch is not None and conn.scalar(select(Batch.id).where(Batch.id == batch)) is None:
            raise CliError(f"no batch {batch}", EXIT_USAGE)
        selected = result_where(batch=batch, status=status.value if status else None)
        if emotion:  # an unknown label is a mistake, not an empty answer
            choices = emotion_choices(conn, selected)
            if emotion.lower() not in choices:
                raise CliError(
                    f"--emotion: no label {emotion!r}; the model's labels are {', '.join(choices)}", EXIT_USAGE
                )
        labels = model_labels(conn, selected)
        columns, q = export_query(where, labels, segments=segments, limit=shown)
        rows = export_rows(conn, q, labels)
        if table:
            records = [dict(zip(columns, r, strict=True)) for r in rows]
            more = len(records) > TABLE_MAX_ROWS
            print_results_table(records[:TABLE_MAX_ROWS], output, segments)
            if more:
                err.print(
                    f"[yellow]only the first {TABLE_MAX_ROWS} rows are shown[/]: "
                    "all of them with `--format csv`, `--format jsonl` or `--format json` (streamed)",
                    highlight=False,
                )
            return

        def write(fh: Any) -> int:
            if fmt is Fmt.csv:  # values formatted by the database: within a small factor of its own dump
                return write_csv(conn, q, labels, columns, fh)
            return write_stream(rows, columns, fmt.value, fh)

        if output:
            with output.open("w", encoding="utf-8", newline="") as fh:
                n = write(fh)
            err.print(f"wrote {n} row(s) to {escape(str(output))}")
        else:
            write(sys.stdout)


@app.command()
def plot(
    result: Annotated[str, typer.Argument(help="Result id, or a file path (its newest row).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("timeline.png"),
    channel: Annotated[
        int | None,
        typer.Option(min=0, help="With a path: the row of this channel of a --channels split file."),
    ] = None,
) -> None:
    """Draw the emotion probabilities, arousal and valence over time of one (segmented) recording as a PNG."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ser_model.labels import EMOTIONS
    from ser_model.report import plot_timeline
    from worker.storage.db import Result, Segment

    with Session(open_engine()) as session:
        if result.isdigit():
            row = session.get(Result, int(result))
        else:
            q = select(Result).where(Result.path.in_([result, os.path.abspath(result)])).order_by(Result.id.desc())
            if channel is not None:
                q = q.where(Result.channel == channel)
            row = session.scalars(q.limit(1)).first()
        if row is None:
            raise CliError(
                f"no result {result!r} (give a result id from `ser-batch results --format csv` or a path)", EXIT_USAGE
            )
        if row.status != "done":
            raise CliError(f"result {row.id} is {row.status}: {row.error or 'not labelled yet'}", EXIT_USAGE)
        segs = [
            {"start_s": sg.start_s, "end_s": sg.end_s, "emotion": sg.emotion, "probabilities": sg.probabilities}
            | {"arousal": sg.arousal, "valence": sg.valence}
            for sg in session.scalars(select(Segment).where(Segment.result_id == row.id).order_by(Segment.idx))
        ]
        if not segs:  # a short file: one segment spanning it
            segs = [
                {
                    "start_s": 0.0,
                    "end_s": row.duration_s or 0.0,
                    "emotion": row.emotion,
                    "probabilities": row.probabilities,
                    "arousal": row.arousal,
                    "valence": row.valence,
                }
            ]
        probs = row.probabilities or {}
        labels = [e for e in EMOTIONS if e in probs] + sorted(set(probs) - set(EMOTIONS))
        who = "" if row.channel is None else f" [ch {row.channel}{' ' + row.role if row.role else ''}]"
        title = (
            f"{row.path}{who} ({row.analysis_mode}, {len(segs)} segment(s), overall {row.emotion} {row.confidence:.2f})"
        )
    out = plot_timeline(segs, labels, output, title=title)
    console.print(f"wrote {escape(str(out))}")


# ---------------------------------------------------------------------------------------- status


class StatusFmt(StrEnum):
    """Output formats of ``status``."""

    table = "table"
    json = "json"


@app.command()
def status(
    batch_id: Annotated[int | None, typer.Argument(help="Batch id [default: the latest].")] = None,
    fmt: Annotated[StatusFmt, typer.Option("--format", "-f", help="Output format.")] = StatusFmt.table,
) -> None:
    """Show done/failed/pending counts, low-confidence and out-of-domain counts, warnings, files/s and ETA.

    Also the batch's mean arousal and valence and the share of rows high in arousal / positive in
    valence (above 0.5). JSON: {"batch_id", "status", "mode", "counts": {"total", "done", "failed",
    "pending", "low_confidence", "out_of_domain"}, "dimensions": {"n", "arousal_mean", "valence_mean",
    "high_arousal_share", "positive_valence_share"}, "warnings": [{"code", "message", ...}],
    "files_per_s", "eta_s", "finished_at"}.
    """
    import json

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from producer.tables import dimension_text
    from worker.engine.assess import dimension_summary, no_dimensions
    from worker.storage.db import Batch, Result, batch_summary

    engine = open_engine()
    with Session(engine) as session:
        if batch_id is None:
            batch_id = session.scalar(select(func.max(Batch.id)))
            if batch_id is None:
                raise CliError("no batches yet: run `ser-batch submit PATH`", EXIT_USAGE)
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise CliError(f"no batch {batch_id}", EXIT_USAGE)
        # a final batch from its own row (counters kept by the finaliser), else one pass over its rows
        counts = batch_summary(session, batch)
        # a final batch's dimensions are kept with it by the finaliser; otherwise one aggregate
        dims = batch.dimensions if counts.get("stored") and batch.dimensions else dimension_summary(session, batch_id)
        warnings = batch.warnings
        if warnings is None and counts["pending"] == 0:
            # finished before the warnings were stored (or not finalised yet): computed for display only
            from worker.engine.assess import assess_batch  # numpy and the trust module: only when needed

            warnings = assess_batch(session, batch_id, store=False)
        warnings = list(warnings or [])
        last = counts["last_finished_at"]
        split = (batch.options or {}).get("channels") == "split"
        by_channel: dict[tuple[int | None, str | None], dict[str, Any]] = {}
        if split:  # rows per channel (aggregated in SQL): NULL channel = mono files, pending files
            dims_by_channel = dimension_summary(session, batch_id, per_channel=True)
            q = (
                select(Result.channel, Result.role, Result.status, func.count())
                .where(Result.batch_id == batch_id)
                .group_by(Result.channel, Result.role, Result.status)
            )
            for ch, role, st, n in session.execute(q):
                rec = by_channel.setdefault(
                    (ch, role),
                    {"channel": ch, "role": role, "done": 0, "failed": 0, "pending": 0}
                    | {"dimensions": dims_by_channel.get((ch, role)) or no_dimensions()},
                )
                rec[st] = n
    per_channel = sorted(by_channel.values(), key=lambda r: (r["channel"] is not None, r["channel"] or 0))
    finished = counts["done"] + counts["failed"]
    start = aware(batch.created_at)
    end = aware(last) if counts["pending"] == 0 and last else datetime.now(UTC)
    elapsed = max((end - start).total_seconds(), 1e-9) if start else 0.0
    rate = finished / elapsed if elapsed and finished else 0.0
    eta = counts["pending"] / rate if rate else None
    finished_at = aware(batch.finished_at)
    if fmt is StatusFmt.json:
        doc = {
            "batch_id": batch_id,
            "status": batch.status,
            "mode": batch.mode,
            "counts": {k: counts[k] for k in ("total", "done", "failed", "pending", "low_confidence", "out_of_domain")},
            "dimensions": dims,
            "warnings": warnings,
            "files_per_s": round(rate, 3),
            "eta_s": None if eta is None else round(eta, 1),
            "finished_at": finished_at.isoformat() if finished_at else None,
        }
        if split:  # a mix batch's document is unchanged
            doc.update(channels="split", by_channel=per_channel)
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    t = Table(title=f"batch {batch_id}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("status", batch.status)
    t.add_row("mode", batch.mode)
    t.add_row("created", aware(batch.created_at).isoformat(timespec="seconds"))
    t.add_row("sources", escape("\n".join(batch.source_paths)))
    t.add_row("files" if not split else "rows", str(counts["total"]))
    t.add_row("done", str(counts["done"]))
    t.add_row("failed", str(counts["failed"]))
    t.add_row("pending", str(counts["pending"]))
    t.add_row("low confidence", str(counts["low_confidence"]))
    t.add_row("out of domain", str(counts["out_of_domain"]))
    arousal, valence = dimension_text(dims)
    t.add_row("arousal (mean)", arousal)
    t.add_row("valence (mean)", valence)
    t.add_row("non-audio ignored", str(batch.n_ignored))
    if split:
        lines = [
            (
                "mono / not split yet"
                if r["channel"] is None
                else f"ch {r['channel']}" + (f" {r['role']}" if r["role"] else "")
            )
            + f": {r['done']} done, {r['failed']} failed, {r['pending']} pending"
            + ("; arousal {}, valence {}".format(*dimension_text(r["dimensions"])) if r["dimensions"]["n"] else "")
            for r in per_channel
        ]
        t.add_row("channels", escape("split (one row per file and channel)\n" + "\n".join(lines)))
    t.add_row("files/s", f"{rate:.1f}")
    t.add_row("ETA", "-" if eta is None else f"{eta:.0f} s")
    for w in warnings:
        t.add_row("[yellow]warning[/]", f"[yellow]{escape(str(w.get('message', w.get('code', ''))))}[/]")
    console.print(t)


@app.command()
def batches(limit: Annotated[int, typer.Option(min=1, help="Newest N batches.")] = 20) -> None:
    """List batches, newest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, batch_summary

    engine = open_engine()
    t = Table(show_header=True, header_style="bold")
    for col in ("id", "created", "mode", "status", "files", "done", "failed", "pending", "sources"):
        t.add_column(col, overflow="fold")
    with Session(engine) as session:
        for b in session.scalars(select(Batch).order_by(Batch.id.desc()).limit(limit)):
            c = batch_summary(session, b)  # a final batch from its row, as `status`
            t.add_row(
                str(b.id),
                aware(b.created_at).isoformat(timespec="seconds"),
                b.mode,
                b.status,
                str(c["total"]),
                str(c["done"]),
                str(c["failed"]),
                str(c["pending"]),
                escape(", ".join(b.source_paths)),
            )
    console.print(t)


# ---------------------------------------------------------------------------------------- config, db


@app.command()
def config() -> None:
    """Show the settings in force (passwords redacted) and where each can be changed."""
    from worker.settings import Settings

    s = cli_settings()
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

    from worker.storage.migrate import current_revision, upgrade
    from worker.urls import redact_url

    s = cli_settings()
    try:
        before = current_revision(s.database_url)
        upgrade(s.database_url, revision)
        after = current_revision(s.database_url)
    except SQLAlchemyError as e:
        raise CliError(f"cannot migrate {redact_url(s.database_url)}: {' '.join(str(e).split())[:300]}") from None
    console.print(f"database {redact_url(s.database_url)}: {before or 'empty'} -> {after}")


@db_app.command("roles")
def db_roles(
    apply: Annotated[
        bool, typer.Option("--apply", help="Run the statements on SER_DATABASE_URL (else print them).")
    ] = False,
    prefix: Annotated[str, typer.Option(help="Role names: PREFIX_reader, PREFIX_worker, PREFIX_admin.")] = "ser",
) -> None:
    """Print (default) or apply the least-privilege PostgreSQL roles: reader, worker, admin.

    reader: SELECT on batches, results, segments, models, jobs (not the webhook URLs). worker: writes
    batches, results, segments, jobs and webhooks, reads models. admin: owns the tables (writes models,
    runs migrations). Give each login role membership of one: CREATE ROLE alice LOGIN PASSWORD '...'
    IN ROLE ser_reader. Run --apply after `db upgrade` (and again after later upgrades) as a superuser
    or the database owner with CREATEROLE.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from worker.storage.roles import apply_roles, roles_sql
    from worker.urls import redact_url

    s = cli_settings()
    try:
        if not apply:
            db = make_url(s.database_url).database if s.database_url.startswith("postgresql") else None
            for stmt in roles_sql(db or "ser_batch", prefix):
                print(stmt + ";")
            return
        apply_roles(s.database_url, prefix)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except SQLAlchemyError as e:
        raise CliError(
            f"cannot apply roles on {redact_url(s.database_url)}: {' '.join(str(e).split())[:300]}"
        ) from None
    console.print(f"roles {prefix}_reader, {prefix}_worker, {prefix}_admin applied on {redact_url(s.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Show the migration revision the database is at."""
    from worker.storage.migrate import current_revision, head_revision

    s = cli_settings()
    open_engine(migrate=False)
    console.print(f"current: {current_revision(s.database_url) or 'empty'}; head: {head_revision()}")


# ---------------------------------------------------------------------------------------- train, models

app.command()(train_cmds.train)
app.command()(train_cmds.evaluate)
models_app.command("list")(train_cmds.models_list)
models_app.command("show")(train_cmds.models_show)
models_app.command("activate")(train_cmds.models_activate)
models_app.command("export")(train_cmds.models_export)
models_app.command("convert")(train_cmds.models_convert)
models_app.command("import")(train_cmds.models_import)


# ---------------------------------------------------------------------------------------- after the labels
# report, labelling loop, re-scoring: commands kept in their own modules (they import producer.common
# and producer.submit, never this module, so `python -m producer.cli` needs no sys.modules alias)

app.command()(report.report)
app.add_typer(labelling.labels_app, name="labels")
app.command()(compare.rescore)
app.command()(compare.diff)


# ---------------------------------------------------------------------------------------- entry point


def _print_interrupted() -> None:
    """Ctrl-C: say what is kept and how to finish, naming the batch when there is one."""
    print_interrupted(_current_batch)


def _interrupted() -> NoReturn:
    _print_interrupted()
    sys.exit(130)


def main() -> None:
    """Console-script entry point: run the app and turn errors into messages and exit codes."""
    try:
        _main()
    finally:
        _before_exit()


def _before_exit() -> None:
    """Close pooled database connections, then freeze the garbage collector's view of every object.

    With scikit-learn-free classification the interpreter's own shutdown became one of the larger
    costs of a short ``submit``: its final garbage collections walk every object of numpy, SciPy,
    SQLAlchemy and rich (about 0.2 s on this project's machines). :func:`gc.freeze` moves them to the
    permanent generation, which those collections skip; the connections are closed first so no
    finaliser is left to a collection.
    """
    import gc

    if "worker.storage.db" in sys.modules:
        sys.modules["worker.storage.db"].close_engines()
    gc.freeze()


def _main() -> None:
    try:
        rv = app(standalone_mode=False)
    except CliError as e:
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # one line, for grep and logs
        sys.exit(e.code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        # click's usage errors (typer >= 0.22 vendors click as typer._click, so match by behaviour)
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            if hasattr(e, "format_message"):  # one line like every other error, and where the help is
                msg = " ".join(str(e.format_message()).replace("Value error, ", "").split())
                ctx = getattr(e, "ctx", None)
                where = f" (see `{ctx.command_path if ctx is not None else 'ser-batch'} --help`)"
                if msg:  # no message: a command group called alone, whose help is already shown
                    err.print(f"[red]error:[/] {escape(msg)}{escape(where)}", highlight=False, soft_wrap=True)
            else:
                e.show()
            sys.exit(EXIT_USAGE)
        if type(e).__name__ == "Abort":  # click turns Ctrl-C (KeyboardInterrupt) into Abort
            _interrupted()
        if (
            isinstance(
                e, FileNotFoundError | FileExistsError | IsADirectoryError | NotADirectoryError | PermissionError
            )
            and e.filename
        ):
            # a path the user gave (--output into a missing folder, onto a folder, under a file): a usage error, in words
            why = e.strerror or str(e)
            if isinstance(e, FileExistsError):  # a folder to create where a file is
                why = "a file is in the way of a folder to create"
            err.print(f"[red]error:[/] cannot use {escape(str(e.filename))}: {escape(why)}", highlight=False)
            sys.exit(EXIT_USAGE)
        storage = storage_error_message(e, _current_batch)  # a full or read-only database: no SQL text
        if storage:
            err.print(f"[red]error:[/] {escape(storage)}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_ERROR)
        if type(getattr(e, "orig", None)).__name__ == "InsufficientPrivilege":  # PostgreSQL said no
            first = str(e.orig).splitlines()[0]  # type: ignore[attr-defined]
            err.print(
                f"[red]error:[/] {first}: this database login's role does not allow it (see `ser-batch db roles`)",
                highlight=False,
            )
            sys.exit(EXIT_ERROR)
        err.print(f"[red]error:[/] {type(e).__name__}: {escape(str(e))}", highlight=False)
        if os.environ.get("SER_DEBUG"):
            raise
        sys.exit(EXIT_ERROR)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


if __name__ == "__main__":
    main()
