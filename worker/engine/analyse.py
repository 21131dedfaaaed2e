"""Analysing one file: decode, featurise, classify, and the row that says what came of it.

No database and no queue here: :func:`analyse_path` turns one path into its ``results`` row(s), as
the batch's :class:`AnalysisPlan` says (segments of long recordings, ``--channels split``, features
only for batches labelled by group). A file that cannot be labelled becomes a ``failed`` row with a
one-line reason; it never raises for bad input. The chunk route
(:func:`worker.engine.chunk.run_chunk`) stores the rows; the Python API (:mod:`ser_batch`) calls
:func:`analyse_file` and :func:`analyse_channels` directly.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from worker.settings import Settings, get_settings
from worker.storage.db import PROB_COLUMNS, utcnow
from worker.storage.registry import LoadedModel

PASSTHROUGH: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded,)
"""Exceptions :func:`analyse_file` must not turn into a failed row: Celery's soft time limit, which
:func:`worker.engine.chunk.run_chunk` handles for the whole chunk (billiard's class, which Celery re-exports)."""


def _sha256_and_size(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _prob_columns(probs: dict[str, float]) -> dict[str, float]:
    """``p_<label>`` columns for the labels that have one (the eight RAVDESS emotions)."""
    return {f"p_{lab}": p for lab, p in probs.items() if f"p_{lab}" in PROB_COLUMNS}


def label_fields(
    bundle: Any, X: Any, proba: Any, modes: Sequence[str] | None = None, groups: Sequence[str | None] | None = None
) -> list[dict[str, Any]]:
    """The label columns of rows classified together: emotion, confidence, probabilities, trust flags,
    arousal and valence.

    Args:
        bundle: the :class:`ser_model.model.ModelBundle` that produced ``proba``.
        X: raw features of the rows ``(n, N_FEATURES)`` (for the out-of-domain score and the
            dimension head).
        proba: calibrated probabilities ``(n, len(labels))``.
        modes: per-row analysis mode (``"global"``, ``"speaker-adaptive"`` or ``"batch-normalised"``),
            which picks the low-confidence threshold and the dimension head; default global.
        groups: per-row normalisation key the rows were classified with (the speaker, or the batch's
            key), for the dimension heads of the normalised modes; None: those rows' dimensions are
            their mapped probabilities.

    Returns:
        One dict per row with ``emotion``, ``confidence``, ``probabilities``, ``p_<label>``,
        ``ood_score``, ``out_of_domain``, ``low_confidence`` (the flags None without trust state),
        ``arousal`` and ``valence`` (each in [0, 1], 0.5 the neutral point, from
        :meth:`ser_model.model.ModelBundle.dimensions`; None when the model gives none). An
        out-of-domain row keeps its dimensions: they are what carries across corpora.
    """
    from ser_model.dimensions import dimension_rows

    labels: list[str] = list(bundle.labels)
    flags = bundle.flags(X, proba, modes)
    dims = dimension_rows(bundle, X, proba, modes, groups)
    out = []
    for i, p in enumerate(proba):
        probs = {lab: float(v) for lab, v in zip(labels, p, strict=True)}
        best = max(probs, key=probs.__getitem__)
        out.append(
            {
                "emotion": best,
                "confidence": probs[best],
                "probabilities": probs,
                **(dict.fromkeys(PROB_COLUMNS) | _prob_columns(probs)),
                "ood_score": None if flags.ood_score is None else float(flags.ood_score[i]),
                "out_of_domain": None if flags.out_of_domain is None else bool(flags.out_of_domain[i]),
                "low_confidence": None if flags.low_confidence is None else bool(flags.low_confidence[i]),
                "arousal": dims[i][0],
                "valence": dims[i][1],
            }
        )
    return out


def analyse_file(
    path: str,
    model: LoadedModel,
    settings: Settings | None = None,
    *,
    segment: str = "vad",
    segment_min_s: float = 10.0,
    features_only: bool = False,
    channel: int | None = None,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode, featurise and classify one file (or one channel of it); never raises for bad input.

    Files of at least ``segment_min_s`` seconds are split into segments (``segment`` mode, see
    :func:`ser_model.segment.parse_segment_mode`), decoded block-wise in bounded memory and each
    segment classified; the file's row then holds the duration-weighted mean of the segment
    probabilities and the segments travel in ``row["segments"]`` (not a column; see
    :func:`worker.engine.rows.store_rows`). Shorter files, and every file with ``segment="none"``, are classified whole.

    Args:
        path: audio file path as stored in the batch.
        model: the loaded model (see :func:`worker.storage.registry.load_model`).
        settings: limits (max duration, max bytes); default the settings in force.
        segment: ``"vad"``, ``"window:LEN:HOP"`` (seconds) or ``"none"``.
        segment_min_s: files shorter than this (seconds) are classified whole.
        features_only: for speaker-adaptive batches: stop after feature extraction of a file that is
            classified whole and return it ``pending`` with ``features`` (float32 bytes); see
            :func:`worker.engine.rows.classify_ready_speakers`. Segmented files are still classified at once.
        channel: label this channel (0-based) of a multi-channel file as its own recording
            (``submit --channels split``, see :func:`analyse_channels`); the row then carries
            ``channel``. None: the mono mix, as always.
        facts: ``size_bytes`` and ``sha256`` already computed for this file (the other channels
            of a split file), so the file is not hashed again.

    Returns:
        A ``results`` row (without ``batch_id``): ``status`` ``"done"`` with emotion, confidence and
        probabilities, or ``"failed"`` with ``error`` (one line). File facts (size, SHA-256, sample
        rate, channels, duration) are filled in as far as they could be read.
    """
    from ser_model.audio import AudioError, load_audio, probe_audio
    from ser_model.segment import classify_segments, own_speech_span, parse_segment_mode

    s = settings or get_settings()
    t0 = time.perf_counter()
    row: dict[str, Any] = {
        "path": path,
        "status": "failed",
        "error": None,
        "size_bytes": None,
        "sha256": None,
        "duration_s": None,
        "sample_rate": None,
        "channels": None,
        "emotion": None,
        "confidence": None,
        "probabilities": None,
        "model_version": model.version,
        "analysis_mode": "utterance",
        "n_segments": None,
        "features": None,
        "ood_score": None,
        "out_of_domain": None,
        "low_confidence": None,
        "arousal": None,
        "valence": None,
        **dict.fromkeys(PROB_COLUMNS),
    }
    if channel is not None:
        row["channel"] = channel
    try:
        if facts is not None:
            row.update(size_bytes=facts["size_bytes"], sha256=facts["sha256"])
        else:
            _check_size_and_hash(path, s, row)
        info = probe_audio(path)
        row.update(duration_s=info.duration_s, sample_rate=info.sample_rate, channels=info.channels)
        mode = parse_segment_mode(segment)
        bundle = model.bundle
        whole = mode.kind == "none" or info.duration_s < segment_min_s
        if channel is not None and whole and features_only:
            y = own_speech_span(path, channel, max_duration_s=s.max_duration_s, info=info)
            row.update(status="pending", features=bundle.extract(y).astype("<f4").tobytes(), analysis_mode=None)
            row["processing_ms"] = (time.perf_counter() - t0) * 1000.0
            return row
        if channel is not None or not whole:
            seg = classify_segments(
                path, bundle, mode, min_duration_s=segment_min_s, info=info, channel=channel,
                max_duration_s=s.max_duration_s,
            )  # fmt: skip
            if not seg.segmented:  # a channel classified whole: one label, its span is no segment
                row.update(status="done", **_seg_label(seg))
                row["processing_ms"] = (time.perf_counter() - t0) * 1000.0
                row["finished_at"] = utcnow()
                return row
            row.update(
                status="done", analysis_mode="segments", n_segments=seg.n_segments, segments=seg.segments,
                **_seg_label(seg),
            )  # fmt: skip
        else:
            y, _ = load_audio(path, max_duration_s=s.max_duration_s, info=info)
            x = bundle.extract(y)
            if features_only:
                row.update(status="pending", features=x.astype("<f4").tobytes(), analysis_mode=None)
                row["processing_ms"] = (time.perf_counter() - t0) * 1000.0
                return row
            X = x[None, :]
            row.update(status="done", **label_fields(bundle, X, bundle.predict_proba(X))[0])
    except PASSTHROUGH:
        raise
    except AudioError as e:
        row["error"] = str(e)
    except MemoryError:
        row["error"] = "out of memory while decoding (file too large for this worker)"
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch; the reason is kept
        row["error"] = f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    row["processing_ms"] = (time.perf_counter() - t0) * 1000.0
    row["finished_at"] = utcnow()
    return row


def _check_size_and_hash(path: str, s: Settings, row: dict[str, Any]) -> None:
    """Fill ``size_bytes`` and ``sha256`` of ``row``; AudioError for a folder, an unreadable or too large file."""
    from ser_model.audio import AudioError

    if os.path.isdir(path):
        raise AudioError("is a folder, not a file")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise AudioError(_os_reason(e)) from None
    row["size_bytes"] = size
    if size > s.max_file_bytes:
        raise AudioError(f"file too large: {size} bytes > limit of {s.max_file_bytes} bytes (SER_MAX_FILE_BYTES)")
    try:
        row["sha256"], row["size_bytes"] = _sha256_and_size(path)
    except OSError as e:
        raise AudioError(_os_reason(e)) from None


def _seg_label(seg: Any) -> dict[str, Any]:
    """Label columns of a :class:`ser_model.segment.SegmentedResult` (aggregate and trust flags)."""
    return {
        "emotion": seg.emotion,
        "confidence": seg.confidence,
        "probabilities": seg.probabilities,
        "ood_score": seg.ood_score,
        "out_of_domain": seg.out_of_domain,
        "low_confidence": seg.low_confidence,
        "arousal": seg.arousal,
        "valence": seg.valence,
        **dict.fromkeys(PROB_COLUMNS),
        **_prob_columns(seg.probabilities),
    }


def analyse_channels(
    path: str,
    model: LoadedModel,
    settings: Settings | None = None,
    *,
    segment: str = "vad",
    segment_min_s: float = 10.0,
    features_only: bool = False,
    channel_names: Sequence[str] = (),
    speaker_keys: Any = None,
) -> list[dict[str, Any]]:
    """``submit --channels split``: one row per channel of a multi-channel file; never raises for bad input.

    Each channel is labelled as its own recording (:func:`analyse_file` with ``channel``): its
    segments come from its own speech only, frames where another channel's party bleeds into it
    being gated (:class:`ser_model.segment.ChannelGate`); a channel without own speech is a
    ``failed`` row with the reason. A mono file, and a file that cannot be opened, give one row
    with ``channel`` None, exactly as in a ``mix`` batch.

    Args:
        path: audio file path as stored in the batch.
        model: the loaded model.
        settings: limits; default the settings in force.
        segment: segmentation spec (see :func:`analyse_file`).
        segment_min_s: channels shorter than this (seconds) are classified whole.
        features_only: speaker-adaptive batch (see :func:`analyse_file`).
        channel_names: role of channel 0, 1, ... (``--channel-names``); channels beyond get None.
        speaker_keys: ``(path, channel, role) -> speaker key or None`` for speaker-adaptive batches
            (:func:`ser_model.speakers_from.channel_speaker_keys`); None leaves ``speaker`` alone.

    Returns:
        Rows as :func:`analyse_file` returns them, each with ``channel``, ``role`` (and ``speaker``
        when ``speaker_keys`` is given).
    """
    from ser_model.audio import AudioError, probe_audio

    s = settings or get_settings()
    kw: dict[str, Any] = {"segment": segment, "segment_min_s": segment_min_s, "features_only": features_only}
    try:
        n_channels = probe_audio(path).channels if not os.path.isdir(path) else 1
    except AudioError:
        n_channels = 1
    if n_channels < 2:
        return [analyse_file(path, model, s, **kw)]
    first = analyse_file(path, model, s, channel=0, **kw)
    if first["sha256"] is None:  # the file itself failed (too large, unreadable): one row says why
        first.pop("channel", None)
        return [first]
    facts = {"size_bytes": first["size_bytes"], "sha256": first["sha256"]}
    rows = [first] + [analyse_file(path, model, s, channel=c, facts=facts, **kw) for c in range(1, n_channels)]
    for r in rows:
        role = channel_names[r["channel"]] if r["channel"] < len(channel_names) else None
        r["role"] = role
        if speaker_keys is not None:
            r["speaker"] = speaker_keys(path, r["channel"], role)
    return rows


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found (moved or deleted after submit, or a broken symlink)"
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == 40:  # ELOOP
        return "symlink loop"
    return f"cannot read file: {e.strerror or e}"


def group_mode(options: dict[str, Any]) -> str | None:
    """How a batch's files are labelled together, from its options: ``"speaker-adaptive"``
    (``--speaker-from``: groups are speakers), ``"batch-normalised"`` (``--normalise batch``: one group,
    the whole batch), or None (every file alone)."""
    from ser_model.speaker import MODE_BATCH, MODE_SPEAKER

    if options.get("speaker_from"):
        return MODE_SPEAKER
    if options.get("normalise") == "batch":
        return MODE_BATCH
    return None


@dataclass(frozen=True)
class AnalysisPlan:
    """How every file of a batch is analysed, read from the options the batch was submitted with.

    Attributes:
        segment: segmentation of long recordings (``vad``, ``window:LEN:HOP`` or ``none``).
        segment_min_s: files shorter than this (seconds) are classified whole.
        group_mode: ``speaker-adaptive`` or ``batch-normalised`` when files are classified together
            after all of their group have features (:func:`group_mode`); None: every file alone.
        split_channels: ``--channels split``: one row per channel of a multi-channel file.
        channel_names: roles of channels 0, 1, ... (``--channel-names``).
        speaker_keys: ``(path, channel, role) -> speaker key`` of a split, speaker-adaptive batch.
    """

    segment: str = "vad"
    segment_min_s: float = 10.0
    group_mode: str | None = None
    split_channels: bool = False
    channel_names: tuple[str, ...] = ()
    speaker_keys: Callable[[str, int, str | None], str | None] | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> AnalysisPlan:
        """The plan of a batch from its ``batches.options``.

        Raises:
            ValueError: a ``speaker_from`` spec that :func:`ser_model.speakers_from.channel_speaker_keys` refuses.
        """
        split = options.get("channels") == "split"
        names = tuple(options.get("channel_names") or ())
        keys = None
        if split and options.get("speaker_from"):
            from ser_model.speakers_from import channel_speaker_keys

            keys = channel_speaker_keys(str(options["speaker_from"]), list(names))
        return cls(
            segment=str(options.get("segment", "vad")),
            segment_min_s=float(options.get("segment_min_s", 10.0)),
            group_mode=group_mode(options),
            split_channels=split,
            channel_names=names,
            speaker_keys=keys,
        )


def analyse_path(path: str, model: LoadedModel, plan: AnalysisPlan) -> list[dict[str, Any]]:
    """The ``results`` rows of one file of a batch: one, or one per channel with ``--channels split``.

    Never raises for bad input (see :func:`analyse_file`); only :data:`PASSTHROUGH` gets through.
    """
    kw: dict[str, Any] = {
        "segment": plan.segment,
        "segment_min_s": plan.segment_min_s,
        "features_only": plan.group_mode is not None,
    }
    if plan.split_channels:
        return analyse_channels(path, model, channel_names=plan.channel_names, speaker_keys=plan.speaker_keys, **kw)
    return [analyse_file(path, model, **kw)]
