"""PostgreSQL: the migration, the upserts and the status query on a real server."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from services import ser_batch

pytestmark = pytest.mark.integration


def _text(p) -> str:
    return " ".join(p.stdout.split())  # rich wraps long lines


def test_db_upgrade_on_postgresql(pg_cluster, env_for):
    from worker.storage.migrate import current_revision, head_revision

    head = head_revision()
    url = pg_cluster.create_database("fresh_upgrade")
    env = env_for(url, None)
    p = ser_batch(["db", "upgrade"], env)
    assert p.returncode == 0, p.stderr
    assert f"empty -> {head}" in _text(p)
    assert current_revision(url) == head
    p = ser_batch(["db", "current"], env)
    assert p.returncode == 0, p.stderr
    assert f"current: {head}; head: {head}" in _text(p)
    p = ser_batch(["db", "upgrade"], env)  # idempotent
    assert p.returncode == 0 and f"{head} -> {head}" in _text(p), p.stdout + p.stderr


def test_postgresql_behind_head_is_not_migrated_silently(pg_cluster, env_for, tmp_path):
    url = pg_cluster.create_database("never_upgraded")
    p = ser_batch(["status"], env_for(url, None))
    assert p.returncode == 1
    assert "ser-batch db upgrade" in p.stderr


def test_upserts_and_pending_rows_on_postgresql(pg_url):
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, Result, batch_counts, get_engine, insert_pending, upsert_results

    eng = get_engine(pg_url)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/x"], status="running", mode="distributed", n_files=3)
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, ["/x/a.wav", "/x/b.wav", "/x/c.wav"], {"/x/a.wav": 10})
        insert_pending(s, bid, ["/x/a.wav"], {})  # already there: left alone
    row = {"batch_id": bid, "path": "/x/a.wav", "status": "done", "emotion": "sad", "confidence": 0.5}
    for emotion in ("sad", "angry"):  # the same row delivered twice, second time with another label
        with Session(eng) as s, s.begin():
            upsert_results(s, [{**row, "emotion": emotion}])
    with Session(eng) as s:
        n = s.scalar(select(func.count()).select_from(Result).where(Result.path == "/x/a.wav"))
        r = s.scalars(select(Result).where(Result.path == "/x/a.wav")).one()
        assert n == 1
        assert (r.status, r.emotion, r.size_bytes) == ("done", "angry", 10)
        assert r.updated_at >= r.created_at
        assert batch_counts(s, bid) == {"pending": 2, "done": 1, "failed": 0, "total": 3}


def test_channel_rows_on_postgresql(pg_url):
    """(batch_id, path, channel) is the key on PostgreSQL too: channels are rows of their own, two mixed
    rows of a file conflict (NULL channel counted as -1), and a split file's pending row is replaced."""
    from sqlalchemy import select, text
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from worker.storage.db import (
        Batch,
        Result,
        drop_mixed_rows,
        get_engine,
        insert_pending,
        replace_segments,
        upsert_results,
    )

    eng = get_engine(pg_url)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/c"], status="running", mode="distributed", n_files=1, options={"channels": "split"})
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, ["/c/call.wav"], {})
    rows = [
        {"batch_id": bid, "path": "/c/call.wav", "channel": c, "role": r, "status": "done", "emotion": e}
        for c, r, e in ((0, "agent", "calm"), (1, "customer", "angry"))
    ]
    for _ in range(2):  # a redelivered chunk writes the same rows again
        with Session(eng) as s, s.begin():
            drop_mixed_rows(s, bid, ["/c/call.wav"])
            upsert_results(s, rows)
            replace_segments(s, bid, {("/c/call.wav", 1): [{"index": 0, "start_s": 1.0, "end_s": 2.5}]})
    with Session(eng) as s:
        got = s.execute(select(Result.channel, Result.role, Result.emotion).where(Result.batch_id == bid)).all()
        assert sorted(got) == [(0, "agent", "calm"), (1, "customer", "angry")]
        seg = s.execute(text("SELECT channel, start_s FROM segments")).all()
        assert [tuple(x) for x in seg] == [(1, 1.0)]
    with Session(eng) as s, s.begin():
        upsert_results(s, [{"batch_id": bid, "path": "/c/mono.wav", "status": "done", "emotion": "sad"}])
        upsert_results(s, [{"batch_id": bid, "path": "/c/mono.wav", "status": "done", "emotion": "happy"}])
    with Session(eng) as s:
        assert s.scalars(select(Result.emotion).where(Result.path == "/c/mono.wav")).all() == ["happy"]
    with pytest.raises(IntegrityError), eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO results (batch_id, path, status, attempts, created_at, updated_at)"
                " VALUES (:b, '/c/mono.wav', 'done', 0, now(), now())"
            ),
            {"b": bid},
        )


