"""Reading a batch back in constant memory: exports stream pages, report and diff aggregate in SQL.

The streaming itself is checked (a writer consumes an iterator row by row; the rows fetched from the
database are never more than one page ahead of the rows written), not times: speed and peak memory
at 10k-1M rows are in benchmarks/scale.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_cli import no_traceback, run

EMOS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def make_batch(
    db: Path, n: int, *, batch_id: int | None = None, failed_every: int = 10, folders: int = 5, shift_every: int = 0
) -> int:
    """A finished batch of ``n`` rows written with SQL (as benchmarks/scale.py does at 1M rows).

    Row ``i`` is ``/data/f<i % folders>/file<i>.wav``; every ``failed_every``-th row failed, the
    others are done with emotion ``EMOS[i % 8]`` (``EMOS[(i + 1) % 8]`` for every ``shift_every``-th
    row) and confidence ``(i % 100) / 100``.
    """
    if not db.exists():
        assert run(["db", "upgrade"], db).returncode == 0
    con = sqlite3.connect(db)
    try:
        cur = con.execute(
            "INSERT INTO batches (created_at, source_paths, status, mode, n_files, n_done, n_failed, n_ignored, options)"
            " VALUES ('2026-01-01 00:00:00', '[\"/data\"]', 'done_with_failures', 'embedded', ?, 0, 0, 0, '{}')",
            (n,),
        )
        bid = batch_id or cur.lastrowid
        rows = []
        for i in range(n):
            failed = i % failed_every == 0
            emo = EMOS[(i + (1 if shift_every and i % shift_every == 0 else 0)) % 8]
            conf = (i % 100) / 100
            probs = json.dumps({e: (conf if e == emo else (1 - conf) / 7) for e in EMOS})
            rows.append(
                (
                    bid,
                    f"/data/f{i % folders}/file{i:07d}.wav",
                    "failed" if failed else "done",
                    None if failed else emo,
                    None if failed else conf,
                    None if failed else probs,
                    "cannot decode" if failed else None,
                    None if failed else "default-v1",
                    None if failed else bool(i % 3 == 0),
                    None if failed else bool(i % 7 == 0),
                    "2026-01-01 00:00:01",
                )
            )
        con.executemany(
            "INSERT INTO results (batch_id, path, status, emotion, confidence, probabilities, error, model_version,"
            " low_confidence, out_of_domain, finished_at, created_at, updated_at, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '2026-01-01', '2026-01-01', 1)",
            rows,
        )
        con.commit()
    finally:
        con.close()
    return bid


# ------------------------------------------------------------------------------------------ writers


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_writer_consumes_the_iterator_row_by_row(fmt):
    """Row i is in the output before row i + 1 is asked for: nothing is collected first."""
    from producer.export import write_stream

    out = io.StringIO()
    asked = []

    def rows():  # type: ignore[no-untyped-def]
        for i in range(50):
            if i:  # the previous row is already written
                assert f"/x/{i - 1}.wav" in out.getvalue(), f"row {i - 1} not written before row {i} was asked for"
            asked.append(i)
            yield (i, f"/x/{i}.wav", None, True)

    n = write_stream(rows(), ["id", "path", "emotion", "flag"], fmt, out)
    assert n == 50 and len(asked) == 50
    text = out.getvalue()
    if fmt == "csv":
        got = list(csv.DictReader(io.StringIO(text)))
        assert got[7] == {"id": "7", "path": "/x/7.wav", "emotion": "", "flag": "True"}
    elif fmt == "jsonl":
        got = [json.loads(line) for line in text.splitlines()]
        assert got[7] == {"id": 7, "path": "/x/7.wav", "emotion": None, "flag": True}
    else:
        got = json.loads(text)
        assert got[7] == {"id": 7, "path": "/x/7.wav", "emotion": None, "flag": True}
    assert len(got) == 50


def test_empty_json_array_and_unknown_format():
    from producer.export import write_stream

    out = io.StringIO()
    assert write_stream(iter(()), ["a"], "json", out) == 0
    assert json.loads(out.getvalue()) == []
    with pytest.raises(ValueError, match="unknown export format"):
        write_stream(iter(()), ["a"], "xml", io.StringIO())


class _CountingCursor(sqlite3.Cursor):
    fetched = 0

    def fetchone(self):  # type: ignore[no-untyped-def]
        row = super().fetchone()
        _CountingCursor.fetched += row is not None
        return row

    def fetchmany(self, size=None):  # type: ignore[no-untyped-def]
        rows = super().fetchmany(size) if size is not None else super().fetchmany()
        _CountingCursor.fetched += len(rows)
        return rows

    def fetchall(self):  # type: ignore[no-untyped-def]
        rows = super().fetchall()
        _CountingCursor.fetched += len(rows)
        return rows


class _CountingConnection(sqlite3.Connection):
    def cursor(self, factory=_CountingCursor):  # type: ignore[no-untyped-def,override]
        return super().cursor(factory)


@pytest.mark.parametrize(("segments", "by_db"), [(False, False), (True, False), (False, True), (True, True)])
def test_export_never_holds_more_than_one_page(tmp_path, segments, by_db):
    """Rows fetched from the database run at most one page ahead of the rows written out."""
    from sqlalchemy import create_engine

    from producer.export import export_query, export_rows, model_labels, result_where, write_csv, write_stream

    db = tmp_path / "ser.db"
    n = 2300
    bid = make_batch(db, n)
    if segments:  # two segments per done row
        con = sqlite3.connect(db)
        con.execute(
            "INSERT INTO segments (result_id, idx, start_s, end_s, emotion, confidence, probabilities)"
            " SELECT id, k.idx, k.idx * 2.0, k.idx * 2.0 + 2.0004, emotion, confidence, probabilities"
            " FROM results, (SELECT 0 AS idx UNION ALL SELECT 1) AS k WHERE status = 'done'"
        )
        con.commit()
        con.close()
        n = 2 * sum(1 for i in range(2300) if i % 10)
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(db, factory=_CountingConnection))
    page = 100
    lag: list[int] = []

    class Out(io.StringIO):
        written = 0

        def write(self, s: str) -> int:
            lag.append(_CountingCursor.fetched - self.written)
            self.written += s.count("\n")
            return super().write(s)

    out = Out()
    with engine.connect() as conn:
        where = result_where(batch=bid, segments=segments)
        labels = model_labels(conn, result_where(batch=bid))
        columns, q = export_query(where, labels, segments=segments)
        _CountingCursor.fetched = 0
        out.written = -1  # the header line
        if by_db:  # CSV lines made by the database (`results --format csv`)
            assert write_csv(conn, q, labels, columns, out, page_rows=page) == n
        else:
            assert write_stream(export_rows(conn, q, labels, page_rows=page), columns, "csv", out) == n
    assert _CountingCursor.fetched == n
    assert max(lag) <= page, f"{max(lag)} rows fetched ahead of the output (page {page})"
    got = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(got) == n
    if segments:
        assert got[0]["end_s"] == "2.0" and got[0]["index"] == "0" and got[1]["start_s"] == "2.0"


# ------------------------------------------------------------------------------------------ the command


def _csv(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_results_exports_every_row_in_every_format(tmp_path):
    db = tmp_path / "ser.db"
    n = 1234
    make_batch(db, n)
    c = run(["results", "--batch", "1", "--format", "csv"], db)
    no_traceback(c)
    assert c.returncode == 0, c.stderr
    got = _csv(c.stdout)
    assert len(got) == n
    assert [r["path"] for r in got] == [f"/data/f{i % 5}/file{i:07d}.wav" for i in range(n)]
    assert got[1]["emotion"] == "calm" and float(got[1]["p_calm"]) == pytest.approx(0.01)
    assert got[0]["status"] == "failed" and got[0]["error"] == "cannot decode" and got[0]["p_calm"] == ""
    assert got[1]["finished_at"] == "2026-01-01T00:00:01"
    lines = run(["results", "--batch", "1", "--format", "jsonl"], db).stdout.splitlines()
    assert len(lines) == n
    assert json.loads(lines[3])["emotion"] == "sad" and json.loads(lines[3])["low_confidence"] is True
    arr = json.loads(run(["results", "--batch", "1", "--format", "json", "--emotion", "sad"], db).stdout)
    assert len(arr) == sum(1 for i in range(n) if i % 10 and i % 8 == 3)
    assert {r["emotion"] for r in arr} == {"sad"}
    out = tmp_path / "out.csv"
    p = run(["results", "--batch", "1", "--format", "csv", "--confident", "-o", str(out)], db)
    assert p.returncode == 0 and f"wrote {sum(1 for i in range(n) if i % 10 == 0 or i % 3)} row(s)" in p.stderr
    assert _csv(out.read_text()) == [r for r in got if r["low_confidence"] != "True"]


def test_results_table_stops_at_a_bound_with_a_hint(tmp_path):
    from producer.export import TABLE_MAX_ROWS

    db = tmp_path / "ser.db"
    make_batch(db, TABLE_MAX_ROWS + 5)
    p = run(["results", "--batch", "1"], db)
    assert p.returncode == 0, p.stderr
    assert f"{TABLE_MAX_ROWS} row(s)" in p.stdout and f"only the first {TABLE_MAX_ROWS} rows" in p.stderr
    assert "--format jsonl" in p.stderr
    p = run(["results", "--batch", "1", "--limit", "3"], db)
    assert "3 row(s)" in p.stdout and "only the first" not in p.stderr


def test_labels_beyond_the_eight_emotions_come_from_the_model(tmp_path):
    """A model with its own label set: its labels are p_ columns although no row was read to find them."""
    db = tmp_path / "ser.db"
    make_batch(db, 20)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO models (version, created_at, labels, metrics, checksum, feature_version, active, source)"
        " VALUES ('bored-v1', '2026-01-01', '[\"bored\", \"angry\"]', '{}', 'x', 'f', 0, 'db')"
    )
    con.execute(
        "UPDATE results SET model_version = 'bored-v1', probabilities = '{\"bored\": 0.75, \"angry\": 0.25}'"
        " WHERE id = 2"
    )
    con.execute("UPDATE results SET model_version = 'gone-v0', probabilities = '{\"tired\": 1.0}' WHERE id = 3")
    con.execute("UPDATE results SET model_version = NULL, probabilities = '{\"sleepy\": 0.5}' WHERE id = 4")
    con.commit()
    con.close()
    got = _csv(run(["results", "--batch", "1", "--format", "csv"], db).stdout)
    assert list(got[0])[-3:] == ["p_bored", "p_tired", "p_sleepy"]  # after the eight emotions
    assert got[1]["p_bored"] == "0.75" and got[2]["p_tired"] == "1.0" and got[3]["p_sleepy"] == "0.5"
    assert got[4]["p_bored"] == ""


def test_csv_by_the_database_equals_the_python_writer(tmp_path):
    """Awkward values (commas, quotes, line breaks, microseconds, NULLs, flags, a model's own label)
    come out of `--format csv` (formatted by SQLite) as Python's csv module writes them."""
    from sqlalchemy import create_engine

    from producer.export import export_query, export_rows, model_labels, result_where, write_csv, write_stream

    db = tmp_path / "ser.db"
    make_batch(db, 30)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO models (version, created_at, labels, metrics, checksum, feature_version, active, source)"
        " VALUES ('own-v1', '2026-01-01', '[\"bored\"]', '{}', 'x', 'f', 0, 'db')"
    )
    con.execute(
        "UPDATE results SET path = '/data/a,b \"quoted\"' || char(10) || 'x.wav', error = 'bad, \"very\" bad',"
        " finished_at = '2026-01-01 00:00:01.250000', model_version = 'own-v1',"
        " probabilities = '{\"bored\": 0.125}' WHERE id = 2"
    )
    con.execute("UPDATE results SET p_sad = NULL WHERE id = 4")  # only in the JSON
    con.commit()
    con.close()
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        where = result_where(batch=1)
        labels = model_labels(conn, where)
        columns, q = export_query(where, labels)
        a, b = io.StringIO(), io.StringIO()
        write_csv(conn, q, labels, columns, a)
        write_stream(export_rows(conn, q, labels), columns, "csv", b)
    got, want = _csv(a.getvalue()), _csv(b.getvalue())
    assert len(got) == 30 and "p_bored" in got[0]
    assert got[1]["path"] == '/data/a,b "quoted"\nx.wav' and got[1]["finished_at"] == "2026-01-01T00:00:01.250000"
    assert got[3]["p_sad"] == want[3]["p_sad"] != ""
    for g, w in zip(got, want, strict=True):  # numbers: SQLite's 15 significant digits, as sqlite3 -csv
        for k in columns:
            if k.startswith("p_") or k in ("confidence",):
                assert (g[k] == w[k] == "") or float(g[k]) == pytest.approx(float(w[k]), rel=1e-14), k
            else:
                assert g[k] == w[k], k


