"""Tables and exports of the ``ser-batch`` commands: result rows as table/CSV/JSON, summaries, metrics."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from producer.common import console, err


def print_batch_summary(
    batch_id: int,
    counts: dict[str, int],
    per_emotion: dict[str, int],
    failures: list[Any],
    wall_s: float,
    n_processed: int,
) -> None:
    """Print a finished (or abandoned) batch: files per emotion, counts, files/s and the first failures."""
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

SEGMENT_COLUMNS = ("batch_id", "path", "result_id", "index", "start_s", "end_s", "emotion", "confidence")


def segment_record(sg: Any, batch_id: int, path: str, labels: list[str]) -> dict[str, Any]:
    """One ``segments`` row as an export record (:data:`SEGMENT_COLUMNS` then ``p_<label>``)."""
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


def result_record(r: Any, labels: list[str]) -> dict[str, Any]:
    """One ``results`` row as an export record (:data:`RESULT_COLUMNS` then ``p_<label>``)."""
    rec: dict[str, Any] = {c: getattr(r, c) for c in RESULT_COLUMNS}
    if isinstance(rec["finished_at"], datetime):
        rec["finished_at"] = rec["finished_at"].isoformat()
    probs = r.probabilities or {}
    for lab in labels:
        rec[f"p_{lab}"] = probs.get(lab)
    return rec


def print_results_table(records: list[dict[str, Any]], output: Path | None, segments: bool = False) -> None:
    """Result (or segment) records as a rich table, on stdout or into ``output``."""
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


def print_metrics(cv: dict[str, Any]) -> None:
    """WA, UAR, macro-F1 and per-class recall of a cross-validation or evaluation report."""
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


def fmt_metric(v: Any) -> str:
    """A metric with three decimals; empty when missing."""
    return f"{v:.3f}" if isinstance(v, int | float) else ""


def write_records(records: list[dict[str, Any]], columns: list[str], fmt: str, output: Path | None) -> None:
    """Write export records as ``csv`` (header ``columns``) or ``json`` to ``output`` or stdout."""
    if fmt == "csv":
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
