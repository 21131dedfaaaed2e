"""A batch's rows in the database: store analysed rows, read the batch's options, classify ready groups.

What the chunk route (:func:`worker.engine.chunk.run_chunk`) writes and reads between analysing files:

* :func:`store_rows` upserts analysed rows (on batch, path, channel: a chunk run twice leaves the same
  rows), replaces their segments and finalises the batch in the same transaction when they were its
  last pending rows (:func:`worker.engine.finalise.finalise_batch`);
* :func:`classify_ready_speakers` is step two of batches labelled by group (``--speaker-from``,
  ``--normalise batch``): files were stored ``pending`` with their features, and a group is
  classified together once none of its files is still waiting;
* :func:`batch_options`, :func:`row_states`, :func:`row_counts`, :func:`pending_path_pages` read them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.engine.analyse import group_mode, label_fields
from worker.engine.finalise import finalise_batch
from worker.storage.db import Batch, Result, drop_mixed_rows, get_engine, replace_segments, upsert_results, utcnow
from worker.storage.registry import LoadedModel


def store_rows(batch_id: int, rows: Sequence[dict[str, Any]], *, url: str | None = None) -> None:
    """Upsert analysed rows of one batch, and replace their segments, in one short transaction.

    Rows with a ``segments`` list (from :func:`analyse_file` on a long recording) get their
    ``segments`` table rows rewritten, so a redelivered task leaves one set of segments per file.
    When these were the batch's last pending rows, the same transaction finalises the batch
    (:func:`worker.engine.finalise.finalise_batch`).
    """
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
    key = (url, os.getpid(), batch_id)
    if key not in _options_cache:
        with Session(get_engine(url)) as session:
            batch = session.get(Batch, batch_id)
            _options_cache[key] = dict(batch.options or {}) if batch is not None else {}
    return _options_cache[key]


def row_counts(batch_id: int, paths: Sequence[str], *, url: str | None = None) -> dict[str, int]:
    """``{"done": n, "failed": n}``: the final rows of ``paths`` in the batch (a split file counts per channel)."""
    out = {"done": 0, "failed": 0}
    with Session(get_engine(url)) as session:
        q = (
            select(Result.status, func.count())
            .where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.status != "pending")
            .group_by(Result.status)
        )
        for status, n in session.execute(q):
            out[status] = n
    return out


def row_states(batch_id: int, paths: Sequence[str], *, url: str | None = None) -> dict[str, str]:
    """``{path: status}`` of the rows of ``paths`` in the batch (one of them per split file)."""
    with Session(get_engine(url)) as s:
        q = select(Result.path, Result.status).where(Result.batch_id == batch_id, Result.path.in_(list(paths)))
        return dict(s.execute(q).all())


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
            fields = label_fields(bundle, X, proba, modes, [spk] * len(found))
            for (rid, _), f, mode in zip(found, fields, modes, strict=True):
                session.execute(
                    update(Result)
                    .where(Result.id == rid)
                    .values(status="done", analysis_mode=mode, finished_at=now, updated_at=now, **f)
                )
            n_classified += len(found)
            finalise_batch(session, batch_id)  # the batch's last rows: final in the same transaction
    return n_classified


def pending_path_pages(batch_id: int, *, url: str | None = None, page_rows: int = 10_000) -> Iterator[list[str]]:
    """Paths of the batch's ``pending`` rows in submission order, ``page_rows`` at a time.

    Keyset pages (``id > last id ... ORDER BY id LIMIT page_rows``, an index range on
    ``ix_results_pending``), each read in a short transaction of its own: a batch of millions of
    pending files is never held at once, and no read stays open while the caller's processes write
    the rows (on SQLite a long reader would keep the WAL from being checkpointed). Rows that stop
    being pending while the pages are read are simply not returned.
    """
    last = -1
    while True:
        with get_engine(url).connect() as conn:
            page = conn.execute(
                select(Result.id, Result.path)
                .where(Result.batch_id == batch_id, Result.status == "pending", Result.id > last)
                .order_by(Result.id)
                .limit(page_rows)
            ).all()
        if not page:
            return
        last = page[-1][0]
        yield [p for _, p in page]
        if len(page) < page_rows:
            return
