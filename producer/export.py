"""Streamed exports of result and segment rows: read in pages, written as they come.

A batch can hold millions of rows, so nothing here holds more than one page of them: the rows are
read with SQLAlchemy's ``yield_per`` (``stream_results``: a server-side cursor on PostgreSQL, the
sqlite3 cursor's own stepping on SQLite) and each page is written out before the next is fetched.
Memory is constant in the row count (see ``benchmarks/results/scale.md``).

The export columns come from :data:`producer.tables.RESULT_COLUMNS` and
:data:`producer.tables.SEGMENT_COLUMNS` (one place): a column of ``results`` (or ``segments``) named
there is selected, converted and written with no other change here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from producer.tables import RESULT_COLUMNS, SEGMENT_COLUMNS

PAGE_ROWS = 5000
"""Rows fetched from the database per page (the most an export holds at once)."""

TABLE_MAX_ROWS = 1000
"""Rows a ``results`` table view shows at most; beyond it a hint names the streamed formats."""

ROUNDED = {"start_s": 3, "end_s": 3}
"""Segment columns written rounded (decimals)."""


def model_labels(conn: Any, where: Sequence[Any]) -> list[str]:
    """The labels of the ``p_<label>`` columns: the eight RAVDESS emotions, then any other label.

    Other labels are those of the rows' models (:func:`row_labels`). Nothing is held per row.

    Args:
        conn: an open SQLAlchemy connection.
        where: conditions on :class:`worker.storage.db.Result` selecting the exported rows.

    Returns:
        Label names, :data:`ser_model.labels.EMOTIONS` first.
    """
    from ser_model.labels import EMOTIONS

    labels = list(EMOTIONS)
    return labels + [lab for lab in row_labels(conn, where) if lab not in labels]


def row_labels(conn: Any, where: Sequence[Any]) -> list[str]:
    """The label sets of the models that labelled the selected rows, in the models' order.

    Those of the registered models (one ``SELECT DISTINCT model_version`` and a lookup per version),
    plus the probability keys of selected rows whose model is not registered (a JSON scan of those
    rows only).

    Args:
        conn: an open SQLAlchemy connection.
        where: conditions on :class:`worker.storage.db.Result` selecting the rows.

    Returns:
        Label names, each once; empty when no selected row names a model or holds probabilities.
    """
    from sqlalchemy import or_, select

    from worker.storage.db import ModelVersion, Result

    labels: list[str] = []
    versions = [v for v in conn.scalars(select(Result.model_version).where(*where).distinct()) if v is not None]
    registered: set[str] = set()
    for version, labs in conn.execute(select(ModelVersion.version, ModelVersion.labels)):
        if version in versions:
            registered.add(version)
            labels += [lab for lab in labs or [] if lab not in labels]
    unknown = [v for v in versions if v not in registered]
    cond = or_(Result.model_version.in_(unknown), Result.model_version.is_(None))
    for keys in _json_keys(conn, [*where, cond, Result.probabilities.is_not(None)]):
        labels += [k for k in keys if k not in labels]
    return labels


def emotion_choices(conn: Any, where: Sequence[Any]) -> list[str]:
    """The labels ``results --emotion`` accepts: those of the selected rows' models (:func:`row_labels`).

    When no selected row was labelled yet: the active model's labels, else the eight RAVDESS emotions.

    Args:
        conn: an open SQLAlchemy connection.
        where: conditions selecting the rows (batch, status).

    Returns:
        Label names, in the models' order.
    """
    from sqlalchemy import select

    from ser_model.labels import EMOTIONS
    from worker.storage.db import ModelVersion

    found = row_labels(conn, where)
    if found:
        return found
    active = conn.scalar(select(ModelVersion.labels).where(ModelVersion.active.is_(True)))
    return list(active or EMOTIONS)


def _json_keys(conn: Any, where: Sequence[Any]) -> Iterator[list[str]]:
    """The distinct probability keys of the rows matching ``where`` (read in pages)."""
    from sqlalchemy import select

    from worker.storage.db import Result

    res = conn.execution_options(yield_per=PAGE_ROWS).execute(select(Result.probabilities).where(*where))
    seen: set[str] = set()
    for (probs,) in res:
        new = [k for k in probs or {} if k not in seen]
        if new:
            seen.update(new)
            yield new


def result_where(
    *,
    batch: int | None = None,
    status: str | None = None,
    emotion: str | None = None,
    confident: bool = False,
    segments: bool = False,
) -> list[Any]:
    """The conditions of a ``results`` export (on ``results``, or on ``segments`` with ``segments``)."""
    from worker.storage.db import Result, Segment

    where: list[Any] = []
    if batch is not None:
        where.append(Result.batch_id == batch)
    if status is not None:
        where.append(Result.status == status)
    labelled = Segment if segments else Result
    if emotion:
        where.append(labelled.emotion == emotion.lower())
    if confident:
        where.append(labelled.low_confidence.is_not(True))  # NULL (not flagged) stays
    return where


def _segment_column(name: str) -> Any:
    from worker.storage.db import Result, Segment

    special = {"batch_id": Result.batch_id, "path": Result.path, "index": Segment.idx}
    return special[name] if name in special else Segment.__table__.c[name]


def export_query(
    where: Sequence[Any], labels: Sequence[str], *, segments: bool = False, limit: int | None = None
) -> tuple[list[str], Any]:
    """The header and the SELECT of an export, in row order (batch, file, segment).

    Args:
        where: conditions from :func:`result_where`.
        labels: labels of the ``p_<label>`` columns (:func:`model_labels`).
        segments: one row per segment instead of per file.
        limit: at most this many rows.

    Returns:
        ``(columns, statement)``: the statement selects the export columns in order, then the
        ``probabilities`` JSON (expanded into ``p_<label>`` by :func:`export_rows`).
    """
    from sqlalchemy import select

    from worker.storage.db import Result, Segment

    if segments:
        cols = [_segment_column(c) for c in SEGMENT_COLUMNS]
        q = select(*cols, Segment.probabilities).join(Result, Segment.result_id == Result.id)
        q = q.order_by(Result.batch_id, Result.id, Segment.idx)
        names = SEGMENT_COLUMNS
    else:
        table = Result.__table__
        q = select(*(table.c[c] for c in RESULT_COLUMNS), Result.probabilities)
        q = q.order_by(Result.batch_id, Result.id)
        names = RESULT_COLUMNS
    q = q.where(*where)
    if limit:
        q = q.limit(limit)
    return [*names, *(f"p_{lab}" for lab in labels)], q


def export_rows(conn: Any, query: Any, labels: Sequence[str], *, page_rows: int = PAGE_ROWS) -> Iterator[tuple]:
    """The rows of an export statement as tuples in header order, fetched ``page_rows`` at a time.

    Date-times are written as ISO 8601, ``start_s``/``end_s`` rounded to milliseconds, and the
    ``probabilities`` JSON expanded into one value per label (None where the row has none).

    Args:
        conn: an open SQLAlchemy connection (kept open while the iterator is consumed).
        query: from :func:`export_query`.
        labels: the same labels as given to :func:`export_query`.
        page_rows: rows per fetch; the iterator never holds more than one page.

    Yields:
        One tuple per row.
    """
    from sqlalchemy import DateTime

    cols = list(query.selected_columns)[:-1]
    dates = [i for i, c in enumerate(cols) if isinstance(c.type, DateTime)]
    rounded = [(i, ROUNDED[c.key]) for i, c in enumerate(cols) if c.key in ROUNDED and c.table.name == "segments"]
    n = len(cols)
    labels = list(labels)
    result = conn.execution_options(yield_per=page_rows).execute(query)
    for page in result.partitions():
        for row in page:
            if dates or rounded:
                vals = list(row[:n])
                for i in dates:
                    if isinstance(vals[i], datetime):
                        vals[i] = vals[i].isoformat()
                for i, nd in rounded:
                    if vals[i] is not None:
                        vals[i] = round(vals[i], nd)
            else:
                vals = list(row[:n])
            probs = row[n] or {}
            vals += [probs.get(lab) for lab in labels]
            yield tuple(vals)


class JsonArrayWriter:
    """Writes records as one JSON array, an object per line, without holding them."""

    def __init__(self, fh: TextIO) -> None:
        self.fh, self.n = fh, 0

    def write(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        fh, dumps = self.fh, json.dumps
        fh.write("[")
        for row in rows:
            fh.write(("\n" if self.n == 0 else ",\n") + dumps(dict(zip(columns, row, strict=True)), default=str))
            self.n += 1
        fh.write("\n]\n" if self.n else "]\n")
        return self.n


def write_stream(rows: Iterable[Sequence[Any]], columns: Sequence[str], fmt: str, fh: TextIO) -> int:
    """Write rows as they come as ``csv`` (header ``columns``), ``jsonl`` or a ``json`` array.

    Consumes ``rows`` once, lazily: each row is written before the next is asked for, so memory does
    not grow with the number of rows.

    Args:
        rows: value tuples in ``columns`` order (an iterator, e.g. :func:`export_rows`).
        columns: header / JSON keys.
        fmt: ``csv``, ``jsonl`` (one object per line) or ``json`` (one array).
        fh: text stream to write to (open CSV files with ``newline=""``).

    Returns:
        The number of rows written.

    Raises:
        ValueError: an unknown format.
    """
    n = 0
    if fmt == "csv":
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(row)
            n += 1
        return n
    if fmt == "jsonl":
        dumps = json.dumps
        for row in rows:
            fh.write(dumps(dict(zip(columns, row, strict=True)), default=str) + "\n")
            n += 1
        return n
    if fmt == "json":
        return JsonArrayWriter(fh).write(columns, rows)
    raise ValueError(f"unknown export format {fmt!r} (csv, jsonl, json)")


# ------------------------------------------------------------------------------------------ CSV by the database


def _csv_value(col: Any, dialect: str) -> Any:
    """SQL giving one export column as the Python writer would format it (None stays NULL).

    Booleans ``True``/``False``; date-times ISO 8601 as :meth:`datetime.isoformat` writes them;
    numbers in the database's own text form (SQLite: 15 significant digits, as ``sqlite3 -csv``
    writes them; PostgreSQL: the shortest exact form, as Python does); text quoted as CSV on SQLite
    (PostgreSQL's ``COPY`` quotes itself).
    """
    from sqlalchemy import Boolean, DateTime, Float, String, Text, case, cast, func, literal

    t = col.type
    if isinstance(t, Boolean):
        return case((col.is_(True), literal("True")), (col.is_(False), literal("False")))
    if isinstance(t, DateTime):
        if dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff'; isoformat drops zero microseconds
            txt = cast(col, Text)
            return func.replace(case((func.substr(txt, 20) == ".000000", func.substr(txt, 1, 19)), else_=txt), " ", "T")
        utc = func.timezone("UTC", col)
        us = func.to_char(utc, ".US")
        return (
            func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
            + case((us == ".000000", literal("")), else_=us)
            + literal("+00:00")
        )
    if dialect != "sqlite":
        if isinstance(t, Float):  # float8 prints 2 where Python prints 2.0 (and both 1e+16 past 1e15)
            return _pg_float_text(col)
        return cast(col, Text)
    if isinstance(t, String):  # quoted when it holds a comma, a double quote or a line break (as Python's csv)
        special = literal('*[,"') + func.char(10) + func.char(13) + literal("]*")
        return case((col.op("GLOB")(special), literal('"') + func.replace(col, '"', '""') + literal('"')), else_=col)
    return col


def _pg_float_text(value: Any) -> Any:
    """PostgreSQL: a float8 as Python's ``repr`` writes it (``2.0``, not ``2``; shortest digits otherwise)."""
    from sqlalchemy import Text, and_, case, cast, func, literal

    txt = cast(value, Text)
    whole = and_(value == func.trunc(value), func.abs(value) < 1e15)
    return case((whole, txt + literal(".0")), else_=txt)


def csv_query(query: Any, labels: Sequence[str], dialect: str) -> Any:
    """The export statement with every value formatted as CSV text by the database.

    The ``probabilities`` JSON becomes one column per label: the ``p_<emotion>`` column where the
    table has it (the worker writes both), else the JSON member. On SQLite each row is one CSV line
    made by a single ``printf`` (a NULL prints as nothing); on PostgreSQL the columns are text for
    ``COPY ... TO STDOUT``.
    """
    from sqlalchemy import Float, Numeric, cast, func

    from worker.storage.db import Result, Segment

    cols = list(query.selected_columns)
    probs = cols[-1]
    table = Segment.__table__ if probs.table is Segment.__table__ else Result.__table__
    values = []
    for c in cols[:-1]:
        if c.key in ROUNDED and c.table is Segment.__table__:
            if dialect == "postgresql":  # round(double precision, int) does not exist there
                c = cast(func.round(cast(c, Numeric), ROUNDED[c.key]), Float).label(c.key)  # noqa: PLW2901
            else:
                c = func.round(c, ROUNDED[c.key]).label(c.key)  # noqa: PLW2901
        values.append(_csv_value(c, dialect))
    for lab in labels:
        own = table.c.get(f"p_{lab}")
        member = probs[lab].as_float() if dialect == "postgresql" else func.json_extract(probs, f'$."{lab}"')
        value = func.coalesce(own, member) if own is not None else member
        values.append(_pg_float_text(value) if dialect == "postgresql" else value)
    if dialect == "sqlite":
        return query.with_only_columns(func.printf(",".join(["%s"] * len(values)), *values))
    return query.with_only_columns(*values)


def write_csv(
    conn: Any, query: Any, labels: Sequence[str], columns: Sequence[str], fh: TextIO, *, page_rows: int = PAGE_ROWS
) -> int:
    """Write an export as CSV with the values formatted by the database, in pages; returns the rows written.

    SQLite returns each row as one CSV line (:func:`csv_query`), read ``page_rows`` lines at a time;
    PostgreSQL streams ``COPY (SELECT ...) TO STDOUT WITH (FORMAT csv)`` as ``psql \\copy`` does.
    Either way no Python object is made per value, which keeps the export within a small factor of
    the database's own CSV dump (benchmarks/results/scale.md) and memory constant.

    Args:
        conn: an open SQLAlchemy connection.
        query: from :func:`export_query`.
        labels: the labels given to :func:`export_query`.
        columns: the header.
        fh: text stream to write to.
        page_rows: lines per fetch (SQLite).
    """
    csv.writer(fh, lineterminator="\n").writerow(columns)
    dialect = conn.dialect.name
    stmt = csv_query(query, labels, dialect)
    n = 0
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql.base import PGDialect

        sql = str(stmt.compile(dialect=PGDialect(), compile_kwargs={"literal_binds": True}))
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:
                for block in copy:
                    fh.write(bytes(block).decode("utf-8"))
            return max(cur.rowcount, 0)
    result = conn.execution_options(yield_per=page_rows).execute(stmt)
    for page in result.partitions():
        fh.write("\n".join([r[0] for r in page]) + "\n")
        n += len(page)
    return n
