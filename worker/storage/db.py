"""Database schema (SQLAlchemy 2.0 typed ORM), engine and sessions.

The schema is created and changed only by Alembic migrations (``migrations/``); nothing here calls
``create_all``. SQLite (embedded default) runs in WAL mode with a busy timeout so that several
worker processes can write; PostgreSQL is the deployment database.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ser_model.labels import EMOTIONS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUSES = ("pending", "done", "failed")
BATCH_STATUSES = ("pending", "running", "done", "done_with_failures", "failed")
"""``done``: every row done; ``done_with_failures``: no row pending, some failed (set by
:func:`worker.engine.finalise.finalise_batch` in the transaction that writes the last row)."""
FINAL_BATCH_STATUSES = ("done", "done_with_failures", "failed")
PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LabelColumns:
    """The label of a file or segment: emotion, confidence, ``p_<emotion>`` for the eight RAVDESS
    emotions (queryable in plain SQL), every label's probability as JSON (any label set), the trust
    flags, and the two dimensions ``arousal`` and ``valence``."""

    emotion: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    p_neutral: Mapped[float | None] = mapped_column(Float)
    p_calm: Mapped[float | None] = mapped_column(Float)
    p_happy: Mapped[float | None] = mapped_column(Float)
    p_sad: Mapped[float | None] = mapped_column(Float)
    p_angry: Mapped[float | None] = mapped_column(Float)
    p_fearful: Mapped[float | None] = mapped_column(Float)
    p_disgust: Mapped[float | None] = mapped_column(Float)
    p_surprised: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    # trust flags (see ser_model.trust): distance of the features from the training data, whether it
    # is past the model's out-of-domain threshold, and whether the calibrated confidence is below the
    # model's low-confidence threshold (the label is still given)
    ood_score: Mapped[float | None] = mapped_column(Float)
    out_of_domain: Mapped[bool | None] = mapped_column(Boolean)
    low_confidence: Mapped[bool | None] = mapped_column(Boolean)
    # how activated and how positive it sounds, each in [0, 1] with 0.5 the neutral point
    # (ser_model.dimensions; ModelBundle.dimensions); NULL for rows labelled before migration 0009, for
    # failed rows, and for models whose labels have no arousal/valence position
    arousal: Mapped[float | None] = mapped_column(Float)
    valence: Mapped[float | None] = mapped_column(Float)


class Batch(Base):
    """One `ser-batch submit`: what was submitted and how it ended."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_paths: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    mode: Mapped[str] = mapped_column(String(16), default="embedded")  # embedded | distributed
    n_files: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_ignored: Mapped[int] = mapped_column(Integer, default=0)  # non-audio files seen while walking
    # labelled rows flagged low_confidence / out_of_domain, kept with n_done and n_failed by the finaliser
    # (worker.engine.finalise) so that `status` of a final batch reads no result row; None until final
    n_low_confidence: Mapped[int | None] = mapped_column(Integer)
    n_out_of_domain: Mapped[int | None] = mapped_column(Integer)
    dimensions: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # dimension_summary, kept when final
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # warnings a user should act on (many files out of domain, labels collapsed onto one emotion),
    # a list of {"code": ..., "message": ...}; None until the batch has been assessed
    warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (CheckConstraint(f"status IN {BATCH_STATUSES}", name="status"),)


