"""`ser-batch report`: one self-contained HTML page about a batch (figures inline, no external URLs).

The page is rendered with a jinja2 template (``producer/templates/report.html.j2``); every figure is
drawn with matplotlib and embedded as a ``data:`` URI -- SVG, except the valence-arousal plane, a PNG
(one dot per file: thousands of SVG circles would outweigh the rest of the page) -- so the file opens
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
QUADRANTS = (
    ((0.02, 0.98), "high arousal, negative"),
    ((0.98, 0.98), "high arousal, positive"),
    ((0.02, 0.02), "low arousal, negative"),
    ((0.98, 0.02), "low arousal, positive"),
)
"""Corner captions of the valence-arousal plane (axes fractions)."""
MAX_PLANE_DOTS = 5000
"""Files drawn as dots on the valence-arousal plane; a bigger batch is thinned evenly by row id
(the means are over every file)."""


class ReportError(Exception):
    """The report cannot be made (no such batch)."""


@dataclass
class ReportData:
    """Everything the template shows, gathered from the database with aggregate queries.

    Attributes:
        batch: the batch row's fields (id, status, mode, created_at, finished_at, source_paths, options).
        counts: ``{"total", "done", "failed", "pending"}`` counted from the result rows, as `status` does.
        emotions: ``[(emotion, files, share of done files)]``, most frequent first.
        confidence_hist: done files per confidence bin (:data:`CONFIDENCE_BINS` equal bins over [0, 1]).
        confidence_median: median confidence of the done files, or None.
        group_kind: ``"speaker"`` when the batch has speaker keys, else ``"folder"``.
        groups: per folder or speaker: ``{"name", "files", "done", "failed", "top", "top_share",
            "mean_confidence", "emotions": {emotion: n}}``.
        n_low_confidence / n_out_of_domain: rows flagged, or None when no row was assessed.
        warnings: the batch's warnings (``[{"code", "message"}]``), or None when not assessed.
        failed: ``[(path, reason)]`` (at most :data:`MAX_FAILED`), ``n_failed_hidden`` the rest.
        timelines: ``[{"path", "n_segments", "duration_s", "emotion"}]`` of segmented recordings.
        models: per model version used: ``{"version", "files", "metrics": {...} or {}, "labels", "modes"}``;
            ``metrics`` are the global model's, ``modes`` the analysis modes its labelled rows ran in
            (global, speaker-adaptive, batch-normalised; most files first), each ``{"mode", "files",
            "metrics"}`` with the cross-validated metrics of that mode (``{}`` when not recorded).
        calls: ``--channels split`` batches: per multi-channel file (the longest first, at most
            :data:`MAX_TIMELINES`) ``{"path", "duration_s", "channels": [{"channel", "role",
            "status", "emotion", "segments": [{"start_s", "end_s", "emotion"}]}]}``, drawn as one
            timeline per file with a lane per channel on one time axis (who spoke when, in which
            emotion).
        roles: ``--channels split`` batches: per role (or ``channel N``): ``{"name", "rows", "done",
            "failed", "speech_s", "emotions": [(emotion, seconds, share of the role's labelled
            speech)], "dimensions": {"n", "arousal_mean", "valence_mean", ...}}``; speech is the
            segments' time (a channel classified whole: its duration); the dimensions are the mean
            of the role's rows (each row the duration-weighted mean of its segments).
        dimensions: mean arousal and valence of the labelled files and the shares above 0.5
            (:func:`worker.engine.assess.dimension_summary`).
        plane: ``[(arousal, valence, emotion, out_of_domain)]`` of the files drawn on the plane (at
            most :data:`MAX_PLANE_DOTS`); ``plane_step``: every ``plane_step``-th row id was kept.
        n_out_of_domain_with_dimensions: out-of-domain files that carry dimensions.
    """

    batch: dict[str, Any]
    counts: dict[str, int]
    emotions: list[tuple[str, int, float]] = field(default_factory=list)
    confidence_hist: list[int] = field(default_factory=list)
    confidence_median: float | None = None
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
    dimensions: dict[str, Any] = field(default_factory=dict)
    plane: list[tuple[float, float, str, bool]] = field(default_factory=list)
    plane_step: int = 1
    n_out_of_domain_with_dimensions: int = 0


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def gather(session: Any, batch_id: int) -> ReportData:
    """Read a batch into a :class:`ReportData` with SQL aggregates, never its rows one by one.

    Counts per status and emotion, the confidence histogram and median, flag counts, the
    per-speaker or per-folder breakdown and the models used are ``GROUP BY`` / ``ORDER BY ...
    LIMIT`` queries, so memory does not grow with the number of rows (the breakdown holds one entry
    per folder or speaker); the failed list and the timelines are capped.

    Args:
        session: an open SQLAlchemy session.
        batch_id: the batch.

    Raises:
        ReportError: no such batch.
    """
    from sqlalchemy import func, select

    from worker.storage.db import Batch, ModelVersion, Result, Segment, batch_counts
    from worker.storage.registry import mode_metrics

    batch = session.get(Batch, batch_id)
    if batch is None:
        raise ReportError(f"no batch {batch_id}")
    counts = batch_counts(session, batch_id)
    in_batch = Result.batch_id == batch_id
    done = (in_batch, Result.status == "done")
    emo = session.execute(
        select(Result.emotion, func.count())
        .where(*done)
        .group_by(Result.emotion)
        .order_by(func.count().desc(), Result.emotion)
    ).all()
    n_done = max(1, counts["done"])
    last = _aware(session.scalar(select(func.max(Result.finished_at)).where(in_batch)))
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
        emotions=[(e, n, n / n_done) for e, n in emo],
        warnings=list(batch.warnings) if batch.warnings is not None else None,
    )
    _confidence(session, data, done)
    if data.warnings is None and counts["pending"] == 0 and counts["done"]:
        from worker.engine.assess import assess_batch

        # a batch finalised before warnings were stored: computed for display, as `status` does
        data.warnings = assess_batch(session, batch_id, store=False)
    # counted over labelled rows, as `status` and the webhook count them (worker.engine.assess.trust_counts)
    n_low_known, n_low, n_ood_known, n_ood = session.execute(
        select(
            func.count(Result.low_confidence),
            func.count().filter(Result.low_confidence.is_(True)),
            func.count(Result.out_of_domain),
            func.count().filter(Result.out_of_domain.is_(True)),
        ).where(*done)
    ).one()
    data.n_low_confidence = int(n_low) if n_low_known else None
    data.n_out_of_domain = int(n_ood) if n_ood_known else None
    _groups(session, data, batch_id)
    _dimensions(session, data, batch_id)
    failed = session.execute(
        select(Result.path, Result.error)
        .where(in_batch, Result.status == "failed")
        .order_by(Result.id)
        .limit(MAX_FAILED)
    ).all()
    data.failed = [(p, e or "") for p, e in failed]
    data.n_failed_hidden = max(0, counts["failed"] - len(data.failed))
    if (batch.options or {}).get("channels") == "split":
        _calls(session, data, batch_id)
    segmented = (*done, Result.analysis_mode == "segments", Result.channel.is_(None))
    n_segmented = session.scalar(select(func.count()).where(*segmented)) or 0
    data.n_timelines_hidden = max(0, n_segmented - MAX_TIMELINES)
    longest = session.execute(
        select(Result.id, Result.path, Result.duration_s, Result.emotion)
        .where(*segmented)
        .order_by(func.coalesce(Result.duration_s, 0.0).desc(), Result.id)
        .limit(MAX_TIMELINES)
    ).all()
    for rid, path, duration_s, emotion in longest:
        segs = [
            {
                "start_s": s.start_s,
                "end_s": s.end_s,
                "emotion": s.emotion,
                "probabilities": s.probabilities,
                "arousal": s.arousal,
                "valence": s.valence,
            }
            for s in session.scalars(select(Segment).where(Segment.result_id == rid).order_by(Segment.idx))
        ]
        if segs:
            data.segments[path] = segs
            data.timelines.append({"path": path, "n_segments": len(segs), "duration_s": duration_s, "emotion": emotion})
    used = session.execute(
        select(Result.model_version, func.count())
        .where(in_batch, Result.model_version.is_not(None))
        .group_by(Result.model_version)
        .order_by(func.count().desc(), Result.model_version)
    ).all()
    by_mode: dict[str, dict[str, int]] = {}
    for version, analysis_mode, n in session.execute(
        select(Result.model_version, Result.analysis_mode, func.count())
        .where(*done, Result.model_version.is_not(None))
        .group_by(Result.model_version, Result.analysis_mode)
    ):
        mode = metrics_mode(analysis_mode)
        by_mode.setdefault(version, {})[mode] = by_mode.get(version, {}).get(mode, 0) + n
    for version, n in used:
        m = session.get(ModelVersion, version)
        recorded = mode_metrics(m) if m is not None else {}
        modes = sorted((by_mode.get(version) or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        data.models.append(
            {
                "version": version,
                "files": n,
                "metrics": dict(m.metrics or {}) if m is not None else {},
                "labels": list(m.labels) if m is not None else [],
                "modes": [{"mode": mode, "files": k, "metrics": recorded.get(mode, {})} for mode, k in modes],
            }
        )
    return data


def metrics_mode(analysis_mode: str | None) -> str:
    """The model whose cross-validated metrics describe a row labelled in ``analysis_mode``.

    ``speaker-adaptive`` and ``batch-normalised`` rows were labelled by those models; every other row
    (``utterance``, ``global``, ``segments``) by the global one.
    """
    from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER

    return analysis_mode if analysis_mode in (MODE_SPEAKER, MODE_BATCH) else MODE_GLOBAL


def _dimensions(session: Any, data: ReportData, batch_id: int) -> None:
    """The batch's mean arousal and valence, and the files of the valence-arousal plane (thinned to
    at most :data:`MAX_PLANE_DOTS` by row id, so memory does not grow with the batch)."""
    from sqlalchemy import func, select

    from worker.engine.assess import dimension_summary
    from worker.storage.db import Result

    data.dimensions = dimension_summary(session, batch_id)
    n = int(data.dimensions.get("n") or 0)
    if not n:
        return
    has = (
        Result.batch_id == batch_id,
        Result.status == "done",
        Result.arousal.is_not(None),
        Result.valence.is_not(None),
    )
    data.n_out_of_domain_with_dimensions = int(
        session.scalar(select(func.count()).where(*has, Result.out_of_domain.is_(True))) or 0
    )
    step = -(-n // MAX_PLANE_DOTS)
    q = select(Result.arousal, Result.valence, Result.emotion, Result.out_of_domain).where(*has)
    if step > 1:
        q = q.where(Result.id % step == 0)
    data.plane_step = step
    data.plane = [
        (float(a), float(v), str(e or ""), bool(o))
        for a, v, e, o in session.execute(q.order_by(Result.id).limit(MAX_PLANE_DOTS))
    ]


def _calls(session: Any, data: ReportData, batch_id: int) -> None:
    """Per-channel timelines of the split files and the share of each emotion per role (``data.calls``, ``data.roles``).

    The role shares are ``GROUP BY`` aggregates over the channel rows and their segments (a channel
    classified whole counts its duration under its label); timelines are drawn for the
    :data:`MAX_TIMELINES` longest files only, so memory does not grow with the number of calls.
    """
    from sqlalchemy import String, cast, exists, func, literal, select

    from worker.storage.db import Result, Segment

    split = (Result.batch_id == batch_id, Result.channel.is_not(None))
    role = func.coalesce(Result.role, literal("channel ") + cast(Result.channel, String)).label("role")
    roles: dict[str, dict[str, Any]] = {}
    for name, status, n in session.execute(
        select(role, Result.status, func.count()).where(*split).group_by(role, Result.status)
    ):
        g = roles.setdefault(name, {"name": name, "rows": 0, "done": 0, "failed": 0, "time": Counter()})
        g["rows"] += n
        if status in ("done", "failed"):
            g[status] += n
    seg_time = select(role, Segment.emotion, func.sum(Segment.end_s - Segment.start_s)).join(
        Segment, Segment.result_id == Result.id
    )
    whole = select(role, Result.emotion, func.sum(func.coalesce(Result.duration_s, 0.0))).where(
        Result.status == "done", ~exists().where(Segment.result_id == Result.id)
    )
    for q in (
        seg_time.where(*split).group_by(role, Segment.emotion),
        whole.where(*split).group_by(role, Result.emotion),
    ):
        for name, emotion, t in session.execute(q):
            if name in roles and emotion is not None:
                roles[name]["time"][emotion] += float(t or 0.0)
    from worker.engine.assess import no_dimensions

    dims = select(
        role,
        func.count(),
        func.avg(Result.arousal),
        func.avg(Result.valence),
        func.count().filter(Result.arousal > 0.5),
        func.count().filter(Result.valence > 0.5),
    ).where(*split, Result.status == "done", Result.arousal.is_not(None), Result.valence.is_not(None))
    for name, n, arousal, valence, high, positive in session.execute(dims.group_by(role)):
        if name in roles and n:
            roles[name]["dimensions"] = {
                "n": int(n),
                "arousal_mean": float(arousal),
                "valence_mean": float(valence),
                "high_arousal_share": int(high) / int(n),
                "positive_valence_share": int(positive) / int(n),
            }
    for g in roles.values():
        g.setdefault("dimensions", no_dimensions())
        total = sum(g["time"].values())
        g["speech_s"] = total
        g["emotions"] = [(e, t, t / total if total else 0.0) for e, t in g.pop("time").most_common()]
        data.roles.append(g)
    n_calls = session.scalar(select(func.count(Result.path.distinct())).where(*split)) or 0
    longest = session.execute(
        select(Result.path, func.max(func.coalesce(Result.duration_s, 0.0)).label("d"))
        .where(*split)
        .group_by(Result.path)
        .order_by(func.max(func.coalesce(Result.duration_s, 0.0)).desc(), Result.path)
        .limit(MAX_TIMELINES)
    ).all()
    data.n_calls_hidden = max(0, n_calls - len(longest))
    for path, duration_s in longest:
        entry: dict[str, Any] = {"path": path, "duration_s": float(duration_s or 0.0), "channels": []}
        chans = session.execute(
            select(Result.id, Result.channel, role, Result.status, Result.emotion, Result.duration_s)
            .where(*split, Result.path == path)
            .order_by(Result.channel)
        ).all()
        for rid, channel, name, status, emotion, dur in chans:
            segs = [
                {"start_s": sg.start_s, "end_s": sg.end_s, "emotion": sg.emotion}
                for sg in session.scalars(select(Segment).where(Segment.result_id == rid).order_by(Segment.idx))
            ]
            if not segs and status == "done":  # classified whole
                segs = [{"start_s": 0.0, "end_s": dur or 0.0, "emotion": emotion}]
            entry["channels"].append(
                {"channel": channel, "role": name, "status": status, "emotion": emotion, "segments": segs}
            )
        data.calls.append(entry)


def _confidence(session: Any, data: ReportData, done: tuple[Any, ...]) -> None:
    """Histogram (:data:`CONFIDENCE_BINS` bins over [0, 1]) and median of the labelled files' confidence."""
    from sqlalchemy import Integer, case, cast, func, select

    from worker.storage.db import Result

    scaled = Result.confidence * CONFIDENCE_BINS
    # the bin's index: truncation (SQLite's CAST) or floor (PostgreSQL's CAST rounds); 1.0 in the last bin
    lower = func.floor(scaled) if session.get_bind().dialect.name == "postgresql" else scaled
    top = CONFIDENCE_BINS - 1
    b = case((Result.confidence >= 1, top), (Result.confidence < 0, 0), else_=cast(lower, Integer)).label("bin")
    hist = [0] * CONFIDENCE_BINS
    rows = session.execute(select(b, func.count()).where(*done, Result.confidence.is_not(None)).group_by(b)).all()
    for i, n in rows:
        hist[min(max(int(i), 0), top)] += n
    data.confidence_hist = hist
    n = sum(hist)
    if n:
        mid = session.scalars(
            select(Result.confidence)
            .where(*done, Result.confidence.is_not(None))
            .order_by(Result.confidence)
            .offset((n - 1) // 2)
            .limit(2 - n % 2)
        ).all()
        data.confidence_median = float(sum(mid) / len(mid))


def _groups(session: Any, data: ReportData, batch_id: int) -> None:
    """Per-speaker (when the batch has speaker keys) or per-folder breakdown, biggest groups first.

    One ``GROUP BY`` (speaker or folder, status, emotion) with the count and the confidence sum; a
    file's folder is its path up to the last ``/`` (``rtrim(path, replace(path, '/', ''))``, the
    same on SQLite and PostgreSQL), named relative to the parent of the folders' common path.
    """
    from sqlalchemy import func, select

    from worker.storage.db import Result

    in_batch = Result.batch_id == batch_id
    by_speaker = session.scalar(select(Result.id).where(in_batch, Result.speaker.is_not(None)).limit(1)) is not None
    data.group_kind = "speaker" if by_speaker else "folder"
    key = Result.speaker if by_speaker else func.rtrim(Result.path, func.replace(Result.path, "/", ""))
    key = key.label("key")
    q = (
        select(
            key, Result.status, Result.emotion, func.count(), func.sum(Result.confidence), func.count(Result.confidence)
        )
        .where(in_batch)
        .group_by(key, Result.status, Result.emotion)
    )
    agg: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"files": 0, "done": 0, "failed": 0, "emotions": Counter(), "conf_sum": 0.0, "conf_n": 0}
    )
    for k, status, emotion, n, conf_sum, conf_n in session.execute(q):
        if by_speaker:
            name = k or "(no speaker)"
        else:  # "/a/b/" -> "/a/b" as os.path.dirname gives it ("/" stays)
            name = k.rstrip("/") or k[:1]
        g = agg[name]
        g["files"] += n
        if status == "done":
            g["done"] += n
            g["emotions"][emotion] += n
            g["conf_sum"] += float(conf_sum or 0.0)
            g["conf_n"] += conf_n
        elif status == "failed":
            g["failed"] += n
    if not by_speaker:
        parents = list(agg)
        common = os.path.commonpath(parents) if parents and all(os.path.isabs(p) for p in parents) else ""
        base = os.path.dirname(common) if common else ""
        if base:
            agg = defaultdict(agg.default_factory, {(os.path.relpath(p, base) or "."): g for p, g in agg.items()})
    ordered = sorted(agg.items(), key=lambda kv: (-kv[1]["files"], kv[0]))
    data.n_groups_hidden = max(0, len(ordered) - MAX_GROUPS)
    for name, g in ordered[:MAX_GROUPS]:
        top, n_top = g["emotions"].most_common(1)[0] if g["emotions"] else ("", 0)
        data.groups.append(
            {
                "name": name,
                "files": g["files"],
                "done": g["done"],
                "failed": g["failed"],
                "top": top,
                "top_share": n_top / g["done"] if g["done"] else 0.0,
                "mean_confidence": g["conf_sum"] / g["conf_n"] if g["conf_n"] else None,
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


def _png_uri(fig: Any, dpi: int = 110) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (for figures of many marks)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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
    if any(data.confidence_hist):
        edges = np.linspace(0, 1, CONFIDENCE_BINS + 1)
        fig, ax = plt.subplots(figsize=(6.0, 2.8), dpi=100)
        ax.bar(
            edges[:-1],
            data.confidence_hist,
            width=1 / CONFIDENCE_BINS,
            align="edge",
            color="#4c72b0",
            edgecolor="white",
        )
        med = float(data.confidence_median or 0.0)
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
    if data.plane:
        figs["plane"] = _plane(data, colour)
    figs["calls"] = [_call_timeline(c, colour) for c in data.calls]
    if data.roles:
        figs["roles"] = _role_shares(data.roles, colour)
    return figs


def _plane(data: ReportData, colour: dict[str, Any]) -> str:
    """The valence-arousal plane: a dot per file coloured by its label (hollow: out of domain), the
    0.5 lines, the batch's mean (a black cross) and, for split calls, each role's mean (diamonds)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    size = 18 if len(data.plane) <= 500 else 6
    for e in _label_order({e for _, _, e, _ in data.plane if e}) + [""]:
        pts = [(v, a, o) for a, v, lab, o in data.plane if lab == e]
        if not pts:
            continue
        c = colour.get(e, "#999999")
        inside = [(v, a) for v, a, o in pts if not o]
        outside = [(v, a) for v, a, o in pts if o]
        if inside:
            ax.scatter(*zip(*inside, strict=True), s=size, color=c, alpha=0.75, lw=0, label=e or "(other)")
        if outside:
            ax.scatter(*zip(*outside, strict=True), s=size, facecolors="none", edgecolors=[c], lw=0.8)
    ax.axvline(0.5, color="#888888", lw=0.8, ls="--")  # neutral valence
    ax.axhline(0.5, color="#888888", lw=0.8, ls="--")  # neutral arousal
    d = data.dimensions
    ax.plot(d["valence_mean"], d["arousal_mean"], marker="X", ms=13, color="black", mec="white", mew=1.2, ls="")
    ax.annotate("batch mean", (d["valence_mean"], d["arousal_mean"]), xytext=(7, 7), textcoords="offset points",
                fontsize=8, weight="bold")  # fmt: skip
    for g in data.roles:
        r = g.get("dimensions") or {}
        if r.get("n"):
            ax.plot(r["valence_mean"], r["arousal_mean"], marker="D", ms=8, color="#333333", mec="white", ls="")
            ax.annotate(g["name"], (r["valence_mean"], r["arousal_mean"]), xytext=(7, -11),
                        textcoords="offset points", fontsize=8)  # fmt: skip
    for (x, y), text in QUADRANTS:
        ax.text(x, y, text, transform=ax.transAxes, ha="left" if x < 0.5 else "right",
                va="top" if y > 0.5 else "bottom", fontsize=7, color="#777777")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("valence (0.5 neutral; right: positive)")
    ax.set_ylabel("arousal (0.5 neutral; up: activated)")
    handles, _ = ax.get_legend_handles_labels()
    if any(o for *_, o in data.plane):
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="#555555", label="out of domain"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("how activated, how positive: one dot per file", fontsize=10)
    return _png_uri(fig)


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

    from worker.storage.db import get_engine

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
    with its speaker-independent metrics in the mode(s) the files were labelled in (global,
    speaker-adaptive, batch-normalised).
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
