"""The per-chunk result upsert and the pending rows on SQLite: one statement, bound parameters."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session


@pytest.fixture()
def batch(db_url):
    from worker.storage.db import Batch, get_engine
    from worker.storage.migrate import upgrade

    upgrade(db_url)
    eng = get_engine(db_url)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/x"], status="running", n_files=8)
        s.add(b)
        s.flush()
        bid = b.id
    return eng, bid


def _row(bid: int, i: int, **kw) -> dict:
    return {
        "batch_id": bid,
        "path": f"/x/{i}.wav",
        "status": "done",
        "emotion": "sad",
        "confidence": 0.5,
        "probabilities": {"sad": 0.5, "angry": 0.5},
        "ood_score": 1.5,
        "error": None,
        **kw,
    }


def test_upsert_rewrites_its_own_row_and_keeps_created_at(batch):
    from worker.storage.db import Result, insert_pending, upsert_results

    eng, bid = batch
    with Session(eng) as s, s.begin():
        insert_pending(s, bid, [f"/x/{i}.wav" for i in range(4)], {"/x/0.wav": 10})
        insert_pending(s, bid, ["/x/0.wav"], {"/x/0.wav": 99})  # already there: left alone
    with Session(eng) as s:
        created = s.scalars(select(Result).where(Result.path == "/x/0.wav")).one().created_at
    for emotion in ("sad", "angry"):  # a redelivered chunk, the second time with another label
        with Session(eng) as s, s.begin():
            upsert_results(s, [_row(bid, i, emotion=emotion) for i in range(3)])
    with Session(eng) as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 4
        r = s.scalars(select(Result).where(Result.path == "/x/0.wav")).one()
        assert (r.status, r.emotion, r.size_bytes, r.ood_score) == ("done", "angry", 10, 1.5)
        assert r.probabilities == {"sad": 0.5, "angry": 0.5}
        assert r.created_at == created and r.updated_at > created
        assert s.scalars(select(Result.status).where(Result.path == "/x/3.wav")).one() == "pending"


def test_chunks_of_any_size_run_one_statement_with_bound_parameters(batch):
    """Chunks of 3, 5 and 1 rows: the same SQL text every time, executed as executemany."""
    from worker.storage.db import upsert_results

    eng, bid = batch
    seen: list[tuple[str, bool, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO RESULTS"):
            seen.append((statement, executemany, len(parameters) if executemany else 1))

    event.listen(eng, "before_cursor_execute", record)
    try:
        start = 0
        for n in (3, 5, 1):
            with Session(eng) as s, s.begin():
                upsert_results(s, [_row(bid, i) for i in range(start, start + n)])
            start += n
    finally:
        event.remove(eng, "before_cursor_execute", record)
    assert len({sql for sql, _, _ in seen}) == 1
    assert "ON CONFLICT (batch_id, path, coalesce(channel, -1)) DO UPDATE" in seen[0][0]
    assert "?" in seen[0][0]  # bound parameters, not literal values
    assert [n for _, _, n in seen] == [3, 5, 1]
    assert all(many for _, many, n in seen if n > 1)


def test_statement_follows_the_row_keys(batch):
    """Columns come from the rows: a row set with other keys gets its own statement; bad keys are refused."""
    from worker.storage.db import Result, upsert_results

    eng, bid = batch
    with Session(eng) as s, s.begin():
        upsert_results(s, [_row(bid, 0)])
        upsert_results(s, [{"batch_id": bid, "path": "/x/0.wav", "low_confidence": True}])
    with Session(eng) as s:
        r = s.scalars(select(Result).where(Result.path == "/x/0.wav")).one()
        assert (r.emotion, r.low_confidence, r.ood_score) == ("sad", True, 1.5)  # only the given keys change
    with Session(eng) as s, s.begin():
        with pytest.raises(ValueError, match="same keys"):
            upsert_results(s, [_row(bid, 1), {"batch_id": bid, "path": "/x/2.wav"}])
        with pytest.raises(ValueError, match="not columns of results"):
            upsert_results(s, [{"batch_id": bid, "path": "/x/2.wav", "colour": "red"}])