# ------------------------------------------------------------------------------------------ report


def test_report_aggregates_in_sql_match_the_rows(tmp_path, monkeypatch):
    """Counts, histogram, median, folders and the capped failed list, checked against the rows themselves."""
    import statistics

    from sqlalchemy.orm import Session

    from producer import report
    from worker.storage.db import get_engine

    db = tmp_path / "ser.db"
    n = 997
    make_batch(db, n, folders=7)
    monkeypatch.setattr(report, "MAX_FAILED", 30)
    monkeypatch.setattr(report, "MAX_GROUPS", 5)
    with Session(get_engine(f"sqlite:///{db}")) as s:
        d = report.gather(s, 1)
    done = [i for i in range(n) if i % 10]
    conf = [(i % 100) / 100 for i in done]
    assert d.counts == {"pending": 0, "done": len(done), "failed": n - len(done), "total": n}
    assert dict((e, c) for e, c, _ in d.emotions) == {e: sum(1 for i in done if EMOS[i % 8] == e) for e in EMOS}
    assert sum(d.confidence_hist) == len(done) and len(d.confidence_hist) == report.CONFIDENCE_BINS
    assert d.confidence_hist[0] == sum(1 for c in conf if c < 0.05)
    assert d.confidence_hist[19] == sum(1 for c in conf if c >= 0.95)
    assert d.confidence_median == pytest.approx(statistics.median(conf))
    assert d.n_low_confidence == sum(1 for i in done if i % 3 == 0)
    assert d.n_out_of_domain == sum(1 for i in done if i % 7 == 0)
    assert len(d.failed) == 30 and d.n_failed_hidden == n - len(done) - 30
    assert d.failed[0] == ("/data/f0/file0000000.wav", "cannot decode")
    assert d.group_kind == "folder" and len(d.groups) == 5 and d.n_groups_hidden == 2
    f0 = next(g for g in d.groups if g["name"] == "data/f0")  # named from the parent of their common path
    rows0 = [i for i in range(n) if i % 7 == 0]
    assert f0["files"] == len(rows0) and f0["failed"] == sum(1 for i in rows0 if i % 10 == 0)
    c0 = [(i % 100) / 100 for i in rows0 if i % 10]
    assert f0["mean_confidence"] == pytest.approx(sum(c0) / len(c0))
    assert d.models == [
        {
            "version": "default-v1",
            "files": len(done),
            "metrics": {},
            "labels": [],
            "modes": [{"mode": "global", "files": len(done), "metrics": {}}],
        }
    ]


