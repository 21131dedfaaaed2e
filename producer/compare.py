"""`ser-batch rescore` and `ser-batch diff`: label a batch's files again, and compare two batches.

``rescore`` records a new batch with the same files and options (segmentation, speaker keys) as an
earlier one, pinned to one model (the given version or the active one, stored in the batch's
``options["model_version"]`` so that every chunk, a ``--resume`` and every worker use it), and runs
it exactly like ``submit``. ``diff`` lists the files whose label differs between two batches and the
transition matrix, and how far arousal and valence moved (mean absolute difference, files that
crossed 0.5).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

DIFF_COLUMNS = (
    "path",
    "emotion_a",
    "emotion_b",
    "confidence_a",
    "confidence_b",
    "model_a",
    "model_b",
    "status_a",
    "status_b",
    "arousal_a",
    "arousal_b",
    "valence_a",
    "valence_b",
)
"""Columns of the changed files of ``diff`` (the dimensions last, so the earlier columns keep their place)."""


def create_rescore_batch(
    session: Any, batch_id: int, *, model_version: str, mode: str, notify_url: str | None = None
) -> tuple[int, int]:
    """Record a new batch with the files, sizes, speaker keys and options of ``batch_id``.

    Args:
        session: open session inside a transaction (committed by the caller before any work).
        batch_id: the batch to score again.
        model_version: registered model the new batch is pinned to.
        mode: ``"embedded"`` or ``"distributed"``.
        notify_url: webhook for the new batch (the old batch's webhook is not inherited).

    Returns:
        ``(new batch id, number of files)``.

    Raises:
        LookupError: no such batch, or it has no files.
    """
    from sqlalchemy import DateTime, func, insert, literal, select

    from worker.storage.db import Batch, Result, utcnow

    old = session.get(Batch, batch_id)
    if old is None:
        raise LookupError(f"no batch {batch_id}")
    one_per_file = Result.channel.is_(None) | (Result.channel == 0)
    n = session.scalar(select(func.count()).where(Result.batch_id == batch_id, one_per_file)) or 0
    if not n:
        raise LookupError(f"batch {batch_id} has no files")
    options = {k: v for k, v in (old.options or {}).items() if k not in ("notify_url", "rescore_of")}
    options.update(model_version=model_version, rescore_of=batch_id)
    new = Batch(
        source_paths=list(old.source_paths or []),
        status="running",
        mode=mode,
        n_files=n,
        n_ignored=old.n_ignored,
        options=options,
    )
    session.add(new)
    session.flush()
    if notify_url:
        from worker.engine.notify import record_webhook

        record_webhook(session, new, notify_url)
    # one INSERT ... SELECT: the files never pass through this process (a batch can hold millions).
    # One pending row per file: a split batch's channels become rows again when the file is processed;
    # its channel-0 row (or the mixed row of a file that failed whole) gives the path, size and speaker.
    now = utcnow()
    rows = select(
        literal(new.id),
        Result.path,
        literal("pending"),
        Result.size_bytes,
        Result.speaker,
        literal(0),
        literal(now, DateTime(timezone=True)),
        literal(now, DateTime(timezone=True)),
    ).where(Result.batch_id == batch_id, one_per_file)
    cols = ["batch_id", "path", "status", "size_bytes", "speaker", "attempts", "created_at", "updated_at"]
    session.execute(insert(Result).from_select(cols, rows.order_by(Result.id)))
    return new.id, n


def rescore(
    batch_id: Annotated[int, typer.Argument(help="Batch whose files are labelled again.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model version [default: the active one].")] = None,
    wait_: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Distributed mode: wait and show progress until finished.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Processes for embedded mode [default: all cores].")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    notify: Annotated[
        str | None, typer.Option("--notify", help="POST a JSON event to this URL when the new batch is final.")
    ] = None,
) -> None:
    """Label the files of BATCH_ID again as a new batch (same segmentation and speakers) and print its id.

    Compare the two with `ser-batch diff BATCH_ID NEW_ID`.
    """
    from sqlalchemy.orm import Session

    from producer.common import EXIT_USAGE, CliError, cli_settings, console, err, open_engine, print_interrupted
    from producer.submit import check_notify_url, configured_chunk_size, run_distributed, run_embedded_batch
    from worker.settings import prepare_process_env
    from worker.storage.db import ModelVersion
    from worker.storage.registry import RegistryError, active_version, ensure_default_model, resolve_version

    s = cli_settings()
    prepare_process_env(s)
    notify_url = check_notify_url(notify or s.notify_url)
    engine = open_engine()
    with Session(engine) as session, session.begin():
        ensure_default_model(session)
        version = model or active_version(session)
        if model is not None:
            try:
                version = resolve_version(session, model)  # a version, or a packaged name: default, fast
            except RegistryError as e:
                raise CliError(str(e), EXIT_USAGE) from None
        if version is None or session.get(ModelVersion, version) is None:
            raise CliError(f"no model version {version!r} (see `ser-batch models list`)", EXIT_USAGE)
        try:
            new_id, n = create_rescore_batch(
                session,
                batch_id,
                model_version=version,
                mode="distributed" if s.broker_url else "embedded",
                notify_url=notify_url,
            )
        except LookupError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    err.print(f"batch [bold]{new_id}[/]: {n} file(s) of batch {batch_id} again, model {version}")
    chunk = s.chunk_size
    try:
        if s.broker_url:
            code = run_distributed(new_id, chunk, wait_, quiet)  # prints the new id
        else:
            code = run_embedded_batch(new_id, workers or s.workers, configured_chunk_size(None), quiet)
            console.print(new_id)
    except KeyboardInterrupt:
        print_interrupted(new_id)
        raise typer.Exit(130) from None
    err.print(f"compare: `ser-batch diff {batch_id} {new_id}`")
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------------ diff


def _pair() -> tuple[Any, Any, Any, Any, list[Any]]:
    """The two batches' rows joined on the path and channel: ``(row a, row b, label a, label b, join)``.

    A split batch's rows are compared channel by channel; a mixed row (channel NULL) and a channel of
    the same file are different recordings (``only_a`` / ``only_b``).
    """
    from sqlalchemy import and_, case, func, literal
    from sqlalchemy.orm import aliased

    from worker.storage.db import Result

    ra, rb = aliased(Result, name="ra"), aliased(Result, name="rb")

    def label(r: Any) -> Any:  # the emotion of a done row, else "(failed)" / "(pending)"
        return case(
            (and_(r.status == "done", r.emotion.is_not(None)), r.emotion),
            else_=literal("(") + r.status + literal(")"),
        )

    same_channel = func.coalesce(ra.channel, -1) == func.coalesce(rb.channel, -1)
    return ra, rb, label(ra), label(rb), [and_(ra.path == rb.path, same_channel)]


def diff_summary(session: Any, a: int, b: int) -> dict[str, Any]:
    """Counts and the transition matrix of two batches matched on the path and channel, from SQL aggregates.

    Args:
        session: an open SQLAlchemy session (or connection).
        a: first batch.
        b: second batch.

    Returns:
        ``{"files_a", "files_b", "compared", "changed", "unchanged", "only_a", "only_b",
        "transitions": {label_a: {label_b: n}}, "dimensions": :func:`dimension_change`}``. A label
        is the emotion of a ``done`` row, else ``(failed)`` / ``(pending)``; the transition matrix
        counts every compared file (its diagonal holds the unchanged ones).

    Raises:
        LookupError: a batch does not exist.
    """
    from sqlalchemy import func, select

    from worker.storage.db import Batch, Result

    for bid in (a, b):
        if session.execute(select(Batch.id).where(Batch.id == bid)).first() is None:
            raise LookupError(f"no batch {bid}")
    n = dict(
        session.execute(
            select(Result.batch_id, func.count()).where(Result.batch_id.in_([a, b])).group_by(Result.batch_id)
        ).all()
    )
    ra, rb, la, lb, on = _pair()
    q = (
        select(la.label("la"), lb.label("lb"), func.count())
        .select_from(ra)
        .join(rb, *on)
        .where(ra.batch_id == a, rb.batch_id == b)
        .group_by(la, lb)
    )
    matrix: dict[str, dict[str, int]] = {}
    compared = changed = 0
    for x, y, k in sorted(session.execute(q).all()):
        matrix.setdefault(x, {})[y] = k
        compared += k
        changed += k if x != y else 0
    files_a, files_b = n.get(a, 0), n.get(b, 0)
    return {
        "files_a": files_a,
        "files_b": files_b,
        "compared": compared,
        "changed": changed,
        "unchanged": compared - changed,
        "only_a": files_a - compared,
        "only_b": files_b - compared,
        "transitions": matrix,
        "dimensions": dimension_change(session, a, b),
    }


DIMENSION_CHANGE_KEYS = (
    "compared",
    "arousal_mad",
    "valence_mad",
    "arousal_mean_a",
    "arousal_mean_b",
    "valence_mean_a",
    "valence_mean_b",
    "arousal_crossed",
    "valence_crossed",
)


def dimension_change(session: Any, a: int, b: int) -> dict[str, Any]:
    """How far arousal and valence moved between two batches, file by file (matched as :func:`diff_summary` matches).

    One SQL aggregate over the join, on the files (channels) labelled in both batches with both
    dimensions: rows of either batch labelled before migration 0009 (NULL) are left out.

    Args:
        session: an open SQLAlchemy session (or connection).
        a: first batch.
        b: second batch.

    Returns:
        ``{"compared": n, "arousal_mad", "valence_mad"`` (mean absolute difference, in units of the
        [0, 1] scale), ``"arousal_mean_a", "arousal_mean_b", "valence_mean_a", "valence_mean_b"``
        (means of the same files), ``"arousal_crossed", "valence_crossed"}`` (files whose side of
        0.5 changed: high/low arousal, positive/negative valence). All but ``compared`` None when
        no file has dimensions in both.
    """
    from sqlalchemy import and_, func, or_, select

    ra, rb, _, _, on = _pair()

    def crossed(col_a: Any, col_b: Any) -> Any:
        return func.count().filter(or_(and_(col_a > 0.5, col_b <= 0.5), and_(col_a <= 0.5, col_b > 0.5)))

    q = (
        select(
            func.count(),
            func.avg(func.abs(ra.arousal - rb.arousal)),
            func.avg(func.abs(ra.valence - rb.valence)),
            func.avg(ra.arousal),
            func.avg(rb.arousal),
            func.avg(ra.valence),
            func.avg(rb.valence),
            crossed(ra.arousal, rb.arousal),
            crossed(ra.valence, rb.valence),
        )
        .select_from(ra)
        .join(rb, *on)
        .where(
            ra.batch_id == a,
            rb.batch_id == b,
            ra.status == "done",
            rb.status == "done",
            *(c.is_not(None) for c in (ra.arousal, rb.arousal, ra.valence, rb.valence)),
        )
    )
    row = session.execute(q).one()
    n = int(row[0] or 0)
    if not n:
        return dict.fromkeys(DIMENSION_CHANGE_KEYS) | {"compared": 0}
    return {
        "compared": n,
        **{k: float(v) for k, v in zip(DIMENSION_CHANGE_KEYS[1:7], row[1:7], strict=True)},
        "arousal_crossed": int(row[7]),
        "valence_crossed": int(row[8]),
    }


def dimension_line(dims: dict[str, Any]) -> str:
    """``"; arousal moved 0.034 on average (2 crossed 0.5), valence 0.051 (1)"``, or empty without dimensions."""
    if not dims.get("compared"):
        return ""
    return (
        f"; arousal moved {dims['arousal_mad']:.3f} on average ({dims['arousal_crossed']} crossed 0.5), "
        f"valence {dims['valence_mad']:.3f} ({dims['valence_crossed']} crossed 0.5)"
    )


def changed_rows(
    conn: Any,
    a: int,
    b: int,
    *,
    limit: int | None = None,
    page_rows: int = 5000,
    columns: Sequence[str] = DIFF_COLUMNS,
) -> Iterator[tuple]:
    """The files (channels of split files) whose label differs between batches ``a`` and ``b``, by path, in pages.

    Yields:
        Value tuples in ``columns`` order (:data:`DIFF_COLUMNS`, or :func:`diff_columns` with ``channel``).
    """
    from sqlalchemy import select

    ra, rb, la, lb, on = _pair()
    cols = {
        "path": ra.path,
        "channel": ra.channel,
        "emotion_a": ra.emotion,
        "emotion_b": rb.emotion,
        "confidence_a": ra.confidence,
        "confidence_b": rb.confidence,
        "arousal_a": ra.arousal,
        "arousal_b": rb.arousal,
        "valence_a": ra.valence,
        "valence_b": rb.valence,
        "model_a": ra.model_version,
        "model_b": rb.model_version,
        "status_a": ra.status,
        "status_b": rb.status,
    }
    q = (
        select(*(cols[c] for c in columns))
        .select_from(ra)
        .join(rb, *on)
        .where(ra.batch_id == a, rb.batch_id == b, la != lb)
        .order_by(ra.path, ra.channel)
    )
    if limit:
        q = q.limit(limit)
    for page in conn.execution_options(yield_per=page_rows).execute(q).partitions():
        yield from (tuple(r) for r in page)


def diff_batches(session: Any, a: int, b: int) -> dict[str, Any]:
    """Compare the labels of two batches file by file (matched on the path), in memory.

    For scripts on small batches: ``{"a", "b", "summary": :func:`diff_summary`, "changed": [row per
    file whose label differs, with DIFF_COLUMNS]}``. The ``diff`` command streams instead.

    Raises:
        LookupError: a batch does not exist.
    """
    summary = diff_summary(session, a, b)
    cols = diff_columns(session, a, b)
    changed = [dict(zip(cols, r, strict=True)) for r in changed_rows(session.connection(), a, b, columns=cols)]
    return {"a": a, "b": b, "summary": summary, "changed": changed}


def diff_columns(session: Any, a: int, b: int) -> tuple[str, ...]:
    """:data:`DIFF_COLUMNS`, with ``channel`` after ``path`` when either batch is ``--channels split``
    (a diff of mixed batches keeps its columns)."""
    from sqlalchemy import select

    from worker.storage.db import Batch

    opts = session.execute(select(Batch.options).where(Batch.id.in_([a, b]))).scalars()
    if any((o or {}).get("channels") == "split" for o in opts):
        return ("path", "channel", *DIFF_COLUMNS[1:])
    return DIFF_COLUMNS


class DiffFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _moved(x: float | None, y: float | None) -> str:
    """``0.21 -> 0.84`` (a dimension in batch A and B); ``-`` for a side without one."""
    if x is None and y is None:
        return ""
    return f"{'-' if x is None else f'{x:.2f}'} -> {'-' if y is None else f'{y:.2f}'}"


def _ordered(labels: set[str]) -> list[str]:
    from ser_model.labels import EMOTIONS

    return [e for e in EMOTIONS if e in labels] + sorted(x for x in labels if x not in EMOTIONS)


def diff(
    a: Annotated[int, typer.Argument(help="First batch id.")],
    b: Annotated[int, typer.Argument(help="Second batch id (e.g. the one `rescore` printed).")],
    fmt: Annotated[DiffFormat, typer.Option("--format", "-f", help="Output format.")] = DiffFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead.")] = None,
) -> None:
    """List the files whose label differs between batches A and B, with a summary and the transition matrix.

    Files are matched on their path. The summary also says how far arousal and valence moved over
    all compared files (mean absolute difference, files that crossed 0.5), whether or not their label
    changed. CSV: one row per changed file (the summary goes to stderr);
    JSON: {"a", "b", "summary", "changed"}; table: both (at most 1000 changed files listed). The
    summary comes from SQL aggregates and the changed files are streamed in pages, so two batches of
    millions of files compare in constant memory.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from sqlalchemy.orm import Session

    from producer.common import EXIT_USAGE, CliError, console, err, open_engine
    from producer.export import TABLE_MAX_ROWS, write_stream

    with Session(open_engine()) as session:
        try:
            sm = diff_summary(session, a, b)
        except LookupError as e:
            raise CliError(str(e), EXIT_USAGE) from None
        conn = session.connection()
        cols = diff_columns(session, a, b)
        line = (
            f"batch {a} -> {b}: {sm['changed']} of {sm['compared']} file(s) changed label"
            + (f"; {sm['only_a']} only in {a}" if sm["only_a"] else "")
            + (f"; {sm['only_b']} only in {b}" if sm["only_b"] else "")
            + dimension_line(sm["dimensions"])
        )
        if fmt is not DiffFormat.table:
            fh = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
            try:
                if fmt is DiffFormat.json:  # streamed: the summary first, then the changed files as they come
                    head = json.dumps({"a": a, "b": b, "summary": sm}, indent=2)
                    fh.write(head[: head.rindex("}")].rstrip() + ',\n  "changed": ')
                    write_stream(changed_rows(conn, a, b, columns=cols), cols, "json", fh)
                    fh.write("}\n")
                else:
                    write_stream(changed_rows(conn, a, b, columns=cols), cols, "csv", fh)
            finally:
                if output:
                    fh.close()
            err.print(f"wrote {escape(str(output))}: {line}" if output else line, highlight=False)
            return
        out = Console(file=io.StringIO(), width=200) if output else console
        t = Table(title=f"files whose label changed ({a} -> {b})", header_style="bold")
        heads = ("path", f"emotion {a}", f"emotion {b}", f"conf. {a}", f"conf. {b}", "arousal", "valence")
        for c in (*heads, f"model {a}", f"model {b}"):
            t.add_column(c, overflow="fold")
        for row in changed_rows(conn, a, b, limit=TABLE_MAX_ROWS, columns=cols):
            r = dict(zip(cols, row, strict=True))
            t.add_row(
                escape(r["path"] if r.get("channel") is None else f"{r['path']} [ch {r['channel']}]"),
                r["emotion_a"] or f"({r['status_a']})",
                r["emotion_b"] or f"({r['status_b']})",
                "" if r["confidence_a"] is None else f"{r['confidence_a']:.2f}",
                "" if r["confidence_b"] is None else f"{r['confidence_b']:.2f}",
                _moved(r["arousal_a"], r["arousal_b"]),
                _moved(r["valence_a"], r["valence_b"]),
                r["model_a"] or "",
                r["model_b"] or "",
            )
    out.print(t)
    if sm["changed"] > TABLE_MAX_ROWS:
        out.print(
            f"only the first {TABLE_MAX_ROWS} changed files are listed: all of them with `--format csv`",
            highlight=False,
        )
    labels_a = _ordered(set(sm["transitions"]))
    labels_b = _ordered({lb for row in sm["transitions"].values() for lb in row})
    m = Table(title=f"transitions: rows batch {a}, columns batch {b}", header_style="bold")
    m.add_column(f"{a} \\ {b}")
    for lb in labels_b:
        m.add_column(lb, justify="right")
    for la in labels_a:
        m.add_row(la, *(str(sm["transitions"][la].get(lb, "")) for lb in labels_b))
    out.print(m)
    out.print(line, highlight=False)
    if output:
        output.write_text(out.file.getvalue(), encoding="utf-8")  # type: ignore[attr-defined]
        err.print(f"wrote {escape(str(output))}: {line}", highlight=False)