class Result(LabelColumns, Base):
    """One row per submitted file: its label and probabilities, or why it failed."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(128))
    processing_ms: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # how the label was reached: "utterance" (whole file), "segments" (aggregate of segment rows),
    # "speaker-adaptive" (features normalised by the speaker's own statistics)
    analysis_mode: Mapped[str | None] = mapped_column(String(32))
    n_segments: Mapped[int | None] = mapped_column(Integer)
    speaker: Mapped[str | None] = mapped_column(String(256))
    # float32 feature vector of a speaker-adaptive batch, kept between the featurise and the
    # classify step (a speaker is classified once all of its files have features)
    features: Mapped[bytes | None] = mapped_column(LargeBinary)
    # lease of a pending row: the process working on it and until when (renewed by its heartbeat);
    # a row whose lease expired is requeued by the sweeper (worker/celery_app/sweeper.py)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # ``submit --channels split``: the 0-based channel this row labels (NULL: the whole file, mixed to
    # mono, as every row of a ``mix`` batch and every mono file) and its role (``--channel-names``)
    channel: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # one row per (batch, file, channel); NULL channel (a mixed file) counts as -1 so that two
        # mixed rows of one file conflict (NULLs are distinct in a plain UNIQUE on both databases)
        Index("uq_results_batch_path_channel", "batch_id", "path", text("coalesce(channel, -1)"), unique=True),
        CheckConstraint(f"status IN {STATUSES}", name="status"),
        # what `status` counts of a batch still running (worker.storage.db.batch_summary), read from the
        # index alone: per status the rows, the flagged rows and the last finish time
        Index("ix_results_batch_progress", "batch_id", "status", "low_confidence", "out_of_domain", "finished_at"),
        Index("ix_results_emotion", "emotion"),
        Index("ix_results_batch_speaker", "batch_id", "speaker"),
        # the pending rows only (small however many finished rows are kept): the sweeper's lease
        # queries and the keyset pages of worker.engine.rows.pending_path_pages
        Index(
            "ix_results_pending",
            "batch_id",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )


class ModelVersion(Base):
    """A registered model bundle; exactly one row is active."""

    __tablename__ = "models"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    labels: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checksum: Mapped[str] = mapped_column(String(64))
    feature_version: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(Text)  # "package:default" or "db"
    bundle: Mapped[bytes | None] = mapped_column(LargeBinary)


class Segment(LabelColumns, Base):
    """One segment of a long recording: its span and label; the file's row holds the aggregate."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    channel: Mapped[int | None] = mapped_column(Integer)  # the result row's channel (NULL: mixed)

    __table_args__ = (UniqueConstraint("result_id", "idx", name="uq_segments_result_idx"),)


class BatchWebhook(Base):
    """The webhook URL of a batch (it may hold a token): kept out of ``batches``, which query-only roles read."""

    __tablename__ = "batch_webhooks"

    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)


class Job(Base):
    """A training or evaluation job and its progress, written by whoever runs it (CLI or worker)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | evaluate
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done | failed
    stage: Mapped[str | None] = mapped_column(String(64))
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


_engines: dict[tuple[str, int], Engine] = {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, far fewer fsyncs
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")  # wait up to 30 s for another process' write lock
    cur.close()


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: settings), one per URL and process.

    After ``fork`` a new process gets its own engine (keyed by PID), so pooled connections are never
    shared between processes. For SQLite files the parent folder is created and WAL mode, a 30 s busy
    timeout and foreign keys are switched on for every connection.
    """
    if url is None:
        from worker.settings import get_settings

        url = get_settings().database_url
    key = (url, os.getpid())
    eng = _engines.get(key)
    if eng is None:
        u = make_url(url)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if u.get_backend_name() == "sqlite":
            # with uri=true, sqlite3 reads a "file:..." database as a URI, not a path: its "folder" would be ./file:
            db = u.database or ""
            is_uri = str(u.query.get("uri", "")).lower() in ("true", "1") and db.startswith("file:")
            if db and db != ":memory:" and not is_uri:
                os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        eng = create_engine(url, **kwargs)
        if u.get_backend_name() == "sqlite":
            event.listen(eng, "connect", _sqlite_pragmas)
        _engines[key] = eng
    return eng


def dispose_engines() -> None:
    """Forget engines inherited from a parent process (call right after fork)."""
    for eng in list(_engines.values()):
        eng.dispose(close=False)
    _engines.clear()


def close_engines() -> None:
    """Close this process' pooled connections (before the interpreter exits; SQLite checkpoints its WAL)."""
    for key in [k for k in _engines if k[1] == os.getpid()]:
        _engines.pop(key).dispose()