# ------------------------------------------------------------------------------------------ diff


def test_diff_summary_from_sql_and_changed_files_streamed(tmp_path):
    db = tmp_path / "ser.db"
    make_batch(db, 600)
    make_batch(db, 650, failed_every=15, shift_every=4)  # 50 more files, other failures, a quarter relabelled

    def label(i: int, failed_every: int, shift: int) -> str:
        return "(failed)" if i % failed_every == 0 else EMOS[(i + (1 if shift and i % shift == 0 else 0)) % 8]

    changed = [i for i in range(600) if label(i, 10, 0) != label(i, 15, 4)]
    j = run(["diff", "1", "2", "--format", "json"], db)
    no_traceback(j)
    assert j.returncode == 0, j.stderr
    d = json.loads(j.stdout)
    sm = d["summary"]
    assert (sm["files_a"], sm["files_b"], sm["compared"], sm["only_a"], sm["only_b"]) == (600, 650, 600, 0, 50)
    assert sm["changed"] == len(changed) == len(d["changed"]) and sm["unchanged"] == 600 - len(changed)
    assert [r["path"] for r in d["changed"]] == sorted(f"/data/f{i % 5}/file{i:07d}.wav" for i in changed)
    assert sm["transitions"]["(failed)"]["(failed)"] == sum(1 for i in range(600) if i % 30 == 0)
    assert sum(n for row in sm["transitions"].values() for n in row.values()) == 600
    c = run(["diff", "1", "2", "--format", "csv"], db)
    assert [r["path"] for r in _csv(c.stdout)] == [r["path"] for r in d["changed"]]
    assert f"{len(changed)} of 600 file(s) changed label; 50 only in 2" in c.stderr


