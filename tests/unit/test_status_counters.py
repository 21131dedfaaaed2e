"""`status` of a final batch is read from the counters its finaliser kept with it; any other batch is counted."""

from __future__ import annotations

import json

from tests.unit.test_cli import EXAMPLES, run, sql


def status_json(db, *args: str) -> dict:
    p = run(["status", *args, "--format", "json"], db)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_status_of_a_final_batch_comes_from_the_batch_row(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["submit", "-q", str(EXAMPLES)], db)
    assert p.returncode == 0, p.stdout + p.stderr
    live = sql(
        db,
        "SELECT count(*) AS n, sum(low_confidence IS 1) AS low, sum(out_of_domain IS 1) AS ood FROM results"
        " WHERE batch_id = 1 AND status = 'done'",
    )[0]
    stored = sql(db, "SELECT status, n_done, n_failed, n_low_confidence, n_out_of_domain FROM batches WHERE id = 1")[0]
    # the finaliser kept the trust counts with the batch, equal to the rows' own
    assert tuple(stored) == ("done", 8, 0, live["low"], live["ood"])
    doc = status_json(db)
    assert doc["counts"] == {
        "total": 8,
        "done": 8,
        "failed": 0,
        "pending": 0,
        "low_confidence": live["low"],
        "out_of_domain": live["ood"],
    }
    # what status shows of a final batch is the batch row's (it reads no result row): counters changed
    # behind its back show through
    sql(db, "UPDATE batches SET n_done = 7, n_failed = 1, n_low_confidence = 5, n_out_of_domain = 4 WHERE id = 1")
    assert status_json(db, "1")["counts"] == {
        "total": 8,
        "done": 7,
        "failed": 1,
        "pending": 0,
        "low_confidence": 5,
        "out_of_domain": 4,
    }
    # a final batch with a pending row again (or no counters) is counted from its rows
    sql(db, "UPDATE results SET status = 'pending' WHERE id = (SELECT min(id) FROM results)")
    c = status_json(db, "1")["counts"]
    assert (c["done"], c["pending"], c["total"]) == (7, 1, 8)
    sql(db, "UPDATE results SET status = 'done' WHERE status = 'pending'")
    sql(db, "UPDATE batches SET n_low_confidence = NULL WHERE id = 1")
    c = status_json(db, "1")["counts"]
    assert (c["done"], c["failed"], c["low_confidence"]) == (8, 0, live["low"])


def test_batches_lists_a_final_batch_from_its_counters(tmp_path):
    db = tmp_path / "ser.db"
    assert run(["submit", "-q", str(EXAMPLES)], db).returncode == 0
    sql(db, "UPDATE batches SET n_done = 6, n_failed = 2 WHERE id = 1")
    p = run(["batches"], db)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("│ 1 "))
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert cells[4:8] == ["8", "6", "2", "0"], cells


def test_the_finaliser_keeps_the_batch_dimensions_and_status_reads_them(tmp_path):
    """A final batch's mean arousal/valence is stored with it (batches.dimensions) and equals the
    aggregate of its rows; status shows the stored summary without reading the rows."""
    from sqlalchemy.orm import Session

    from worker.engine.assess import dimension_summary
    from worker.engine.finalise import finalise_batch
    from worker.storage.db import Batch, get_engine, insert_pending, upsert_results, utcnow
    from worker.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    eng = get_engine(url)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/r"], status="running", mode="embedded", n_files=3)
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, ["a.wav", "b.wav", "c.wav"], {})
    rows = [("a.wav", 0.8, 0.2), ("b.wav", 0.3, 0.7), ("c.wav", 0.6, 0.4)]
    with Session(eng) as s, s.begin():
        upsert_results(
            s,
            [
                {"batch_id": bid, "path": p, "status": "done", "emotion": "angry", "confidence": 0.9,
                 "arousal": a, "valence": v, "finished_at": utcnow()}
                for p, a, v in rows
            ],
        )  # fmt: skip
        assert finalise_batch(s, bid) is not None
    with Session(eng) as s:
        kept = s.get(Batch, bid).dimensions
        assert kept == dimension_summary(s, bid)
    assert kept["n"] == 3 and abs(kept["arousal_mean"] - (0.8 + 0.3 + 0.6) / 3) < 1e-9
    assert kept["high_arousal_share"] == 2 / 3 and kept["positive_valence_share"] == 1 / 3