def _upsert_insert(session: Session) -> Any:
    """The dialect's ``insert`` that has ``on_conflict_do_update/do_nothing`` (SQLite or PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database {dialect}")
    return insert


# Upsert statements built once per (dialect, set of row keys) and reused: SQLAlchemy memoises a
# statement object's cache key, so the compiled SQL comes from the engine's compiled cache and a
# chunk costs one executemany with bound parameters instead of building and compiling a multi-row
# INSERT for every chunk (about 1 ms per file before, see benchmarks/results/throughput.md).
_STATEMENTS: dict[tuple[str, str, frozenset[str]], Any] = {}
_KEY = ("batch_id", "path", "channel")  # the unique key of results (uq_results_batch_path_channel)


def _key_elements() -> list[Any]:
    """The conflict target of results upserts: the expressions of ``uq_results_batch_path_channel``."""
    c = Result.__table__.c  # -1 as a literal: a bound parameter would not match the index expression
    return [c.batch_id, c.path, func.coalesce(c.channel, literal_column("-1"))]


def _results_upsert(session: Session, keys: frozenset[str]) -> Any:
    """``INSERT INTO results (keys) ... ON CONFLICT (batch_id, path, coalesce(channel, -1)) DO UPDATE SET``.

    Every given key but the conflict key is set.

    The SET list is built from the row keys, so new :class:`Result` columns need no change here;
    ``created_at`` (and ``id``) are never overwritten.
    """
    dialect = session.get_bind().dialect.name
    cache_key = ("upsert", dialect, keys)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        table = Result.__table__
        unknown = keys - set(table.c.keys())
        if unknown:
            raise ValueError(f"not columns of results: {sorted(unknown)}")
        ins = _upsert_insert(session)(table)
        update = {k: ins.excluded[k] for k in sorted(keys - {*_KEY, "id", "created_at"})}
        stmt = ins.on_conflict_do_update(index_elements=_key_elements(), set_=update)
        _STATEMENTS[cache_key] = stmt
    return stmt


def upsert_results(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update result rows on the unique key (batch_id, path, channel).

    A redelivered task therefore rewrites its own row instead of adding one. A row without a
    ``channel`` key (or with None) is the file's mixed row. Works on SQLite and PostgreSQL
    (``INSERT ... ON CONFLICT (batch_id, path, coalesce(channel, -1)) DO UPDATE``): one statement per set of
    row keys, built and compiled once per process, executed with the rows as bound parameters
    (DBAPI ``executemany``; pipelined by psycopg 3). ``updated_at`` is set to the same time in every
    row of the call unless the rows carry it.

    Args:
        session: open session inside a transaction.
        rows: dicts with ``batch_id`` and ``path`` (and ``channel`` for a row of one channel of a
            file) and any other :class:`Result` columns; all rows must carry the same keys.

    Raises:
        ValueError: the rows do not all carry the same keys, or a key is not a column of ``results``.
    """
    if not rows:
        return
    keys = frozenset(rows[0])
    if any(len(r) != len(keys) or r.keys() != keys for r in rows):
        raise ValueError("upsert_results needs the same keys in every row")
    if "updated_at" not in keys:
        now = utcnow()
        rows = [{**r, "updated_at": now} for r in rows]
        keys = keys | {"updated_at"}
    session.connection().execute(_results_upsert(session, keys), list(rows))


def replace_segments(session: Session, batch_id: int, segments_by_path: dict[Any, list[dict[str, Any]]]) -> None:
    """Replace the ``segments`` rows of the given files (or channels of files) of a batch.

    Args:
        session: open session inside a transaction (the result rows must exist).
        batch_id: the batch.
        segments_by_path: ``{path or (path, channel): [{"index", "start_s", "end_s", "emotion",
            "confidence", "probabilities", "ood_score", "out_of_domain", "low_confidence", "arousal",
            "valence"}]}`` as produced by :func:`ser_model.segment.classify_segments` (the flags and the
            dimensions may be missing: NULL).
            A plain path key, or channel None, means the file's mixed row.
    """
    wanted = {(k, None) if isinstance(k, str) else (k[0], k[1]): v for k, v in segments_by_path.items()}
    paths = sorted({p for p, _ in wanted})
    ids = {
        (p, ch): rid
        for p, ch, rid in session.execute(
            select(Result.path, Result.channel, Result.id).where(Result.batch_id == batch_id, Result.path.in_(paths))
        ).all()
        if (p, ch) in wanted
    }
    if not ids:
        return
    session.execute(delete(Segment).where(Segment.result_id.in_(list(ids.values()))))
    new = []
    for key, segs in wanted.items():
        if key not in ids:
            continue
        for sg in segs:
            probs = sg.get("probabilities") or {}
            new.append(
                {
                    "result_id": ids[key],
                    "idx": sg["index"],
                    "start_s": sg["start_s"],
                    "end_s": sg["end_s"],
                    "channel": key[1],
                    "emotion": sg.get("emotion"),
                    "confidence": sg.get("confidence"),
                    "probabilities": probs,
                    "ood_score": sg.get("ood_score"),
                    "out_of_domain": sg.get("out_of_domain"),
                    "low_confidence": sg.get("low_confidence"),
                    "arousal": sg.get("arousal"),
                    "valence": sg.get("valence"),
                    **{f"p_{lab}": probs.get(lab) for lab in (c[2:] for c in PROB_COLUMNS)},
                }
            )
    for i in range(0, len(new), 500):
        session.execute(insert(Segment), new[i : i + 500])


