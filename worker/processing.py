"""Classifying files and writing their rows: the one code path of embedded mode and the Celery task.

:func:`process_paths` is what the ``ser.classify`` Celery task wraps and what every process of
embedded ``ser-batch submit`` calls. A file that cannot be labelled becomes a ``failed`` row with a
one-line reason; it never stops the rest of the chunk. Rows are upserted on (batch_id, path,
channel), so running the same chunk twice leaves the same rows; with ``--channels split`` a
multi-channel file's pending row is replaced by one row per channel (:func:`analyse_channels`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from worker.db import PROB_COLUMNS, drop_mixed_rows, get_engine, replace_segments, upsert_results, utcnow
from worker.registry import LoadedModel, load_model
from worker.settings import Settings, get_settings

PASSTHROUGH: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded,)
"""Exceptions :func:`analyse_file` must not turn into a failed row: Celery's soft time limit, which
:func:`worker.batches.run_chunk` handles for the whole chunk (billiard's class, which Celery re-exports)."""


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


def label_fields(bundle: Any, X: Any, proba: Any, modes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The label columns of rows classified together: emotion, confidence, probabilities, trust flags.

    Args:
        bundle: the :class:`ser_model.model.ModelBundle` that produced ``proba``.
        X: raw features of the rows ``(n, N_FEATURES)`` (for the out-of-domain score).
        proba: calibrated probabilities ``(n, len(labels))``.
        modes: per-row analysis mode (``"global"`` or ``"speaker-adaptive"``), which picks the
            low-confidence threshold; default global.

    Returns:
        One dict per row with ``emotion``, ``confidence``, ``probabilities``, ``p_<label>``,
        ``ood_score``, ``out_of_domain``, ``low_confidence`` (the flags None without trust state).
    """
    labels: list[str] = list(bundle.labels)
    flags = bundle.flags(X, proba, modes)
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
    :func:`store_rows`). Shorter files, and every file with ``segment="none"``, are classified whole.

    Args:
        path: audio file path as stored in the batch.
        model: the loaded model (see :func:`worker.registry.load_model`).
        settings: limits (max duration, max bytes); default the settings in force.
        segment: ``"vad"``, ``"window:LEN:HOP"`` (seconds) or ``"none"``.
        segment_min_s: files shorter than this (seconds) are classified whole.
        features_only: for speaker-adaptive batches: stop after feature extraction of a file that is
            classified whole and return it ``pending`` with ``features`` (float32 bytes); see
            :func:`classify_ready_speakers`. Segmented files are still classified at once.
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
                status="done",
                emotion=seg.emotion,
                confidence=seg.confidence,
                probabilities=seg.probabilities,
                analysis_mode="segments",
                n_segments=seg.n_segments,
                segments=seg.segments,
                ood_score=seg.ood_score,
                out_of_domain=seg.out_of_domain,
                low_confidence=seg.low_confidence,
                **_prob_columns(seg.probabilities),
            )
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


def store_rows(batch_id: int, rows: Sequence[dict[str, Any]], *, url: str | None = None) -> None:
    """Upsert analysed rows of one batch, and replace their segments, in one short transaction.

    Rows with a ``segments`` list (from :func:`analyse_file` on a long recording) get their
    ``segments`` table rows rewritten, so a redelivered task leaves one set of segments per file.
    When these were the batch's last pending rows, the same transaction finalises the batch
    (:func:`worker.batches.finalise_batch`).
    """
    from worker.batches import finalise_batch

    full = [{k: v for k, v in r.items() if k != "segments"} | {"batch_id": batch_id} for r in rows]
    # upsert_results needs the same keys in every row (one executemany): rows of a kind (mixed,
    # per channel) share their keys; a missing key is not set to NULL (a mixed row of a split batch
    # keeps the speaker its pending row was given)
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in full:
        groups.setdefault(frozenset(r), []).append(r)
    segmented = {(r["path"], r.get("channel")): r["segments"] for r in rows if r.get("segments")}
    split = sorted({r["path"] for r in rows if r.get("channel") is not None})
    with Session(get_engine(url)) as session, session.begin():
        if split:
            drop_mixed_rows(session, batch_id, split)  # the file's pending row becomes its channels' rows
        for group in groups.values():
            upsert_results(session, group)
        if segmented:
            replace_segments(session, batch_id, segmented)
        finalise_batch(session, batch_id)


_options_cache: dict[tuple[str | None, int, int], dict[str, Any]] = {}


def batch_options(batch_id: int, *, url: str | None = None) -> dict[str, Any]:
    """The options a batch was submitted with (segment mode, ...), read once per process and batch."""
    from worker.db import Batch

    key = (url, os.getpid(), batch_id)
    if key not in _options_cache:
        with Session(get_engine(url)) as session:
            batch = session.get(Batch, batch_id)
            _options_cache[key] = dict(batch.options or {}) if batch is not None else {}
    return _options_cache[key]


def process_paths(
    batch_id: int,
    paths: Sequence[str],
    *,
    model_version: str | None = None,
    url: str | None = None,
) -> dict[str, int]:
    """Classify ``paths`` of batch ``batch_id`` and upsert one row per path.

    Args:
        batch_id: the batch the rows belong to.
        paths: files, as stored in the batch's pending rows.
        model_version: registered model to use; default the active one (re-read at every call, so
            a newly activated model is used from the next chunk on).
        url: database URL; default the settings'.

    Returns:
        ``{"done": n, "failed": n}`` for this chunk.

    Raises:
        worker.registry.RegistryError: no usable model (the whole chunk cannot be labelled).
        sqlalchemy.exc.OperationalError: the database is unreachable (transient; callers retry).
        PASSTHROUGH: re-raised from :func:`analyse_file` (a Celery time limit) after the rows
            finished so far have been stored.
    """
    model = load_model(model_version, url=url)
    opts = batch_options(batch_id, url=url)
    seg = {"segment": str(opts.get("segment", "vad")), "segment_min_s": float(opts.get("segment_min_s", 10.0))}
    by_speaker = group_mode(opts) is not None
    split = opts.get("channels") == "split"
    names = list(opts.get("channel_names") or [])
    keys = None
    if split and opts.get("speaker_from"):
        from ser_model.speakers_from import channel_speaker_keys

        keys = channel_speaker_keys(str(opts["speaker_from"]), names)
    rows: list[dict[str, Any]] = []
    try:
        for p in paths:
            if split:
                rows.extend(
                    analyse_channels(p, model, features_only=by_speaker, channel_names=names, speaker_keys=keys, **seg)
                )
            else:
                rows.append(analyse_file(p, model, features_only=by_speaker, **seg))
    except PASSTHROUGH:
        store_rows(batch_id, rows, url=url)  # keep the files finished before a time limit hit
        raise
    store_rows(batch_id, rows, url=url)
    if by_speaker:
        classify_ready_speakers(batch_id, [r["path"] for r in rows], model, url=url)
        return _chunk_counts(batch_id, [r["path"] for r in rows], url=url)
    if split:
        return _chunk_counts(batch_id, list(paths), url=url)
    done = sum(r["status"] == "done" for r in rows)
    return {"done": done, "failed": len(rows) - done}


def _chunk_counts(batch_id: int, paths: Sequence[str], *, url: str | None) -> dict[str, int]:
    from sqlalchemy import func, select

    from worker.db import Result

    out = {"done": 0, "failed": 0}
    with Session(get_engine(url)) as session:
        q = (
            select(Result.status, func.count())
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)))
            .group_by(Result.status)
        )
        for status, n in session.execute(q):
            out[status] = n
    return out


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


def classify_ready_speakers(batch_id: int, paths: Sequence[str], model: LoadedModel, *, url: str | None = None) -> int:
    """Classify every speaker of ``paths`` whose files in the batch all have features now.

    Step two of a speaker-adaptive batch (``submit --speaker-from``): once no file of a speaker is
    still waiting for its features, all of that speaker's feature vectors are classified together
    with :meth:`ser_model.model.ModelBundle.predict_proba_speakers` — z-normalised by the speaker's
    own statistics when the speaker has at least ``min_speaker_files`` files, else by the global
    model — and the rows become ``done`` with ``analysis_mode`` ``speaker-adaptive`` or ``global``.
    Files without a speaker key are classified at once by the global model. A batch-normalised batch
    (``--normalise batch``) works the same way with one key for every file: the whole batch is
    classified together by the batch-normalised pipeline (``analysis_mode`` ``batch-normalised``) once
    the last file has its features. Running it twice for the
    same speaker (two chunks finishing together) writes the same values again: the statistics do not
    depend on row order.

    Args:
        batch_id: the batch.
        paths: files just featurised; their speakers are the candidates.
        model: the batch's model.
        url: database URL.

    Returns:
        Number of rows classified.
    """
    import numpy as np
    from sqlalchemy import func, select, update

    from worker.batches import finalise_batch
    from worker.db import Result

    engine = get_engine(url)
    with Session(engine) as session:
        speakers = set(
            session.scalars(select(Result.speaker).where(Result.batch_id == batch_id, Result.path.in_(list(paths))))
        )
    bundle = model.bundle
    mode = group_mode(batch_options(batch_id, url=url)) or "speaker-adaptive"
    n_classified = 0
    for spk in speakers:
        same = Result.speaker.is_(None) if spk is None else Result.speaker == spk
        with Session(engine) as session, session.begin():
            if spk is not None:
                waiting = session.scalar(
                    select(func.count()).where(
                        Result.batch_id == batch_id, same, Result.status == "pending", Result.features.is_(None)
                    )
                )
                if waiting:
                    continue  # the last chunk with this speaker's files classifies them all
            q = select(Result.id, Result.features).where(
                Result.batch_id == batch_id, same, Result.features.is_not(None), Result.status != "failed"
            )
            if spk is None:
                q = q.where(Result.status == "pending")
            found = session.execute(q.order_by(Result.id)).all()
            if not found:
                continue
            X = np.vstack([np.frombuffer(f, dtype="<f4") for _, f in found])
            proba, modes = bundle.predict_proba_speakers(X, [spk] * len(found), mode=mode)  # type: ignore[attr-defined]
            now = utcnow()
            fields = label_fields(bundle, X, proba, modes)
            for (rid, _), f, mode in zip(found, fields, modes, strict=True):
                session.execute(
                    update(Result)
                    .where(Result.id == rid)
                    .values(status="done", analysis_mode=mode, finished_at=now, updated_at=now, **f)
                )
            n_classified += len(found)
            finalise_batch(session, batch_id)  # the batch's last rows: final in the same transaction
    return n_classified
