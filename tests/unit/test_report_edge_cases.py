"""`ser-batch report` on batches that are unusual: nothing labelled yet, everything failed, hostile paths,
flags and warnings present (no corpus needed)."""

from __future__ import annotations

import re

from tests.unit.test_cli import no_traceback, run


def _batch(db, rows, *, warnings=None):  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, get_engine, upsert_results

    assert run(["db", "upgrade"], db).returncode == 0
    with Session(get_engine(f"sqlite:///{db}")) as s, s.begin():
        b = Batch(source_paths=["/data"], status="running", n_files=len(rows), options={}, warnings=warnings)
        s.add(b)
        s.flush()
        keys = {k for r in rows for k in r}
        upsert_results(s, [{k: r.get(k) for k in keys} | {"batch_id": b.id} for r in rows])


def test_report_of_a_batch_still_pending(tmp_path):
    db = tmp_path / "ser.db"
    _batch(db, [{"path": f"/data/a{i}.wav", "status": "pending"} for i in range(3)])
    out = tmp_path / "r.html"
    p = run(["report", "1", "-o", str(out)], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    html = out.read_text()
    assert 'id="count-pending">3<' in html and "No file of this batch has a label yet" in html
    assert "No file has been labelled by a model yet" in html


def test_report_escapes_paths_and_shows_flags_and_warnings(tmp_path):
    db = tmp_path / "ser.db"
    evil = "/data/<script>alert(1)</script>.wav"
    probs = {"angry": 0.7, "sad": 0.3}
    rows = [
        {"path": evil, "status": "failed", "error": "not a readable audio file: <b>bad</b>"},
        {
            "path": "/data/x.wav",
            "status": "done",
            "emotion": "angry",
            "confidence": 0.7,
            "probabilities": probs,
            "low_confidence": True,
            "out_of_domain": True,
            "model_version": "m1",
        },
        {
            "path": "/data/y.wav",
            "status": "done",
            "emotion": "sad",
            "confidence": 0.9,
            "probabilities": {"angry": 0.1, "sad": 0.9},
            "low_confidence": False,
            "out_of_domain": False,
            "model_version": "m1",
        },
    ]
    _batch(db, rows, warnings=[{"code": "many_out_of_domain", "message": "half the files are out of domain"}])
    out = tmp_path / "r.html"
    p = run(["report", "1", "-o", str(out)], db)
    assert p.returncode == 0, p.stderr
    html = out.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bad&lt;/b&gt;" in html
    assert 'id="count-low-confidence">1<' in html and 'id="count-out-of-domain">1<' in html
    assert "many_out_of_domain" in html and "half the files are out of domain" in html
    assert re.search(r"m1 \(2 file\(s\) of this batch\)", html)
    assert "no cross-validation metrics recorded" in html  # m1 is not in the registry