def drop_mixed_rows(session: Session, batch_id: int, paths: Sequence[str]) -> int:
    """Delete the mixed (``channel IS NULL``) rows of ``paths``: they were replaced by per-channel rows.

    A ``--channels split`` batch starts with one pending row per file (the producer does not open
    files); the worker that splits a multi-channel file writes one row per channel and drops the
    file's pending row in the same transaction.

    Returns:
        Number of rows deleted.
    """
    if not paths:
        return 0
    res = session.execute(
        delete(Result).where(Result.batch_id == batch_id, Result.path.in_(list(paths)), Result.channel.is_(None))
    )
    return int(res.rowcount or 0)


def insert_pending(
    session: Session,
    batch_id: int,
    paths: Iterable[str],
    sizes: dict[str, int],
    speakers: dict[str, str | None] | None = None,
) -> None:
    """Insert ``pending`` rows for files not yet in the batch (existing rows are left alone).

    Args:
        session: open session inside a transaction.
        batch_id: the batch.
        paths: files of the batch.
        sizes: size in bytes per path, where known.
        speakers: speaker key per path for speaker-adaptive batches (see ``submit --speaker-from``).
    """
    dialect = session.get_bind().dialect.name
    stmt = _STATEMENTS.get(("pending", dialect, frozenset()))
    if stmt is None:
        stmt = _upsert_insert(session)(Result.__table__).on_conflict_do_nothing(index_elements=_key_elements())
        _STATEMENTS[("pending", dialect, frozenset())] = stmt
    spk = speakers or {}
    rows = [
        {"batch_id": batch_id, "path": p, "status": "pending", "size_bytes": sizes.get(p), "speaker": spk.get(p)}
        for p in paths
    ]
    conn = session.connection()
    for i in range(0, len(rows), 1000):  # one compiled statement, rows as bound parameters (executemany)
        conn.execute(stmt, rows[i : i + 1000])


def batch_counts(session: Session, batch_id: int) -> dict[str, int]:
    """``{"pending": n, "done": n, "failed": n, "total": n}`` counted from the results rows."""
    counts = dict.fromkeys(STATUSES, 0)
    q = select(Result.status, func.count()).where(Result.batch_id == batch_id).group_by(Result.status)
    for status, n in session.execute(q):
        counts[status] = n
    counts["total"] = sum(counts[s] for s in STATUSES)
    return counts


def batch_summary(session: Session, batch: Batch) -> dict[str, Any]:
    """What ``ser-batch status`` shows of a batch: counts, trust counts and when its last row finished.

    A final batch (``done``, ``done_with_failures``, ``failed``) with its counters stored by the
    finaliser and no pending row (one seek on the partial index ``ix_results_pending``) is answered from
    the batch row alone: no result row is read, however many the batch has (``benchmarks/scale.py``,
    ``status`` at 1M rows). Any other batch (running, or final but missing the counters or with rows
    pending again) is counted live in one ``GROUP BY status`` over its entries of the covering index
    ``ix_results_batch_progress`` (no table row is read).

    Args:
        session: an open session.
        batch: the batch row.

    Returns:
        ``{"pending", "done", "failed", "total", "low_confidence", "out_of_domain": int,
        "last_finished_at": datetime or None, "stored": bool}`` (``stored``: read from the batch row).
    """
    final = batch.status in FINAL_BATCH_STATUSES and None not in (batch.n_low_confidence, batch.n_out_of_domain)
    if (
        final
        and session.scalar(select(Result.id).where(Result.batch_id == batch.id, Result.status == "pending").limit(1))
        is None
    ):
        return {
            "pending": 0,
            "done": batch.n_done,
            "failed": batch.n_failed,
            "total": batch.n_done + batch.n_failed,
            "low_confidence": batch.n_low_confidence,
            "out_of_domain": batch.n_out_of_domain,
            "last_finished_at": batch.finished_at,
            "stored": True,
        }
    out: dict[str, Any] = dict.fromkeys(STATUSES, 0)
    out.update(low_confidence=0, out_of_domain=0, last_finished_at=None, stored=False)
    q = (
        select(
            Result.status,
            func.count(),
            func.count().filter(Result.low_confidence.is_(True)),
            func.count().filter(Result.out_of_domain.is_(True)),
            func.max(Result.finished_at),
        )
        .where(Result.batch_id == batch.id)
        .group_by(Result.status)
    )
    for status, n, n_low, n_ood, last in session.execute(q):
        out[status] = n
        if status == "done":  # flags are counted over labelled rows, as trust_counts does
            out["low_confidence"], out["out_of_domain"] = n_low, n_ood
        if status != "pending" and last is not None:
            out["last_finished_at"] = last if out["last_finished_at"] is None else max(out["last_finished_at"], last)
    out["total"] = sum(out[s] for s in STATUSES)
    return out
