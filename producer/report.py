"""`ser-batch report`: one self-contained HTML page about a batch (figures inline, no external URLs).

The page is rendered with a jinja2 template (``producer/templates/report.html.j2``); every figure is
drawn with matplotlib as SVG and embedded as a ``data:image/svg+xml;base64`` URI, so the file opens
offline in any browser and can be mailed or archived as one file. Nothing here imports librosa or
scikit-learn.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

MAX_GROUPS = 40
"""Folders/speakers listed in the breakdown table (the biggest first); the rest are summed up."""
MAX_TIMELINES = 12
"""Segmented recordings drawn as a timeline (the longest first)."""
MAX_FAILED = 500
"""Failed files listed with their reason (all are in `ser-batch results --status failed`)."""
CONFIDENCE_BINS = 20


class ReportError(Exception):
    """The report cannot be made (no such batch)."""


@dataclass
class ReportData:
    """Everything the template shows, gathered from the database in one read.

    Attributes:
        batch: the batch row's fields (id, status, mode, created_at, finished_at, source_paths, options).
        counts: ``{"total", "done", "failed", "pending"}`` counted from the result rows, as `status` does.
        emotions: ``[(emotion, files, share of done files)]``, most frequent first.
        confidences: confidence of every done file, in [0, 1].
        group_kind: ``"speaker"`` when the batch has speaker keys, else ``"folder"``.
        groups: per folder or speaker: ``{"name", "files", "done", "failed", "top", "top_share",
            "mean_confidence", "emotions": {emotion: n}}``.
        n_low_confidence / n_out_of_domain: rows flagged, or None when no row was assessed.
        warnings: the batch's warnings (``[{"code", "message"}]``), or None when not assessed.
        failed: ``[(path, reason)]`` (at most :data:`MAX_FAILED`), ``n_failed_hidden`` the rest.
        timelines: ``[{"path", "n_segments", "duration_s", "emotion"}]`` of segmented recordings.
        models: per model version used: ``{"version", "files", "metrics": {...} or {}}``.
        calls: ``--channels split`` batches: per multi-channel file (the longest first, at most
            :data:`MAX_TIMELINES`) ``{"path", "duration_s", "channels": [{"channel", "role",
            "status", "emotion", "segments": [{"start_s", "end_s", "emotion"}]}]}``, drawn as one
            timeline per file with a lane per channel on one time axis (who spoke when, in which
            emotion).
        roles: ``--channels split`` batches: per role (or ``channel N``): ``{"name", "rows", "done",
            "failed", "speech_s", "emotions": [(emotion, seconds, share of the role's labelled
            speech)]}``; speech is the segments' time (a channel classified whole: its duration).
    """

    batch: dict[str, Any]
    counts: dict[str, int]
    emotions: list[tuple[str, int, float]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    group_kind: str = "folder"
    groups: list[dict[str, Any]] = field(default_factory=list)
    n_groups_hidden: int = 0
    n_low_confidence: int | None = None
    n_out_of_domain: int | None = None
    warnings: list[dict[str, Any]] | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    n_failed_hidden: int = 0
    timelines: list[dict[str, Any]] = field(default_factory=list)
    n_timelines_hidden: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)
    segments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    n_calls_hidden: int = 0
    roles: list[dict[str, Any]] = field(default_factory=list)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def gather(session: Any, batch_id: int) -> ReportData:
    """Read a batch, its result rows, segments and models into a :class:`ReportData`.

    Args:
        session: an open SQLAlchemy session.
        batch_id: the batch.

    Raises:
        ReportError: no such batch.
    """
    from sqlalchemy import select

    from worker.db import Batch, ModelVersion, Result, Segment, batch_counts

    batch = session.get(Batch, batch_id)
    if batch is None:
        raise ReportError(f"no batch {batch_id}")
    counts = batch_counts(session, batch_id)
    cols = (
        Result.id,
        Result.path,
        Result.status,
        Result.emotion,
        Result.confidence,
        Result.error,
        Result.speaker,
        Result.model_version,
        Result.duration_s,
        Result.analysis_mode,
        Result.n_segments,
        Result.low_confidence,
        Result.out_of_domain,
        Result.finished_at,
        Result.channel,
        Result.role,
    )
    rows = [r._asdict() for r in session.execute(select(*cols).where(Result.batch_id == batch_id).order_by(Result.id))]
    done = [r for r in rows if r["status"] == "done"]
    emo = Counter(r["emotion"] for r in done)
    n_done = max(1, len(done))
    last = max((_aware(r["finished_at"]) for r in rows if r["finished_at"]), default=None)
    data = ReportData(
        batch={
            "id": batch.id,
            "status": batch.status,
            "mode": batch.mode,
            "created_at": _aware(batch.created_at),
            "finished_at": _aware(batch.finished_at) or (last if counts["pending"] == 0 else None),
            "source_paths": list(batch.source_paths or []),
            "options": dict(batch.options or {}),
            "n_ignored": batch.n_ignored,
        },
        counts=counts,
        emotions=[(e, n, n / n_done) for e, n in emo.most_common()],
        confidences=[float(r["confidence"]) for r in done if r["confidence"] is not None],
        warnings=list(batch.warnings) if batch.warnings is not None else None,
    )
    if data.warnings is None and counts["pending"] == 0 and done:
        from worker.assess import assess_batch

        # a batch finalised before warnings were stored: computed for display, as `status` does
        data.warnings = assess_batch(session, batch_id, store=False)
    # counted over labelled rows, as `status` and the webhook count them (worker.assess.trust_counts)
    if any(r["low_confidence"] is not None for r in done):
        data.n_low_confidence = sum(bool(r["low_confidence"]) for r in done)
    if any(r["out_of_domain"] is not None for r in done):
        data.n_out_of_domain = sum(bool(r["out_of_domain"]) for r in done)
    _groups(data, rows)
    failed = [(r["path"], r["error"] or "") for r in rows if r["status"] == "failed"]
    data.failed, data.n_failed_hidden = failed[:MAX_FAILED], max(0, len(failed) - MAX_FAILED)
    if (batch.options or {}).get("channels") == "split":
        _calls(session, data, rows)
    seg_rows = sorted(
        (r for r in done if r["analysis_mode"] == "segments" and r["channel"] is None),
        key=lambda r: -(r["duration_s"] or 0.0),
    )
    data.n_timelines_hidden = max(0, len(seg_rows) - MAX_TIMELINES)
    for r in seg_rows[:MAX_TIMELINES]:
        segs = [
            {"start_s": s.start_s, "end_s": s.end_s, "emotion": s.emotion, "probabilities": s.probabilities}
            for s in session.scalars(select(Segment).where(Segment.result_id == r["id"]).order_by(Segment.idx))
        ]
        if segs:
            data.segments[r["path"]] = segs
            data.timelines.append(
                {"path": r["path"], "n_segments": len(segs), "duration_s": r["duration_s"], "emotion": r["emotion"]}
            )
    used = Counter(r["model_version"] for r in rows if r["model_version"])
    for version, n in used.most_common():
        m = session.get(ModelVersion, version)
        data.models.append(
            {
                "version": version,
                "files": n,
                "metrics": dict(m.metrics or {}) if m is not None else {},
                "labels": list(m.labels) if m is not None else [],
            }
        )
    return data


def _calls(session: Any, data: ReportData, rows: list[dict[str, Any]]) -> None:
    """Per-channel timelines of the split files and the share of each emotion per role (``data.calls``, ``data.roles``)."""
    from sqlalchemy import select

    from worker.db import Segment

    files: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["channel"] is not None:
            files[r["path"]].append(r)
    longest = sorted(files.items(), key=lambda kv: -max(r["duration_s"] or 0.0 for r in kv[1]))
    data.n_calls_hidden = max(0, len(longest) - MAX_TIMELINES)
    shown = {p for p, _ in longest[:MAX_TIMELINES]}
    roles: dict[str, dict[str, Any]] = {}
    for path, chans in longest:
        entry = {"path": path, "duration_s": max(r["duration_s"] or 0.0 for r in chans), "channels": []}
        for r in sorted(chans, key=lambda r: r["channel"]):
            name = r["role"] or f"channel {r['channel']}"
            segs = [
                {"start_s": sg.start_s, "end_s": sg.end_s, "emotion": sg.emotion}
                for sg in session.scalars(select(Segment).where(Segment.result_id == r["id"]).order_by(Segment.idx))
            ]
            if not segs and r["status"] == "done":  # classified whole
                segs = [{"start_s": 0.0, "end_s": r["duration_s"] or 0.0, "emotion": r["emotion"]}]
            g = roles.setdefault(name, {"name": name, "rows": 0, "done": 0, "failed": 0, "time": Counter()})
            g["rows"] += 1
            if r["status"] in ("done", "failed"):
                g[r["status"]] += 1
            for sg in segs:
                g["time"][sg["emotion"]] += sg["end_s"] - sg["start_s"]
            if path in shown:
                entry["channels"].append(
                    {
                        "channel": r["channel"],
                        "role": name,
                        "status": r["status"],
                        "emotion": r["emotion"],
                        "segments": segs,
                    }
                )
        if path in shown:
            data.calls.append(entry)
    for g in roles.values():
        total = sum(g["time"].values())
        g["speech_s"] = total
        g["emotions"] = [(e, t, t / total if total else 0.0) for e, t in g.pop("time").most_common()]
        data.roles.append(g)


def _groups(data: ReportData, rows: list[dict[str, Any]]) -> None:
    """Per-speaker (when the batch has speaker keys) or per-folder breakdown, biggest groups first."""
    by_speaker = any(r["speaker"] for r in rows)
    data.group_kind = "speaker" if by_speaker else "folder"
    if by_speaker:
        key = {r["path"]: r["speaker"] or "(no speaker)" for r in rows}
    else:
        parents = [os.path.dirname(r["path"]) for r in rows]
        common = os.path.commonpath(parents) if parents and all(os.path.isabs(p) for p in parents) else ""
        base = os.path.dirname(common) if common else ""
        key = {r["path"]: (os.path.relpath(p, base) if base else p) or "." for r, p in zip(rows, parents, strict=True)}
    agg: dict[str, dict[str, Any]] = defaultdict(lambda: {"files": 0, "done": 0, "failed": 0, "emotions": Counter()})
    conf: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        g = agg[key[r["path"]]]
        g["files"] += 1
        if r["status"] == "done":
            g["done"] += 1
            g["emotions"][r["emotion"]] += 1
            if r["confidence"] is not None:
                conf[key[r["path"]]].append(float(r["confidence"]))
        elif r["status"] == "failed":
            g["failed"] += 1
    ordered = sorted(agg.items(), key=lambda kv: (-kv[1]["files"], kv[0]))
    data.n_groups_hidden = max(0, len(ordered) - MAX_GROUPS)
    for name, g in ordered[:MAX_GROUPS]:
        top, n_top = g["emotions"].most_common(1)[0] if g["emotions"] else ("", 0)
        c = conf[name]
        data.groups.append(
            {
                "name": name,
                "files": g["files"],
                "done": g["done"],
                "failed": g["failed"],
                "top": top,
                "top_share": n_top / g["done"] if g["done"] else 0.0,
                "mean_confidence": sum(c) / len(c) if c else None,
                "emotions": dict(g["emotions"]),
            }
        )


# ------------------------------------------------------------------------------------------ figures


def _label_order(names: set[str]) -> list[str]:
    from ser_model.labels import EMOTIONS

    return [e for e in EMOTIONS if e in names] + sorted(n for n in names if n not in EMOTIONS)


def _colours(labels: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def _svg_uri(fig: Any) -> str:
    """The figure as a ``data:image/svg+xml;base64,...`` URI (text drawn as paths: no font needed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    with plt.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(data: ReportData) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ser_model.labels import EMOTIONS

    names = {e for e, _, _ in data.emotions} | {e for g in data.groups for e in g["emotions"]}
    labels = _label_order({n for n in names if n})
    colour = _colours(_label_order(set(EMOTIONS) | set(labels)))  # one colour per emotion on every figure
    figs: dict[str, Any] = {"timelines": []}
    if data.emotions:
        order = [e for e in labels if e in {x for x, _, _ in data.emotions}]
        n = dict((e, c) for e, c, _ in data.emotions)
        fig, ax = plt.subplots(figsize=(6.0, 0.35 * len(order) + 1.0), dpi=100)
        ax.barh(order[::-1], [n[e] for e in order[::-1]], color=[colour[e] for e in order[::-1]])
        for i, e in enumerate(order[::-1]):
            ax.text(n[e], i, f" {n[e]}", va="center", fontsize=8)
        ax.set_xlabel("files")
        ax.margins(x=0.12)
        ax.set_title("files per emotion", fontsize=10)
        figs["emotions"] = _svg_uri(fig)
    if data.confidences:
        conf = np.asarray(data.confidences)
        fig, ax = plt.subplots(figsize=(6.0, 2.8), dpi=100)
        ax.hist(conf, bins=np.linspace(0, 1, CONFIDENCE_BINS + 1), color="#4c72b0", edgecolor="white")
        med = float(np.median(conf))
        ax.axvline(med, color="#c44e52", lw=1.5, label=f"median {med:.2f}")
        ax.set_xlim(0, 1)
        ax.set_xlabel("confidence (probability of the chosen emotion)")
        ax.set_ylabel("files")
        ax.legend(fontsize=8, frameon=False)
        ax.set_title("how sure the model is", fontsize=10)
        figs["confidence"] = _svg_uri(fig)
    shown = [g for g in data.groups if g["done"]][:20]
    if len(shown) > 1:
        fig, ax = plt.subplots(figsize=(8.0, max(2.2, 0.32 * len(shown) + 1.0)), dpi=100)
        left = np.zeros(len(shown))
        ys = np.arange(len(shown))[::-1]
        for e in labels:
            share = np.asarray([g["emotions"].get(e, 0) / g["done"] for g in shown])
            ax.barh(ys, share, left=left, color=colour[e], label=e, height=0.8)
            left += share
        ax.set_yticks(ys, [_short(g["name"], 38) for g in shown], fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the group's labelled files")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(f"emotions per {data.group_kind}", fontsize=10)
        figs["groups"] = _svg_uri(fig)
    for t in data.timelines:
        figs["timelines"].append(_timeline(data.segments[t["path"]], labels or _label_order(set()), colour))
    figs["calls"] = [_call_timeline(c, colour) for c in data.calls]
    if data.roles:
        figs["roles"] = _role_shares(data.roles, colour)
    return figs


def _call_timeline(call: dict[str, Any], colour: dict[str, Any]) -> str:
    """One lane per channel on one time axis: a bar per segment, coloured by its emotion."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lanes = call["channels"]
    fig, ax = plt.subplots(figsize=(9.0, 0.6 * len(lanes) + 1.1), dpi=100)
    seen: dict[str, Any] = {}
    for i, lane in enumerate(lanes):
        y = len(lanes) - 1 - i
        for sg in lane["segments"]:
            c = colour.get(sg["emotion"], "#999999")
            ax.broken_barh([(sg["start_s"], sg["end_s"] - sg["start_s"])], (y - 0.35, 0.7), facecolors=c)
            seen.setdefault(sg["emotion"], c)
        if lane["status"] == "failed":
            ax.text(0.0, y, "  no label (see failed files)", va="center", fontsize=7, color="#c44e52")
    ax.set_yticks(range(len(lanes)), [ln["role"] for ln in lanes][::-1], fontsize=8)
    ax.set_xlim(0, max(call["duration_s"], 1e-3))
    ax.set_xlabel("time in the call (s)")
    ax.legend(
        handles=[Patch(color=c, label=e) for e, c in seen.items()],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    return _svg_uri(fig)


def _role_shares(roles: list[dict[str, Any]], colour: dict[str, Any]) -> str:
    """Share of each emotion in every role's labelled speech, as stacked bars."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = _label_order({e for g in roles for e, _, _ in g["emotions"] if e})
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(roles) + 1.2), dpi=100)
    ys = np.arange(len(roles))[::-1]
    left = np.zeros(len(roles))
    for e in labels:
        share = np.asarray([dict((x, s) for x, _, s in g["emotions"]).get(e, 0.0) for g in roles])
        ax.barh(ys, share, left=left, color=colour.get(e, "#999999"), label=e, height=0.7)
        left += share
    ax.set_yticks(ys, [g["name"] for g in roles], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the role's labelled speech time")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("emotions per role", fontsize=10)
    return _svg_uri(fig)


def _timeline(segs: list[dict[str, Any]], labels: list[str], colour: dict[str, Any]) -> str:
    """Probabilities over time of one segmented recording (steps per segment) and the winning strip."""
    from ser_model.report import timeline_figure

    seg_labels = _label_order({k for s in segs for k in (s.get("probabilities") or {})}) or labels
    colour = {**_colours(seg_labels), **colour}  # the report's colours for known emotions
    fig = timeline_figure(segs, seg_labels, colour, figsize=(9.0, 3.0), dpi=100, lw=1.5)
    return _svg_uri(fig)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


# ------------------------------------------------------------------------------------------ page


def render(data: ReportData, *, generated_at: datetime | None = None) -> str:
    """The HTML page of a batch (a string; every figure inline).

    Args:
        data: from :func:`gather`.
        generated_at: time stamp printed on the page (default now, UTC).

    Returns:
        A complete, self-contained HTML5 document.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("producer", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: f"{100 * v:.1f} %"
    env.filters["f3"] = lambda v: "" if v is None else f"{v:.3f}"
    env.filters["f2"] = lambda v: "" if v is None else f"{v:.2f}"
    env.filters["when"] = lambda v: "" if v is None else v.isoformat(timespec="seconds")
    b = data.batch
    duration = (b["finished_at"] - b["created_at"]).total_seconds() if b["finished_at"] and b["created_at"] else None
    return env.get_template("report.html.j2").render(
        d=data,
        figs=_figures(data),
        duration_s=duration,
        generated_at=(generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
    )


def write_report(batch_id: int, output: Path, *, url: str | None = None) -> ReportData:
    """Gather, render and write the report of ``batch_id`` to ``output`` (UTF-8 HTML).

    Raises:
        ReportError: no such batch.
    """
    from sqlalchemy.orm import Session

    from worker.db import get_engine

    with Session(get_engine(url)) as session:
        data = gather(session, batch_id)
    html = render(data)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return data


def report(
    batch_id: Annotated[int, typer.Argument(help="Batch id (see `ser-batch batches`).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file to write [default: report-BATCH_ID.html].")
    ] = None,
) -> None:
    """Write one self-contained HTML report of a batch (opens offline, no external URL).

    It shows the emotions, the confidence, folders or speakers, the low-confidence and out-of-domain
    counts and the batch's warnings, the failed files, timelines of long recordings, and the model
    with its speaker-independent metrics.
    """
    from producer.common import EXIT_USAGE, CliError, cli_settings, console, open_engine

    open_engine()  # opens (and, for the embedded SQLite file, migrates) the database, or a clear error
    out = output or Path(f"report-{batch_id}.html")
    try:
        data = write_report(batch_id, out, url=cli_settings().database_url)
    except ReportError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    c = data.counts
    console.print(
        f"wrote {out}: batch {batch_id}, {c['done']} done, {c['failed']} failed, {c['pending']} pending",
        highlight=False,
    )
