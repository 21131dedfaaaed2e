"""Training reports: confusion-matrix and loss-curve PNGs (matplotlib, Agg backend) and metrics JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Lay out, write (creating parent folders) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_confusion(report: dict[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Save a row-normalised confusion matrix (true rows, predicted columns) as PNG.

    Args:
        report: metrics from :func:`ser_model.metrics.classification_metrics` (``labels``,
            ``confusion``, ``wa``, ``uar``, ``macro_f1``).
        path: PNG file to write.
        title: first title line; the WA/UAR/macro-F1 line is added.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = report["labels"]
    cm = np.asarray(report["confusion"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.75 * n), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n({int(cm[i, j])})",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    sub = f"WA {report['wa']:.3f}  UAR {report['uar']:.3f}  macro-F1 {report['macro_f1']:.3f}  (n={report['n']})"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall")
    return _save(fig, path)


def plot_loss(loss_curve: list[float], path: str | os.PathLike[str]) -> Path:
    """Save the MLP training-loss curve (cross-entropy per epoch) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=110)
    ax.plot(range(1, len(loss_curve) + 1), loss_curve)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(calibration: dict[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Save a reliability diagram (accuracy against confidence, before and after calibration) as PNG.

    One panel per mode of ``calibration`` (``"global"``, ``"speaker-adaptive"``), each with the
    out-of-fold reliability bins before (raw softmax) and after temperature scaling, the diagonal of
    perfect calibration, and the ECE of both in the title (Guo et al. 2017, Fig. 1).

    Args:
        calibration: ``meta["calibration"]`` of a bundle (:func:`ser_model.training.fit_trust`).
        path: PNG file to write.
        title: figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(calibration)
    fig, axes = plt.subplots(1, max(len(modes), 1), figsize=(4.2 * max(len(modes), 1), 4.2), dpi=110, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=False):
        c = calibration[mode]
        for key, colour, name in (
            ("reliability_before", "tab:red", "raw softmax"),
            ("reliability_after", "tab:blue", "calibrated"),
        ):
            bins = [b for b in c[key] if b["count"]]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                "o-",
                color=colour,
                label=f"{name}: ECE {c['ece_before' if key == 'reliability_before' else 'ece_after']:.3f}",
            )
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        ax.axvline(c["low_confidence_threshold"], color="tab:orange", lw=1, ls=":", label="low-confidence threshold")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (15 bins)")
        ax.set_ylabel("accuracy")
        t = c["temperature"]
        power = "" if float(t.get("power", 2.0)) == 1.0 else f"^{float(t.get('power', 2.0)):g}"
        cap = f"min({t['s_max']:.2f}, s)" if t.get("s_max") is not None else "s"
        ax.set_title(
            f"{mode}: T(s) = {t['t0']:.2f} (1 + {t.get('growth', 0.0):.2f} max(0, {cap} - {t['ref']:.2f}){power}), "
            f"n = {c['n']}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_report(
    folder: str | os.PathLike[str],
    cv: dict[str, Any] | None,
    loss_curve: list[float],
    title: str,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``confusion_matrix.png`` and ``loss_curve.png`` into ``folder``.

    With ``calibration`` (a bundle's ``meta["calibration"]``) also ``calibration.json`` and
    ``reliability_diagram.png`` (:func:`plot_reliability`). Without ``cv`` (``train --cv none``)
    ``metrics.json`` says no cross-validation ran and no confusion matrix is drawn.

    Returns:
        ``{"metrics": path, "confusion": path, "loss": path}`` plus ``"calibration"`` and
        ``"reliability"`` when written.
    """
    from ser_model.metrics import OOF_KEYS

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    if cv is None:
        metrics: dict[str, Any] = {"protocol": "no cross-validation (train --cv none): no metrics"}
    else:
        metrics = {k: v for k, v in cv.items() if k not in OOF_KEYS}
    (d / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    out = {"metrics": d / "metrics.json"}
    if cv is not None:
        out["confusion"] = plot_confusion(cv, d / "confusion_matrix.png", title)
    out["loss"] = plot_loss(loss_curve, d / "loss_curve.png")
    if calibration:
        (d / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
        out["calibration"] = d / "calibration.json"
        out["reliability"] = plot_reliability(calibration, d / "reliability_diagram.png", title)
    return out


def timeline_figure(
    segments: list[dict[str, Any]],
    labels: list[str],
    colour: dict[str, Any],
    *,
    figsize: tuple[float, float] = (11, 4.2),
    dpi: int = 110,
    lw: float = 1.8,
) -> Any:
    """A matplotlib figure: every label's probability as steps over the segments, the winner as a strip.

    When every segment carries ``arousal`` and ``valence`` (each in [0, 1], 0.5 the neutral point;
    :mod:`ser_model.dimensions`), a second panel draws both as steps over time with the 0.5 line.

    Args:
        segments: dicts with ``start_s``, ``end_s`` (seconds), ``emotion``, ``probabilities`` ({label: p})
            and optionally ``arousal`` and ``valence``.
        labels: labels to draw, one line each.
        colour: matplotlib colour per label (the strip uses grey for a label without one).
        figsize: figure size in inches.
        dpi: figure resolution.
        lw: line width.

    Returns:
        The figure (axes: probabilities, [arousal and valence,] strip); the caller saves and closes it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segs = sorted(segments, key=lambda s: s["start_s"])
    dims = bool(segs) and all(s.get("arousal") is not None and s.get("valence") is not None for s in segs)
    ratios = [5, 3, 1] if dims else [5, 1]
    w, h = figsize
    fig, axes = plt.subplots(
        len(ratios), 1, figsize=(w, h * sum(ratios) / 6), dpi=dpi, sharex=True, gridspec_kw={"height_ratios": ratios}
    )
    ax, strip = axes[0], axes[-1]

    def steps(key: Any) -> tuple[list[float], list[float]]:
        xs: list[float] = []
        ys: list[float] = []
        for s in segs:
            v = float(key(s))
            xs += [s["start_s"], s["end_s"], float("nan")]
            ys += [v, v, float("nan")]
        return xs, ys

    for lab in labels:
        ax.plot(
            *steps(lambda s, lab=lab: (s.get("probabilities") or {}).get(lab, 0.0)), color=colour[lab], label=lab, lw=lw
        )
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if dims:
        dx = axes[1]
        dx.plot(*steps(lambda s: s["arousal"]), color="#c44e52", label="arousal", lw=lw)
        dx.plot(*steps(lambda s: s["valence"]), color="#4c72b0", label="valence", lw=lw)
        dx.axhline(0.5, color="#888888", lw=0.8, ls="--")
        dx.set_ylim(0, 1)
        dx.set_ylabel("0.5 = neutral")
        dx.grid(alpha=0.3)
        dx.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for s in segs:
        strip.axvspan(s["start_s"], s["end_s"], color=colour.get(s.get("emotion"), "grey"), alpha=0.9)
    strip.set_yticks([])
    strip.set_xlabel("time (s)")
    return fig


def plot_timeline(
    segments: list[dict[str, Any]], labels: list[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Save a timeline of emotion probabilities over a recording as PNG.

    Each segment contributes a step from ``start_s`` to ``end_s`` (seconds) for every label's
    probability; when the segments carry ``arousal`` and ``valence``, a second panel draws them over
    time (0.5 the neutral point); a strip below shows the winning emotion of each segment.

    Args:
        segments: dicts with ``start_s``, ``end_s``, ``emotion``, ``probabilities`` ({label: p}) and
            optionally ``arousal`` and ``valence``.
        labels: labels to draw, one line each.
        path: PNG file to write.
        title: plot title.

    Returns:
        The written path.

    Raises:
        ValueError: no segments.
    """
    if not segments:
        raise ValueError("no segments to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    colour = {lab: cmap(i % 10) for i, lab in enumerate(labels)}
    fig = timeline_figure(segments, labels, colour, figsize=(11, 4.2), dpi=110, lw=1.8)
    fig.axes[0].set_title(title, fontsize=9)
    return _save(fig, path)
