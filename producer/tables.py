"""Tables and exports of the ``ser-batch`` commands: result rows as table/CSV/JSON, summaries, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from producer.common import console, err


def print_batch_summary(
    batch_id: int,
    counts: dict[str, int],
    per_emotion: dict[str, int],
    failures: list[Any],
    wall_s: float,
    n_processed: int,
    *,
    trust: dict[str, int] | None = None,
    warnings: list[dict[str, Any]] | None = None,
    dimensions: dict[str, Any] | None = None,
) -> None:
    """Print a finished (or abandoned) batch: files per emotion, counts, files/s and the first failures.

    Args:
        batch_id: the batch.
        counts: ``{"total", "done", "failed", "pending"}`` (:func:`worker.storage.db.batch_counts`).
        per_emotion: labelled files per emotion, most frequent first.
        failures: ``(path, reason)`` of the first failed files.
        wall_s: wall-clock time of this run (seconds).
        n_processed: files this run processed.
        trust: ``{"low_confidence": n, "out_of_domain": n}`` (:func:`worker.engine.assess.trust_counts`).
        warnings: the batch's warnings (``{"code", "message", ...}``), printed in yellow.
        dimensions: mean arousal and valence (:func:`worker.engine.assess.dimension_summary`),
            printed when some row has them.
    """
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
    if trust is not None and counts["done"]:
        console.print(
            f"of {counts['done']} labelled: {trust['low_confidence']} low confidence, "
            f"{trust['out_of_domain']} out of domain"
            + (
                f" (leave the low-confidence ones out with `ser-batch results --batch {batch_id} --confident`)"
                if trust["low_confidence"]
                else ""
            ),
            highlight=False,
        )
    if dimensions and dimensions.get("n"):
        arousal, valence = dimension_text(dimensions)
        console.print(f"arousal {arousal}, valence {valence} (mean of {dimensions['n']} row(s))", highlight=False)
    for w in warnings or []:
        console.print(f"[yellow]warning:[/] [yellow]{escape(str(w.get('message', w.get('code', ''))))}[/]")
    if failures:
        console.print(
            f"[red]failed files[/] (first 10; all with `ser-batch results --batch {batch_id} --status failed`):"
        )
        for path, error in failures:
            console.print(f"  {path}: {error}", markup=False, highlight=False)


RESULT_COLUMNS = (  # columns of ``results``, exported in this order (producer.export), then p_<label>
    "batch_id",
    "path",
    "channel",
    "role",
    "status",
    "emotion",
    "confidence",
    "arousal",
    "valence",
    "low_confidence",
    "out_of_domain",
    "ood_score",
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

SEGMENT_COLUMNS = (
    "batch_id",
    "path",
    "channel",
    "result_id",
    "index",
    "start_s",
    "end_s",
    "emotion",
    "confidence",
    "arousal",
    "valence",
    "low_confidence",
    "out_of_domain",
    "ood_score",
)
"""Columns of ``results --segments`` exports, then ``p_<label>`` for every label. ``batch_id`` and
``path`` come from the file's ``results`` row, ``index`` is ``segments.idx``, every other name is a
column of ``segments`` (:func:`producer.export.export_query`)."""

DIMENSION_COLUMNS = ("arousal", "valence")
"""How activated and how positive a file, channel or segment sounds, each in [0, 1] with 0.5 the neutral
point (:mod:`ser_model.dimensions`); None for rows labelled before migration 0009, failed rows, and
models whose labels have no position. Out-of-domain rows keep them."""

FLAG_COLUMNS = ("low_confidence", "out_of_domain", "ood_score")
"""Trust columns of results and segments: calibrated confidence under the model's threshold, features
far from the training data, and the distance score behind it (None: the model does not compute them,
or the row has no label)."""


def dimension_text(d: dict[str, Any]) -> tuple[str, str]:
    """``("0.62 (58% high)", "0.41 (35% positive)")``: the arousal and valence cells of a summary; ``-`` without rows."""
    if not d.get("n"):
        return "-", "-"
    return (
        f"{d['arousal_mean']:.2f} ({d['high_arousal_share']:.0%} high)",
        f"{d['valence_mean']:.2f} ({d['positive_valence_share']:.0%} positive)",
    )


def flags_text(rec: dict[str, Any]) -> str:
    """The short flags cell of a results table: ``low conf.`` and/or ``out of domain`` (empty otherwise)."""
    out = []
    if rec.get("low_confidence"):
        out.append("low conf.")
    if rec.get("out_of_domain"):
        out.append("out of domain")
    return ", ".join(out)


def channel_path(r: dict[str, Any]) -> str:
    """``path`` of a mixed row; ``path [ch 1 customer]`` of a row of one channel (``--channels split``)."""
    if r.get("channel") is None:
        return str(r["path"])
    role = f" {r['role']}" if r.get("role") else ""
    return f"{r['path']} [ch {r['channel']}{role}]"


def _f2(v: Any) -> str:
    """Two decimals; empty for None (no label, or no dimensions)."""
    return "" if v is None else f"{v:.2f}"


def print_results_table(records: list[dict[str, Any]], output: Path | None, segments: bool = False) -> None:
    """Result (or segment) records as a rich table, on stdout or into ``output``.

    Columns: the label, its confidence, the flags, arousal and valence (:data:`DIMENSION_COLUMNS`;
    empty when the row has none), and for files the duration and the error.
    """
    t = Table(show_header=True, header_style="bold")
    cols = (
        ("batch", "path", "#", "start (s)", "end (s)", "emotion", "conf.", "flags", "arousal", "valence")
        if segments
        else ("batch", "path", "status", "emotion", "conf.", "flags", "arousal", "valence", "duration (s)", "error")
    )
    for col in cols:
        t.add_column(col, overflow="fold")
    for r in records:
        conf = _f2(r["confidence"])
        dims = (_f2(r.get("arousal")), _f2(r.get("valence")))
        path = escape(channel_path(r))
        if segments:
            t.add_row(
                str(r["batch_id"]),
                path,
                str(r["index"]),
                f"{r['start_s']:.2f}",
                f"{r['end_s']:.2f}",
                r["emotion"] or "",
                conf,
                flags_text(r),
                *dims,
            )
        else:
            t.add_row(
                str(r["batch_id"]),
                path,
                r["status"],
                r["emotion"] or "",
                conf,
                flags_text(r),
                *dims,
                f"{r['duration_s']:.2f}" if r["duration_s"] is not None else "",
                r["error"] or "",
            )
    if output:
        with output.open("w", encoding="utf-8") as fh:
            Console(file=fh, width=200).print(t)
        err.print(f"wrote {len(records)} row(s) to {escape(str(output))}")
    else:
        console.print(t)
        console.print(f"{len(records)} row(s)")


def print_metrics(cv: dict[str, Any]) -> None:
    """WA, UAR, macro-F1 and per-class recall of a cross-validation or evaluation report.

    UAR and macro-F1 are means over the labels present in the data (``labels_present``, see
    :func:`ser_model.metrics.classification_metrics`), and their rows say over how many; a label of the
    model with no file shows "no files", not a recall of 0. A report without ``labels_present`` (stored
    by an older version) is printed as before.
    """
    t = Table(title=cv.get("protocol", ""), show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("files", str(cv.get("n", "")))
    t.add_row("WA (accuracy)", f"{cv['wa']:.3f}")
    present = cv.get("labels_present")
    labels = cv.get("labels") or list(cv["per_class_recall"])
    over = ""
    if present is not None:
        over = (
            f" (mean over all {len(present)} labels)"
            if len(present) == len(labels)
            else f" (mean over the {len(present)} of {len(labels)} labels present)"
        )
    t.add_row(f"UAR{over}", f"{cv['uar']:.3f}")
    t.add_row(f"macro-F1{over}", f"{cv['macro_f1']:.3f}")
    for lab, r in cv["per_class_recall"].items():
        t.add_row(
            f"recall {escape(str(lab))}", "no files" if present is not None and lab not in present else f"{r:.3f}"
        )
    console.print(t)


def print_trust(trust: dict[str, Any] | None) -> None:
    """Print a model's calibration and out-of-domain threshold (``metrics["trust"]`` of the registry).

    Per mode (global, speaker-adaptive): the temperature (``t0``, and the ``growth`` of the
    distance-aware temperature), ECE (15 bins) before -> after calibration, mean confidence before
    -> after against the WA of the same out-of-fold predictions, and the low-confidence threshold
    with the share of files under it. Then the out-of-domain threshold and the share of the training
    corpus's out-of-fold files above it. Prints a hint for models trained before calibration existed.

    Args:
        trust: ``metrics["trust"]`` (``{"calibration": {mode: {...}}, "ood": {...}}``), or None.
    """
    cal = (trust or {}).get("calibration") or {}
    ood = (trust or {}).get("ood") or {}
    if not cal and not ood:
        console.print("[yellow]no calibration stored[/]: this model predates calibrated confidence and flags")
        return
    if cal:
        t = Table(
            title="calibration (out-of-fold, speakers the fold's model never heard)",
            show_header=True,
            header_style="bold",
        )
        for col in ("mode", "temperature", "ECE before -> after", "mean conf. before -> after", "WA", "low conf. <"):
            t.add_column(col, justify="left" if col == "mode" else "right")
        for mode, c in cal.items():
            t.add_row(
                mode,
                _temperature_text(c.get("temperature")),
                f"{fmt_metric(c.get('ece_before'))} -> {fmt_metric(c.get('ece_after'))}",
                f"{fmt_metric(c.get('mean_confidence_before'))} -> {fmt_metric(c.get('mean_confidence_after'))}",
                fmt_metric(c.get("wa")),
                _threshold_text(c),
            )
        console.print(t)
        for mode, c in cal.items():
            held = c.get("held_out_corpora")
            if held:  # the multi-corpus calibration: fitted for, and measured on, corpora a model never heard
                console.print(
                    f"{mode}, on held-out corpora (each predicted by a model of the other corpora; what the "
                    f"temperature is fitted for): ECE {fmt_metric(held.get('ece_after'))}, mean conf. "
                    f"{fmt_metric(held.get('mean_confidence_before'))} -> {fmt_metric(held.get('mean_confidence_after'))}"
                    f" against WA {fmt_metric(held.get('wa'))} ({held.get('n')} files); on the training corpora's own "
                    "unseen speakers (the table) it is cautious",
                    highlight=False,
                )
    if ood:
        share = ood.get("oof_out_of_domain_share")
        pct = ood.get("percentile")
        console.print(
            f"out of domain: score > {fmt_metric(ood.get('threshold'))}"
            + (f" ({pct:g}th percentile of the training files' out-of-fold scores)" if pct is not None else "")
            + (f"; {share:.1%} of the training corpus's out-of-fold files are above it" if share is not None else ""),
            highlight=False,
        )


def _temperature_text(temp: Any) -> str:
    """``t0 1.83, growth 2.40`` for a distance-aware temperature, ``1.83`` for a plain one."""
    if isinstance(temp, dict):
        txt = f"t0 {temp.get('t0', float('nan')):.2f}"
        if temp.get("growth"):
            txt += f", growth {temp['growth']:.2f}"
        return txt
    return f"{temp:.2f}" if isinstance(temp, int | float) else ""


def _threshold_text(c: dict[str, Any]) -> str:
    """``0.41 (18% of files)``: the low-confidence threshold and the share of out-of-fold files under it."""
    thr, share = c.get("low_confidence_threshold"), c.get("low_confidence_share")
    if not isinstance(thr, int | float):
        return ""
    return f"{thr:.2f}" + (f" ({share:.0%} of files)" if isinstance(share, int | float) else "")


def fmt_metric(v: Any) -> str:
    """A metric with three decimals; empty when missing."""
    return f"{v:.3f}" if isinstance(v, int | float) else ""
