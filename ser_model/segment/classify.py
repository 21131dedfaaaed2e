"""Per-segment emotion classification and the file-level aggregate (:func:`classify_segments`).

Every segment of :func:`ser_model.segment.segmenter.iter_segments` goes through the bundle's
feature extractor (:func:`ser_model.features.extract_features` for a bundle without one) and
:meth:`ser_model.model.ModelBundle.predict_proba`, in batches; the file's label is the argmax of the
duration-weighted mean of the segment probabilities, with trust flags (out-of-domain score,
low confidence) per segment and for the file (:class:`SegmentedResult`), and arousal and valence
(:meth:`ser_model.model.ModelBundle.dimensions`) per segment and, for the file, their
duration-weighted mean.

Files shorter than ``min_duration_s`` (default :data:`DEFAULT_MIN_DURATION_S`) and mode ``"none"``
are not segmented: :func:`classify_segments` classifies them whole through
:func:`ser_model.audio.load_audio`, exactly as a single file (a channel: through
:func:`ser_model.segment.levels.own_speech_span`), and reports one segment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ser_model.audio import SAMPLE_RATE, SILENCE_PEAK_DBFS, AudioError, AudioInfo, load_audio, probe_audio
from ser_model.dimensions import dimension_rows
from ser_model.segment.decode import DEFAULT_BLOCK_S
from ser_model.segment.levels import own_speech_span
from ser_model.segment.modes import SegmentMode, VadParams, parse_segment_mode
from ser_model.segment.segmenter import SegmentStats, iter_segments

DEFAULT_MIN_DURATION_S = 10.0
"""Files shorter than this (seconds) are classified whole, not segmented."""


class _Classifier(Protocol):
    labels: list[str]

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass
class SegmentedResult:
    """Per-segment emotions of one file and their file-level aggregate.

    Attributes:
        segments: one dict per classified segment, in time order:
            ``{"index": int (0-based, contiguous over classified segments), "start_s": float,
            "end_s": float, "emotion": str, "confidence": float, "probabilities": {label: p}}``.
        emotion: argmax of the aggregate probabilities.
        confidence: aggregate probability of ``emotion``.
        probabilities: duration-weighted mean of the segment probabilities, ``{label: p}``
            (sums to 1).
        n_segments: number of classified segments (``len(segments)``).
        n_skipped: segments that could not be classified (too little sound for the features,
            silent windows) plus VAD regions dropped as too short.
        segmented_duration_s: total duration of the classified segments (seconds).
        duration_s: duration of the file (seconds, from the header).
        sample_rate: native sample rate (Hz).
        channels: native channel count.
        mode: the segmentation spec applied (``"none"`` when the file was classified whole).
        segmented: False when the file was classified whole (shorter than ``min_duration_s``
            or mode ``"none"``); ``segments`` then holds one segment covering the whole file.
        ood_score: duration-weighted mean out-of-domain score of the segments (None when the
            model has no out-of-domain detector); every segment dict carries its own.
        out_of_domain: ``ood_score`` above the model's threshold.
        low_confidence: the aggregate ``confidence`` below the model's low-confidence threshold.
        arousal: duration-weighted mean arousal of the segments, in [0, 1] (0.5 the neutral point);
            None when the model gives no dimensions (:meth:`ser_model.model.ModelBundle.dimensions`).
        valence: the same for valence.
    """

    segments: list[dict[str, Any]]
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    n_segments: int
    n_skipped: int
    segmented_duration_s: float
    duration_s: float
    sample_rate: int
    channels: int
    mode: str
    segmented: bool
    ood_score: float | None = None
    out_of_domain: bool | None = None
    low_confidence: bool | None = None
    arousal: float | None = None
    valence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all attributes."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _segment_dict(
    index: int,
    start_s: float,
    end_s: float,
    labels: list[str],
    proba: np.ndarray,
    flags: tuple[Any, Any, Any],
    dims: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    probs = {lab: float(p) for lab, p in zip(labels, proba, strict=True)}
    best = max(probs, key=probs.__getitem__)
    score, ood, low = flags
    return {
        "index": index,
        "start_s": float(start_s),
        "end_s": float(end_s),
        "emotion": best,
        "confidence": probs[best],
        "probabilities": probs,
        "ood_score": None if score is None else float(score),
        "out_of_domain": None if ood is None else bool(ood),
        "low_confidence": None if low is None else bool(low),
        "arousal": dims[0],
        "valence": dims[1],
    }


def _row_flags(bundle: _Classifier, X: np.ndarray, proba: np.ndarray) -> list[tuple[Any, Any, Any]]:
    """Per-row ``(ood_score, out_of_domain, low_confidence)`` from a bundle with ``flags`` (else Nones)."""
    flags = getattr(bundle, "flags", None)
    f = flags(X, proba) if flags is not None else (None, None, None)
    n = X.shape[0]
    return [tuple(None if a is None else a[i] for a in f) for i in range(n)]  # type: ignore[misc]


def _aggregate_dimensions(segments: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The duration-weighted mean arousal and valence of segments; Nones unless every segment has them."""
    if not segments or any(s.get("arousal") is None or s.get("valence") is None for s in segments):
        return None, None
    w = np.array([s["end_s"] - s["start_s"] for s in segments], dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    a = float(np.dot(w, [s["arousal"] for s in segments]) / w.sum())
    v = float(np.dot(w, [s["valence"] for s in segments]) / w.sum())
    return a, v


def _aggregate_flags(
    bundle: _Classifier, segments: list[dict[str, Any]], confidence: float
) -> tuple[float | None, bool | None, bool | None]:
    """File-level flags of a segmented file: the duration-weighted mean score and the aggregate confidence."""
    scores = [(s["end_s"] - s["start_s"], s.get("ood_score")) for s in segments]
    flags_from_scores = getattr(bundle, "flags_from_scores", None)
    if flags_from_scores is None or any(v is None for _, v in scores):
        return None, None, None
    w = np.array([d for d, _ in scores])
    score = float(np.dot(w, [v for _, v in scores]) / w.sum())
    f = flags_from_scores(np.array([score]), np.array([confidence]))
    return score, bool(f.out_of_domain[0]), bool(f.low_confidence[0])


def classify_segments(
    path: str | os.PathLike[str],
    bundle: _Classifier,
    mode: str | SegmentMode | None = None,
    *,
    min_duration_s: float = DEFAULT_MIN_DURATION_S,
    vad: VadParams | None = None,
    max_duration_s: float | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    batch_size: int = 32,
    info: AudioInfo | None = None,
    channel: int | None = None,
) -> SegmentedResult:
    """Classify the segments of a recording and aggregate them, in bounded memory.

    Files shorter than ``min_duration_s`` and mode ``"none"`` are classified whole, exactly as a
    single file (:func:`ser_model.audio.load_audio`, then the features of the whole signal), and
    reported as one segment ``[0, duration]`` with ``segmented=False``. Longer files are
    streamed through :func:`iter_segments`; features are computed per segment with the bundle's
    ``extract`` (:meth:`ser_model.model.ModelBundle.extract`; :func:`ser_model.features.extract_features`
    for a bundle without one) and classified in batches of ``batch_size``.

    Args:
        path: audio file.
        bundle: the model: anything with ``labels`` and ``predict_proba(X: (n, N_FEATURES)) ->
            (n, len(labels))``, e.g. :class:`ser_model.model.ModelBundle`.
        mode: segmentation spec (see :func:`parse_segment_mode`); default ``"vad"``.
        min_duration_s: files shorter than this (seconds) are not segmented.
        vad: VAD rules; default :class:`VadParams`.
        max_duration_s: longest file (seconds) classified whole, passed to ``load_audio``
            (the limit guards whole-file decoding; segmented files are streamed and not limited).
        block_s: decoding block length (seconds).
        batch_size: segments per ``predict_proba`` call.
        info: header from :func:`ser_model.audio.probe_audio`.
        channel: classify this channel (0-based) of a multi-channel file as its own recording
            (``submit --channels split``): segments come from its own speech only (bleed of the
            other channels' parties is gated, see :class:`ChannelGate`); a channel classified whole
            is cropped to its own speech (plus ``vad.pad_s``) first. None: the mono mix.

    Returns:
        The :class:`SegmentedResult`.

    Raises:
        AudioError: unreadable, NaN/Inf or silent audio (one-line reasons of
            :mod:`ser_model.audio`), or ``"no speech segments found ..."`` when no segment could
            be classified. A segment with too little sound is skipped and counted, not fatal.
            With a channel: ``"no speech of its own on channel N ..."`` when the channel holds
            only bleed or silence.
        ValueError: invalid ``mode``, or a channel the file does not have.
    """
    from ser_model.features import extract_features  # the public API only

    extract = getattr(bundle, "extract", extract_features)  # a bundle knows its feature set (fast / accurate)
    m = parse_segment_mode(mode)
    if info is None:
        info = probe_audio(path)
    labels = list(bundle.labels)
    if channel is not None and not 0 <= channel < info.channels:
        raise ValueError(f"channel {channel} out of range: the file has {info.channels} channel(s)")
    if channel is not None and (m.kind == "none" or info.duration_s < min_duration_s):
        y = own_speech_span(path, channel, vad=vad, max_duration_s=max_duration_s, block_s=block_s, info=info)
        x = extract(y)[None, :]
        proba = np.asarray(bundle.predict_proba(x))
        seg = _segment_dict(
            0,
            0.0,
            info.duration_s,
            labels,
            proba[0],
            _row_flags(bundle, x, proba)[0],
            dimension_rows(bundle, x, proba)[0],
        )
        return SegmentedResult(
            segments=[seg],
            emotion=seg["emotion"],
            confidence=seg["confidence"],
            probabilities=dict(seg["probabilities"]),
            n_segments=1,
            n_skipped=0,
            segmented_duration_s=y.size / SAMPLE_RATE,
            duration_s=info.duration_s,
            sample_rate=info.sample_rate,
            channels=info.channels,
            mode="none",
            segmented=False,
            ood_score=seg["ood_score"],
            out_of_domain=seg["out_of_domain"],
            low_confidence=seg["low_confidence"],
            arousal=seg["arousal"],
            valence=seg["valence"],
        )
    if m.kind == "none" or info.duration_s < min_duration_s:
        y, _ = load_audio(path, max_duration_s=max_duration_s, info=info)
        x = extract(y)[None, :]
        proba = np.asarray(bundle.predict_proba(x))
        seg = _segment_dict(
            0,
            0.0,
            y.size / SAMPLE_RATE,
            labels,
            proba[0],
            _row_flags(bundle, x, proba)[0],
            dimension_rows(bundle, x, proba)[0],
        )
        return SegmentedResult(
            segments=[seg],
            emotion=seg["emotion"],
            confidence=seg["confidence"],
            probabilities=dict(seg["probabilities"]),
            n_segments=1,
            n_skipped=0,
            segmented_duration_s=seg["end_s"],
            duration_s=info.duration_s,
            sample_rate=info.sample_rate,
            channels=info.channels,
            mode="none",
            segmented=False,
            ood_score=seg["ood_score"],
            out_of_domain=seg["out_of_domain"],
            low_confidence=seg["low_confidence"],
            arousal=seg["arousal"],
            valence=seg["valence"],
        )

    stats = SegmentStats()
    segments: list[dict[str, Any]] = []
    weighted = np.zeros(len(labels), dtype=np.float64)
    total_s = 0.0
    skipped = 0
    batch_x: list[np.ndarray] = []
    batch_t: list[tuple[float, float]] = []
    silence = 10 ** (SILENCE_PEAK_DBFS / 20)

    def flush() -> None:
        nonlocal weighted, total_s
        if not batch_x:
            return
        X = np.stack(batch_x)
        proba = np.asarray(bundle.predict_proba(X))
        dims = dimension_rows(bundle, X, proba)
        for (a, b), row, fl, dm in zip(batch_t, proba, _row_flags(bundle, X, proba), dims, strict=True):
            segments.append(_segment_dict(len(segments), a, b, labels, row, fl, dm))
            weighted += (b - a) * row
            total_s += b - a
        batch_x.clear()
        batch_t.clear()

    for seg in iter_segments(path, m, vad=vad, block_s=block_s, info=info, stats=stats, channel=channel):
        if seg.samples.size == 0 or float(np.max(np.abs(seg.samples))) <= silence:
            skipped += 1
            continue
        try:
            x = extract(seg.samples)
        except AudioError:
            skipped += 1
            continue
        batch_x.append(x)
        batch_t.append((seg.start_s, seg.end_s))
        if len(batch_x) >= batch_size:
            flush()
    flush()
    skipped += stats.n_dropped_short
    if not segments and channel is not None:
        raise AudioError(
            f"no speech of its own on channel {channel}: only bleed from other channels, silence or noise"
            f" ({m} segmentation, {skipped} region(s) too short or silent)"
        )
    if not segments:
        raise AudioError(
            f"no speech segments found ({m} segmentation, {stats.n_segments} segment(s), {skipped} too short or silent)"
        )
    mean = weighted / total_s
    mean /= mean.sum()
    probs = {lab: float(p) for lab, p in zip(labels, mean, strict=True)}
    best = max(probs, key=probs.__getitem__)
    ood_score, out_of_domain, low_confidence = _aggregate_flags(bundle, segments, probs[best])
    arousal, valence = _aggregate_dimensions(segments)
    return SegmentedResult(
        segments=segments,
        emotion=best,
        confidence=probs[best],
        probabilities=probs,
        n_segments=len(segments),
        n_skipped=skipped,
        segmented_duration_s=total_s,
        duration_s=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
        mode=str(m),
        segmented=True,
        ood_score=ood_score,
        out_of_domain=out_of_domain,
        low_confidence=low_confidence,
        arousal=arousal,
        valence=valence,
    )