def test_changed_files_are_fetched_a_page_at_a_time(tmp_path):
    from sqlalchemy import create_engine

    from producer.compare import changed_rows

    db = tmp_path / "ser.db"
    make_batch(db, 900)
    make_batch(db, 900, shift_every=2)
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(db, factory=_CountingConnection))
    with engine.connect() as conn:
        _CountingCursor.fetched = 0
        rows = changed_rows(conn, 1, 2, page_rows=50)
        first = next(rows)
        assert first[0] == "/data/f1/file0000006.wav"  # by path: folder f0 holds no changed file
        assert _CountingCursor.fetched <= 50
        assert 1 + sum(1 for _ in rows) == sum(1 for i in range(900) if i % 2 == 0 and i % 10)


# ------------------------------------------------------------------------------------------ submit


@pytest.fixture
def db_env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """SER_DATABASE_URL pointing at a fresh SQLite file for in-process calls; settings re-read."""
    from worker.settings import get_settings

    db = tmp_path / "ser.db"
    for k in [k for k in os.environ if k.startswith("SER_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("SER_DATABASE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def _files(root: Path, n: int) -> list[str]:
    for i in range(n):
        d = root / f"d{i // 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:03d}.wav").write_bytes(b"")
    (root / "notes.txt").write_text("x")
    return sorted(str(p) for p in root.rglob("*.wav"))


def test_submit_records_the_walk_a_page_at_a_time(tmp_path, db_env, monkeypatch):
    """Each page is committed before the next file is walked and handed on (to be queued) at once."""
    from producer import submit, walk

    monkeypatch.setattr(submit, "WALK_PAGE_FILES", 7)
    files = _files(tmp_path / "rec", 45)
    walked = 0
    real_iter = walk.iter_files

    def counting(paths, stats):  # type: ignore[no-untyped-def]
        nonlocal walked
        for item in real_iter(paths, stats):
            walked += 1
            yield item

    monkeypatch.setattr(walk, "iter_files", counting)
    pages: list[tuple[int, int, int]] = []

    def on_page(batch_id: int, paths: list[str]) -> None:
        n_rows = sql_count(db_env, batch_id)
        pages.append((len(paths), n_rows, walked))

    bid = submit.open_batch(
        [str(tmp_path / "rec")],
        resume=None,
        chunk_size=4,
        segment="none",
        segment_min_s=10.0,
        speaker_from=None,
        speaker_of=None,
        on_page=on_page,
        quiet=True,
    )
    assert [p[0] for p in pages] == [7] * 6 + [3]
    # committed when handed on; the walk is at most one page ahead of what is recorded
    assert [p[1] for p in pages] == [7 * (i + 1) for i in range(6)] + [45]
    assert all(w - r <= 7 for _, r, w in pages)
    con = sqlite3.connect(db_env)
    paths = [r[0] for r in con.execute("SELECT path FROM results WHERE batch_id = ? ORDER BY id", (bid,))]
    n_files, n_ignored, options = con.execute("SELECT n_files, n_ignored, options FROM batches").fetchone()
    con.close()
    assert paths == files and n_files == 45 and n_ignored == 1 and json.loads(options)["walk_complete"] is True


def sql_count(db: Path, batch_id: int) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM results WHERE batch_id = ?", (batch_id,)).fetchone()[0]
    finally:
        con.close()


def test_ctrl_c_during_the_walk_leaves_a_batch_resume_finishes_walking(tmp_path, db_env, monkeypatch):
    from producer import submit

    monkeypatch.setattr(submit, "WALK_PAGE_FILES", 10)
    files = _files(tmp_path / "rec", 35)
    named: list[int] = []
    opts = dict(chunk_size=4, segment="none", segment_min_s=10.0, speaker_from=None, speaker_of=None, quiet=True)

    def interrupt(batch_id: int, paths: list[str]) -> None:
        if sql_count(db_env, batch_id) >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit.open_batch([str(tmp_path / "rec")], resume=None, on_batch=named.append, on_page=interrupt, **opts)
    assert named == [1] and sql_count(db_env, 1) == 20  # named for the Ctrl-C message, two pages kept
    con = sqlite3.connect(db_env)
    assert json.loads(con.execute("SELECT options FROM batches").fetchone()[0])["walk_complete"] is False
    con.close()
    assert submit.open_batch(None, resume=1, **opts) == 1
    con = sqlite3.connect(db_env)
    paths = [r[0] for r in con.execute("SELECT path FROM results WHERE batch_id = 1 ORDER BY id")]
    n_files, options = con.execute("SELECT n_files, options FROM batches").fetchone()
    con.close()
    assert sorted(paths) == files and len(set(paths)) == 35 and n_files == 35
    assert json.loads(options)["walk_complete"] is True


def test_pending_files_are_read_in_keyset_pages(tmp_path):
    """Every pending file once, in submission order, a page at a time; rows labelled meanwhile are skipped."""
    from worker.engine.rows import pending_path_pages

    db = tmp_path / "ser.db"
    make_batch(db, 50)
    con = sqlite3.connect(db)
    con.execute("UPDATE results SET status = 'pending', emotion = NULL WHERE id % 2 = 0")
    con.commit()
    pending = [r[0] for r in con.execute("SELECT path FROM results WHERE status = 'pending' ORDER BY id")]
    pages = pending_path_pages(1, url=f"sqlite:///{db}", page_rows=7)
    first = next(pages)
    assert first == pending[:7]
    con.execute("UPDATE results SET status = 'done' WHERE path = ?", (pending[10],))  # labelled meanwhile
    con.commit()
    con.close()
    later = list(pages)
    assert all(1 <= len(page) <= 7 for page in later)
    assert first + [p for page in later for p in page] == [p for p in pending if p != pending[10]]