def test_status_on_postgresql_shows_rate_and_eta(pg_url, env_for):
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, get_engine, insert_pending, upsert_results, utcnow

    eng = get_engine(pg_url)
    t0 = time.monotonic()
    start = utcnow() - timedelta(seconds=10)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/d"], status="running", mode="distributed", n_files=4, created_at=start)
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, [f"/d/{i}.wav" for i in range(4)], {})
        upsert_results(
            s,
            [
                {**r, "finished_at": utcnow()}
                for r in [
                    {"batch_id": bid, "path": "/d/0.wav", "status": "done", "emotion": "sad", "error": None},
                    {"batch_id": bid, "path": "/d/1.wav", "status": "failed", "emotion": None, "error": "x"},
                ]
            ],
        )
    p = ser_batch(["status", str(bid)], env_for(pg_url, None))
    assert p.returncode == 0, p.stderr
    cells = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in p.stdout.splitlines() if ln.count("│") >= 3}
    assert (cells["done"], cells["failed"], cells["pending"]) == ("1", "1", "2")
    assert float(cells["files/s"]) > 0 and float(cells["ETA"].rstrip(" s")) > 0
    p = ser_batch(["status", str(bid), "--format", "json"], env_for(pg_url, None))
    waited_s = time.monotonic() - t0  # the batch's age when status read the clock is 10 s plus at most this
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    # 2 files finished since the batch started; the status process's start-up (seconds on a busy machine) adds to
    # the batch's age, so the bounds come from the time measured around it, not from a budget
    assert 2 / (10 + waited_s) - 1e-3 <= report["files_per_s"] <= 2 / 10 + 1e-3, (report, waited_s)
    assert 10 - 0.1 <= report["eta_s"] <= 10 + waited_s + 0.1, (report, waited_s)  # 2 pending at that rate


def test_0007_channels_on_a_populated_postgresql_database(pg_cluster):
    """0005 -> head (0007) on PostgreSQL keeps rows (channel NULL) and enforces the new key; back to 0005."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from worker.storage.db import get_engine
    from worker.storage.migrate import downgrade, upgrade

    url = pg_cluster.create_database("populated_0005")
    upgrade(url, "0005")
    eng = get_engine(url)
    with eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done, n_failed,"
                " n_ignored) VALUES (1, now(), '{}', '[]', 'done', 'embedded', 1, 1, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO results (batch_id, path, status, emotion, attempts, created_at, updated_at)"
                " VALUES (1, 'a.wav', 'done', 'sad', 1, now(), now())"
            )
        )
        conn.execute(text("INSERT INTO segments (result_id, idx, start_s, end_s) SELECT id, 0, 0.0, 1.0 FROM results"))
    upgrade(url)
    with eng.begin() as conn:
        assert conn.execute(text("SELECT path, channel, emotion FROM results")).all() == [("a.wav", None, "sad")]
        assert conn.execute(text("SELECT channel FROM segments")).all() == [(None,)]
        for ch in (0, 1):  # channels of the same file are rows of their own
            conn.execute(
                text(
                    "INSERT INTO results (batch_id, path, channel, status, attempts, created_at, updated_at)"
                    " VALUES (1, 'a.wav', :c, 'done', 0, now(), now())"
                ),
                {"c": ch},
            )
    with pytest.raises(IntegrityError), eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO results (batch_id, path, status, attempts, created_at, updated_at)"
                " VALUES (1, 'a.wav', 'done', 0, now(), now())"
            )
        )
    downgrade(url, "0005")
    with eng.begin() as conn:
        assert conn.execute(text("SELECT path, emotion FROM results")).all() == [("a.wav", "sad")]
