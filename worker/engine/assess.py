"""Batch-level trust and summaries: counts of flagged rows, the warnings stored on a finished batch,
and the batch's arousal and valence.

Read by ``submit`` (summary), ``status`` (table and JSON) and whoever finalises a batch, in embedded
and distributed mode alike. Needs only the database: the model's training label prior comes from the
``models`` table (``metrics["trust"]["train_prior"]``), so no bundle is unpickled here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.storage.db import Batch, ModelVersion, Result


def trust_counts(session: Session, batch_id: int) -> dict[str, int]:
    """Labelled rows of a batch flagged ``low_confidence`` and ``out_of_domain``.

    Returns:
        ``{"low_confidence": n, "out_of_domain": n}`` over rows with status ``done``.
    """
    low, ood = session.execute(
        select(
            func.count().filter(Result.low_confidence.is_(True)),
            func.count().filter(Result.out_of_domain.is_(True)),
        ).where(Result.batch_id == batch_id, Result.status == "done")
    ).one()
    return {"low_confidence": int(low), "out_of_domain": int(ood)}


DIMENSION_KEYS = ("n", "arousal_mean", "valence_mean", "high_arousal_share", "positive_valence_share")
"""Keys of :func:`dimension_summary`."""


def dimension_summary(session: Session, batch_id: int, *, per_channel: bool = False) -> Any:
    """Mean arousal and valence of a batch's labelled rows, and the share high / positive (above 0.5).

    One SQL aggregate (``avg``, ``count ... FILTER``) over the ``done`` rows that have both
    dimensions: rows labelled before migration 0009, or by a model whose labels have no position,
    are left out (``n`` counts the rows used). Out-of-domain rows are kept: the dimensions are what
    carries across recordings unlike the training data. A row of a segmented file holds the
    duration-weighted mean of its segments, and every row weighs the same here.

    Args:
        session: open session.
        batch_id: the batch.
        per_channel: one summary per ``(channel, role)`` (``--channels split``; channel None for
            mono files) instead of one for the batch.

    Returns:
        ``{"n", "arousal_mean", "valence_mean", "high_arousal_share", "positive_valence_share"}``
        (means in [0, 1], shares of ``n``; all but ``n`` None when ``n`` is 0); with
        ``per_channel`` a dict ``{(channel, role): summary}``.
    """
    both = (Result.arousal.is_not(None), Result.valence.is_not(None))
    cols = (
        func.count(),
        func.avg(Result.arousal),
        func.avg(Result.valence),
        func.count().filter(Result.arousal > 0.5),
        func.count().filter(Result.valence > 0.5),
    )
    where = (Result.batch_id == batch_id, Result.status == "done", *both)
    if not per_channel:
        return _dimension_record(*session.execute(select(*cols).where(*where)).one())
    q = select(Result.channel, Result.role, *cols).where(*where).group_by(Result.channel, Result.role)
    return {(ch, role): _dimension_record(*rest) for ch, role, *rest in session.execute(q)}


def no_dimensions() -> dict[str, Any]:
    """The :func:`dimension_summary` of no rows: ``n`` 0, every other key None."""
    return dict.fromkeys(DIMENSION_KEYS) | {"n": 0}


def _dimension_record(n: Any, arousal: Any, valence: Any, high: Any, positive: Any) -> dict[str, Any]:
    n = int(n or 0)
    if not n:
        return no_dimensions()
    return {
        "n": n,
        "arousal_mean": float(arousal),
        "valence_mean": float(valence),
        "high_arousal_share": int(high) / n,
        "positive_valence_share": int(positive) / n,
    }


def assess_batch(session: Session, batch_id: int, *, store: bool = True) -> list[dict[str, Any]]:
    """Compute the warnings of a batch from its labelled rows and store them on ``batches.warnings``.

    Uses :func:`ser_model.trust.batch_warnings` with the label prior of the model that labelled most
    rows. Call it inside the caller's transaction when the batch is final; calling it again gives the
    same warnings.

    Args:
        session: open session (inside a transaction when ``store``).
        batch_id: the batch.
        store: write the warnings to the batch row.

    Returns:
        The warnings (possibly empty).
    """
    from ser_model.trust import batch_warnings

    done = (Result.batch_id == batch_id, Result.status == "done")
    # aggregates, not rows: a batch can hold millions
    labels: Counter[str] = Counter()
    n_labelled = n_out_of_domain = 0
    for emotion, n, n_ood in session.execute(
        select(Result.emotion, func.count(), func.count().filter(Result.out_of_domain.is_(True)))
        .where(*done)
        .group_by(Result.emotion)
    ):
        n_labelled += n
        n_out_of_domain += n_ood
        if emotion is not None:
            labels[emotion] += n
    top = session.execute(
        select(Result.model_version)
        .where(*done, Result.model_version.is_not(None))
        .group_by(Result.model_version)
        .order_by(func.count().desc(), Result.model_version)
        .limit(1)
    ).scalar()
    prior: dict[str, float] = {}
    if top is not None:
        mv = session.get(ModelVersion, top)
        prior = dict(((mv.metrics or {}).get("trust") or {}).get("train_prior") or {}) if mv is not None else {}
    if not prior:  # unknown prior (an old model): assume a uniform one over the labels seen
        prior = {lab: 1.0 / max(len(labels), 1) for lab in labels}
    warnings = batch_warnings(
        n_labelled=n_labelled,
        n_out_of_domain=n_out_of_domain,
        label_counts=dict(labels),
        train_prior=prior,
    )
    if store:
        batch = session.get(Batch, batch_id)
        if batch is not None:
            batch.warnings = warnings
    return warnings
