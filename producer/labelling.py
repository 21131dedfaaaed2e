"""`ser-batch labels export`: the files of a batch the model is least sure about, as a manifest to label.

The manifest has the columns ``path,label,speaker,predicted,confidence`` with ``label`` empty for a
person to fill in (a ``--channels split`` batch adds ``channel,role`` after ``path``: the label is that
party's, and such rows cannot train a model yet); once labelled it trains a model directly: ``ser-batch train ravdess:DIR
csv:tolabel.csv --weight csv=3`` (see ``ser_model.datasets.read_sources``; the extra columns are
ignored by the reader).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

MANIFEST_COLUMNS = ("path", "label", "speaker", "predicted", "confidence")
SPLIT_MANIFEST_COLUMNS = ("path", "channel", "role", "label", "speaker", "predicted", "confidence")
"""Columns of a manifest with rows of ``--channels split`` batches (a mix batch's manifest is unchanged)."""

labels_app = typer.Typer(
    help="The labelling loop: export the files the model is least sure about, label them, train on them.",
    no_args_is_help=True,
)


def least_sure(session: Any, batch_id: int, count: int) -> list[dict[str, Any]]:
    """The ``count`` labelled files of a batch with the lowest confidence.

    Ordered by confidence ascending (the calibrated confidence where the model provides one: it is
    what the ``confidence`` column holds), ties broken by the out-of-domain score descending (files
    further from the training data first; rows without a score last), then by path.

    Args:
        session: an open SQLAlchemy session.
        batch_id: the batch.
        count: how many files, at least 1.

    Returns:
        Manifest rows ``{"path", "channel", "role", "label": "", "speaker", "predicted", "confidence"}``
        (``channel``/``role`` empty for a mixed row).
    """
    from sqlalchemy import select

    from worker.storage.db import Result

    q = (
        select(
            Result.path,
            Result.channel,
            Result.role,
            Result.speaker,
            Result.emotion,
            Result.confidence,
            Result.ood_score,
        )
        .where(Result.batch_id == batch_id, Result.status == "done", Result.confidence.is_not(None))
        .order_by(
            Result.confidence.asc(),
            Result.ood_score.is_(None).asc(),  # scored rows first on equal confidence
            Result.ood_score.desc(),
            Result.path.asc(),
            Result.channel.asc(),
        )
        .limit(count)
    )
    return [
        {
            "path": p,
            "channel": "" if ch is None else ch,
            "role": role or "",
            "label": "",
            "speaker": spk or "",
            "predicted": emo,
            "confidence": f"{conf:.4f}",
        }
        for p, ch, role, spk, emo, conf, _ in session.execute(q)
    ]


def write_manifest(rows: list[dict[str, Any]], output: Path) -> None:
    """Write manifest rows as UTF-8 CSV with the header :data:`MANIFEST_COLUMNS` (or
    :data:`SPLIT_MANIFEST_COLUMNS` when a row is one channel of a file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    split = any(r.get("channel") not in (None, "") for r in rows)
    cols = SPLIT_MANIFEST_COLUMNS if split else MANIFEST_COLUMNS
    with output.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@labels_app.command("export")
def export(
    batch_id: Annotated[int, typer.Argument(help="Batch id (see `ser-batch batches`).")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many files to export.")] = 200,
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV manifest to write.")] = Path("tolabel.csv"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Write the COUNT files of a batch the model is least sure about as a manifest to label.

    Columns path,label,speaker,predicted,confidence (path,channel,role,... for a --channels split
    batch); fill in `label` (any label name; the eight
    RAVDESS emotions are neutral, calm, happy, sad, angry, fearful, disgust, surprised), delete rows
    you cannot label, then train on it together with a corpus:
    `ser-batch train ravdess:DIR csv:tolabel.csv --weight csv=3`.
    """
    from sqlalchemy.orm import Session

    from producer.common import EXIT_USAGE, CliError, err, open_engine
    from worker.storage.db import Batch

    if output.exists() and not force:
        raise CliError(f"{output} exists (it may hold labels you typed): use --force or another --output", EXIT_USAGE)
    with Session(open_engine()) as session:
        if session.get(Batch, batch_id) is None:
            raise CliError(f"no batch {batch_id}", EXIT_USAGE)
        rows = least_sure(session, batch_id, count)
    if not rows:
        raise CliError(f"batch {batch_id} has no labelled file to export", EXIT_USAGE)
    write_manifest(rows, output)
    lo, hi = rows[0]["confidence"], rows[-1]["confidence"]
    err.print(
        f"wrote {len(rows)} file(s) of batch {batch_id} to {output} (confidence {lo} to {hi}); "
        "fill in the label column, then `ser-batch train ravdess:DIR csv:" + str(output) + " --weight csv=3`",
        highlight=False,
    )


def print_per_source(per_source: dict[str, dict[str, Any]]) -> None:
    """Print the cross-validated metrics of each training source (``train`` with several sources).

    Args:
        per_source: ``metrics["per_source"]`` from :func:`worker.training.per_source_metrics`.
    """
    from rich.markup import escape
    from rich.table import Table

    from producer.common import console

    t = Table(title="per source (out-of-fold predictions of the same cross-validation)", header_style="bold")
    for col in ("source", "files", "weight", "speakers", "WA", "UAR", "macro-F1"):
        t.add_column(col, justify="left" if col in ("source", "speakers") else "right", overflow="fold")
    for name, m in per_source.items():
        t.add_row(
            escape(name),
            str(m["n"]),
            f"{m['weight']:g}",
            str(m["speakers"]),
            f"{m['wa']:.3f}",
            f"{m['uar']:.3f}",
            f"{m['macro_f1']:.3f}",
        )
    console.print(t)
