"""`ser-batch rescore` and `ser-batch diff`: label a batch's files again, and compare two batches.

``rescore`` records a new batch with the same files and options (segmentation, speaker keys) as an
earlier one, pinned to one model (the given version or the active one, stored in the batch's
``options["model_version"]`` so that every chunk, a ``--resume`` and every worker use it), and runs
it exactly like ``submit``. ``diff`` lists the files whose label differs between two batches and the
transition matrix.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
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
)


def pinned_model(engine: Any, batch_id: int) -> str | None:
    """The model version a batch is pinned to (``options["model_version"]``, set by ``rescore``), or None."""
    from sqlalchemy.orm import Session

    from worker.db import Batch

    with Session(engine) as session:
        batch = session.get(Batch, batch_id)
        return (batch.options or {}).get("model_version") if batch is not None else None


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
    from sqlalchemy import select

    from worker.db import Batch, Result, insert_pending

    old = session.get(Batch, batch_id)
    if old is None:
        raise LookupError(f"no batch {batch_id}")
    rows = session.execute(
        select(Result.path, Result.size_bytes, Result.speaker).where(Result.batch_id == batch_id).order_by(Result.id)
    ).all()
    if not rows:
        raise LookupError(f"batch {batch_id} has no files")
    options = {k: v for k, v in (old.options or {}).items() if k not in ("notify_url", "rescore_of")}
    options.update(model_version=model_version, rescore_of=batch_id)
    new = Batch(
        source_paths=list(old.source_paths or []),
        status="running",
        mode=mode,
        n_files=len(rows),  # set to the number of distinct files below
        n_ignored=old.n_ignored,
        options=options,
    )
    session.add(new)
    session.flush()
    if notify_url:
        from worker.notify import record_webhook

        record_webhook(session, new, notify_url)
    # one pending row per file: a split batch's channels become rows again when the file is processed
    # (the first row of a path, in id order, gives its speaker: a file's own, or channel 0's)
    files: dict[str, tuple[int | None, str | None]] = {}
    for p, n, spk in rows:
        files.setdefault(p, (n, spk))
    speakers = {p: spk for p, (_, spk) in files.items()} if any(spk for _, spk in files.values()) else None
    new.n_files = len(files)
    insert_pending(session, new.id, list(files), {p: n for p, (n, _) in files.items() if n is not None}, speakers)
    return new.id, len(files)


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
    from worker.db import ModelVersion
    from worker.registry import RegistryError, active_version, ensure_default_model, resolve_version
    from worker.settings import prepare_process_env

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


def _rows(session: Any, batch_id: int) -> dict[tuple[str, int | None], dict[str, Any]]:
    """``{(path, channel): row}``: a file's mixed row has channel None, a split file one row per channel."""
    from sqlalchemy import select

    from worker.db import Result

    q = select(
        Result.path, Result.channel, Result.status, Result.emotion, Result.confidence, Result.model_version
    ).where(Result.batch_id == batch_id)
    return {(r.path, r.channel): r._asdict() for r in session.execute(q)}


def _key_order(k: tuple[str, int | None]) -> tuple[str, int]:
    return (k[0], -1 if k[1] is None else k[1])


def _label(r: dict[str, Any]) -> str:
    """What a file was labelled: its emotion, or its status when it has no label (failed, pending)."""
    return r["emotion"] if r["status"] == "done" and r["emotion"] else f"({r['status']})"


