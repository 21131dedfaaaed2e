"""Reading a batch back on PostgreSQL: CSV through COPY, JSON Lines through a server-side cursor, report
and diff from aggregates (the SQLite side is tests/unit/test_streaming.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from services import ser_batch

pytestmark = pytest.mark.integration

EMOS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def _batch(url: str, n: int, shift_every: int = 0) -> int:
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, get_engine, replace_segments, upsert_results

    rows = []
    for i in range(n):
        failed = i % 10 == 0
        emo = EMOS[(i + (1 if shift_every and i % shift_every == 0 else 0)) % 8]
        conf = (i % 100) / 100
        probs = None if failed else {e: (conf if e == emo else (1 - conf) / 7) for e in EMOS}
        rows.append(
            {
                "path": f'/data/f{i % 3}/a,b "{i:04d}".wav' if i == 1 else f"/data/f{i % 3}/file{i:04d}.wav",
                "status": "failed" if failed else "done",
                "emotion": None if failed else emo,
                "confidence": None if failed else conf,
                "probabilities": probs,
                **{f"p_{e}": None if failed else probs[e] for e in EMOS},  # type: ignore[index]
                "error": "cannot decode" if failed else None,
                "duration_s": None if failed else float(i % 3) + (0.25 if i % 4 == 0 else 0.0),  # 2.0, not 2
                "model_version": None if failed else "default-v1",
                "low_confidence": None if failed else i % 3 == 0,
                "out_of_domain": None if failed else i % 7 == 0,
                "finished_at": datetime(2026, 1, 1, 0, 0, 1, 250000 if i == 2 else 0, tzinfo=UTC),
            }
        )
    with Session(get_engine(url)) as s, s.begin():
        b = Batch(source_paths=["/data"], status="done_with_failures", n_files=n, options={})
        s.add(b)
        s.flush()
        upsert_results(s, [r | {"batch_id": b.id} for r in rows])
        segs = {
            rows[i]["path"]: [
                {"index": k, "start_s": 2.0 * k, "end_s": 2.0 * k + 2.0004, "emotion": "sad", "confidence": 0.5}
                for k in range(3)
            ]
            for i in (3, 5)
        }
        replace_segments(s, b.id, segs)
        return b.id


def test_exports_report_and_diff_on_postgresql(pg_url, env_for, tmp_path):
    from sqlalchemy.orm import Session

    from producer import report
    from producer.export import export_query, export_rows, model_labels, result_where, write_stream
    from worker.storage.db import get_engine

    n = 700
    _batch(pg_url, n)
    _batch(pg_url, n, shift_every=5)
    env = env_for(pg_url, None)
    c = ser_batch(["results", "--batch", "1", "--format", "csv"], env)
    assert c.returncode == 0, c.stderr
    got = list(csv.DictReader(io.StringIO(c.stdout)))
    with get_engine(pg_url).connect() as conn:  # the same rows through the Python writer
        where = result_where(batch=1)
        labels = model_labels(conn, where)
        columns, q = export_query(where, labels)
        buf = io.StringIO()
        write_stream(export_rows(conn, q, labels, page_rows=50), columns, "csv", buf)
    want = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(got) == n and got == want  # COPY formats exactly as Python does (shortest floats)
    assert got[1]["path"] == '/data/f1/a,b "0001".wav' and got[2]["finished_at"] == "2026-01-01T00:00:01.250000+00:00"
    assert got[3]["duration_s"] == "0.0" and got[4]["duration_s"] == "1.25"
    sg = ser_batch(["results", "--batch", "1", "--segments", "--format", "csv"], env)
    assert sg.returncode == 0, sg.stderr
    with get_engine(pg_url).connect() as conn:
        where = result_where(batch=1, segments=True)
        columns, q = export_query(where, labels, segments=True)
        buf = io.StringIO()
        write_stream(export_rows(conn, q, labels), columns, "csv", buf)
    segs = list(csv.DictReader(io.StringIO(sg.stdout)))
    assert len(segs) == 6 and segs == list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["end_s"] for r in segs[:3]] == ["2.0", "4.0", "6.0"] and segs[0]["p_sad"] == ""
    lines = ser_batch(["results", "--batch", "1", "--format", "jsonl"], env).stdout.splitlines()
    assert [json.loads(x)["path"] for x in lines] == [r["path"] for r in got]
    arr = json.loads(ser_batch(["results", "--batch", "1", "--format", "json", "--emotion", "sad"], env).stdout)
    assert len(arr) == sum(1 for i in range(n) if i % 10 and i % 8 == 3)

    with Session(get_engine(pg_url)) as s:
        d = report.gather(s, 1)
    done = [(i % 100) / 100 for i in range(n) if i % 10]
    assert sum(d.confidence_hist) == len(done) and d.confidence_hist[19] == sum(1 for c in done if c >= 0.95)
    assert d.confidence_hist[1] == sum(1 for c in done if 0.05 <= c < 0.1)  # floor, not PostgreSQL's rounding
    assert {g["name"] for g in d.groups} == {"data/f0", "data/f1", "data/f2"}
    assert d.n_low_confidence == sum(1 for i in range(n) if i % 10 and i % 3 == 0)

    j = ser_batch(["diff", "1", "2", "--format", "json"], env)
    assert j.returncode == 0, j.stderr
    dd = json.loads(j.stdout)
    changed = [i for i in range(n) if i % 10 and i % 5 == 0]
    assert dd["summary"]["changed"] == len(changed) == len(dd["changed"])
    assert dd["summary"]["compared"] == n
