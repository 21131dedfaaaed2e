"""Classifying files and writing their rows: the one code path of embedded mode and the Celery task.

:func:`process_paths` is what the ``ser.classify`` Celery task wraps and what every process of
embedded ``ser-batch submit`` calls. A file that cannot be labelled becomes a ``failed`` row with a
one-line reason; it never stops the rest of the chunk. Rows are upserted on (batch_id, path), so
running the same chunk twice leaves the same rows.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from worker.db import PROB_COLUMNS, get_engine, upsert_results, utcnow
from worker.registry import LoadedModel, load_model
from worker.settings import Settings, get_settings

PASSTHROUGH: tuple[type[BaseException], ...] = ()
"""Exceptions :func:`analyse_file` must not turn into a failed row (set by the Celery app: time limits)."""


def _sha256_and_size(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def analyse_file(path: str, model: LoadedModel, settings: Settings | None = None) -> dict[str, Any]:
    """Decode, featurise and classify one file; never raises for bad input.

    Args:
        path: audio file path as stored in the batch.
        model: the loaded model (see :func:`worker.registry.load_model`).
        settings: limits (max duration, max bytes); default the settings in force.

    Returns:
        A ``results`` row (without ``batch_id``): ``status`` ``"done"`` with emotion, confidence and
        probabilities, or ``"failed"`` with ``error`` (one line). File facts (size, SHA-256, sample
        rate, channels, duration) are filled in as far as they could be read.
    """
    from ser_model.audio import AudioError, load_audio, probe_audio
    from ser_model.features import extract_features

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
        **dict.fromkeys(PROB_COLUMNS),
    }
    try:
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
        info = probe_audio(path)
        row.update(duration_s=info.duration_s, sample_rate=info.sample_rate, channels=info.channels)
        y, _ = load_audio(path, max_duration_s=s.max_duration_s, info=info)
        x = extract_features(y)
        bundle = model.bundle
        proba = bundle.predict_proba(x[None, :])[0]  # type: ignore[attr-defined]
        labels: list[str] = list(bundle.labels)  # type: ignore[attr-defined]
        probs = {lab: float(p) for lab, p in zip(labels, proba, strict=True)}
        best = max(probs, key=probs.__getitem__)
        row.update(status="done", emotion=best, confidence=probs[best], probabilities=probs)
        for lab, p in probs.items():
            if f"p_{lab}" in PROB_COLUMNS:
                row[f"p_{lab}"] = p
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


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found (moved or deleted after submit, or a broken symlink)"
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == 40:  # ELOOP
        return "symlink loop"
    return f"cannot read file: {e.strerror or e}"


def store_rows(batch_id: int, rows: Sequence[dict[str, Any]], *, url: str | None = None) -> None:
    """Upsert analysed rows of one batch in one short transaction."""
    full = [{**r, "batch_id": batch_id} for r in rows]
    with Session(get_engine(url)) as session, session.begin():
        upsert_results(session, full)


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
    rows: list[dict[str, Any]] = []
    try:
        for p in paths:
            rows.append(analyse_file(p, model))
    except PASSTHROUGH:
        store_rows(batch_id, rows, url=url)  # keep the files finished before a time limit hit
        raise
    store_rows(batch_id, rows, url=url)
    done = sum(r["status"] == "done" for r in rows)
    return {"done": done, "failed": len(rows) - done}