def diff_batches(session: Any, a: int, b: int) -> dict[str, Any]:
    """Compare the labels of two batches file by file (matched on the path and channel).

    Rows of ``--channels split`` batches are compared channel by channel; a split file's channel
    and a mixed row of the same file are different recordings (``only_a`` / ``only_b``).

    Args:
        session: an open SQLAlchemy session.
        a: first batch.
        b: second batch.

    Returns:
        ``{"a", "b", "changed": [row per file whose label differs, with DIFF_COLUMNS], "summary":
        {"files_a", "files_b", "compared", "changed", "unchanged", "only_a", "only_b",
        "transitions": {label_a: {label_b: n}}}}``. A label is the emotion of a ``done`` row, else
        ``(failed)`` / ``(pending)``; the transition matrix counts every compared file (its diagonal
        holds the unchanged ones).

    Raises:
        LookupError: a batch does not exist.
    """
    from worker.db import Batch

    for bid in (a, b):
        if session.get(Batch, bid) is None:
            raise LookupError(f"no batch {bid}")
    ra, rb = _rows(session, a), _rows(session, b)
    common = sorted(set(ra) & set(rb), key=_key_order)
    changed = []
    trans: Counter[tuple[str, str]] = Counter()
    for p in common:
        la, lb = _label(ra[p]), _label(rb[p])
        trans[(la, lb)] += 1
        if la != lb:
            changed.append(
                {
                    "path": p[0],
                    "channel": p[1],
                    "emotion_a": ra[p]["emotion"],
                    "emotion_b": rb[p]["emotion"],
                    "confidence_a": ra[p]["confidence"],
                    "confidence_b": rb[p]["confidence"],
                    "model_a": ra[p]["model_version"],
                    "model_b": rb[p]["model_version"],
                    "status_a": ra[p]["status"],
                    "status_b": rb[p]["status"],
                }
            )
    matrix: dict[str, dict[str, int]] = {}
    for (la, lb), n in sorted(trans.items()):
        matrix.setdefault(la, {})[lb] = n
    return {
        "a": a,
        "b": b,
        "changed": changed,
        "summary": {
            "files_a": len(ra),
            "files_b": len(rb),
            "compared": len(common),
            "changed": len(changed),
            "unchanged": len(common) - len(changed),
            "only_a": len(set(ra) - set(rb)),
            "only_b": len(set(rb) - set(ra)),
            "transitions": matrix,
        },
    }


class DiffFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


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

    Files are matched on their path. CSV: one row per changed file (the summary goes to stderr);
    JSON: {"a", "b", "summary", "changed"}; table: both.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from sqlalchemy.orm import Session

    from producer.common import EXIT_USAGE, CliError, console, err, open_engine

    with Session(open_engine()) as session:
        try:
            d = diff_batches(session, a, b)
        except LookupError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    sm = d["summary"]
    line = (
        f"batch {a} -> {b}: {sm['changed']} of {sm['compared']} file(s) changed label"
        + (f"; {sm['only_a']} only in {a}" if sm["only_a"] else "")
        + (f"; {sm['only_b']} only in {b}" if sm["only_b"] else "")
    )
    if fmt is DiffFormat.json:
        text = json.dumps(d, indent=2, default=str) + "\n"
    elif fmt is DiffFormat.csv:
        buf = io.StringIO()
        split = any(r["channel"] is not None for r in d["changed"])  # a mix diff's columns are unchanged
        cols = ["path", "channel", *DIFF_COLUMNS[1:]] if split else list(DIFF_COLUMNS)
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(d["changed"])
        text = buf.getvalue()
        err.print(line, highlight=False)
    else:
        out = Console(file=io.StringIO(), width=200) if output else console
        t = Table(title=f"files whose label changed ({a} -> {b})", header_style="bold")
        for c in ("path", f"emotion {a}", f"emotion {b}", f"conf. {a}", f"conf. {b}", f"model {a}", f"model {b}"):
            t.add_column(c, overflow="fold")
        for r in d["changed"]:
            t.add_row(
                escape(r["path"] if r["channel"] is None else f"{r['path']} [ch {r['channel']}]"),
                r["emotion_a"] or f"({r['status_a']})",
                r["emotion_b"] or f"({r['status_b']})",
                "" if r["confidence_a"] is None else f"{r['confidence_a']:.2f}",
                "" if r["confidence_b"] is None else f"{r['confidence_b']:.2f}",
                r["model_a"] or "",
                r["model_b"] or "",
            )
        out.print(t)
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
        if not output:
            return
        text = out.file.getvalue()  # type: ignore[attr-defined]
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}: {line}", highlight=False)
    else:
        sys.stdout.write(text)
