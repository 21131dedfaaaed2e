"""Trust in the CLI (issue 11): flags in the exports and tables, `results --confident`, `status --format
json`, warnings in the `submit` summary, the calibration in `models show`, and a pinned model honoured
on `--resume`. Real files, real SQLite, the command as a user runs it; flags and warnings that a test
depends on are written into the database directly, so nothing here depends on which label or flag the
model gives a file."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import RAVDESS, TESS, needs_corpus
from tests.unit.test_cli import copy_db, no_traceback, run, sql

pytestmark = needs_corpus

WARNINGS = [
    {"code": "out_of_domain", "share": 0.5, "message": "TEST: half of these recordings are unlike the training data"},
    {"code": "label_collapse", "label": "sad", "message": "TEST: most files are labelled 'sad'"},
]


def _make_recordings(root: Path) -> Path:
    """12 RAVDESS files of two actors, 4 TESS files, a 30-s segmented 'call' and one broken file."""
    root.mkdir(parents=True)
    for actor in ("Actor_05", "Actor_16"):
        for f in sorted((RAVDESS / actor).glob("*.flac"))[::9][:6]:
            os.symlink(f, root / f"{actor}_{f.name}")
    if TESS.is_dir():
        for f in sorted(TESS.rglob("*.flac"))[::97][:4]:
            os.symlink(f, root / f"tess_{f.name}")
    parts = []
    for f in sorted((RAVDESS / "Actor_07").glob("*.flac"))[::11][:6]:
        y, sr = sf.read(f, dtype="float32")
        parts += [y, np.zeros(int(1.5 * sr), np.float32)]
    sf.write(root / "call.wav", np.concatenate(parts), 16000)
    (root / "broken.wav").write_bytes(b"this is not audio " * 30)
    return root


@pytest.fixture(scope="module")
def batch_db(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """(database, submit's output) after one embedded batch (batch 1) over the recordings."""
    tmp = tmp_path_factory.mktemp("trust")
    rec = _make_recordings(tmp / "rec")
    db = tmp / "ser.db"
    p = run(["submit", str(rec), "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr  # the broken file failed; the batch finished
    return db, p


def _flag_some(db: Path) -> tuple[set[str], set[str]]:
    """Flag every third labelled row low_confidence and every second out_of_domain (others False).

    Returns:
        (paths flagged low_confidence, paths flagged out_of_domain).
    """
    done = [r["path"] for r in sql(db, "SELECT path FROM results WHERE batch_id = 1 AND status = 'done' ORDER BY id")]
    low = set(done[::3])
    ood = set(done[1::2])
    for p in done:
        sql(
            db,
            "UPDATE results SET low_confidence = ?, out_of_domain = ?, ood_score = ? WHERE batch_id = 1 AND path = ?",
            p in low,
            p in ood,
            3.0 if p in ood else 0.5,
            p,
        )
    _refinalise(db)
    return low, ood


def _refinalise(db: Path) -> None:
    """What the finaliser does in a transaction that writes rows of a final batch: its counts kept in step."""
    from worker.engine.finalise import finalise_if_complete
    from worker.storage.db import close_engines

    finalise_if_complete(1, url=f"sqlite:///{db}")
    close_engines()


def _csv(stdout: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(stdout)))


def test_results_exports_carry_the_flags_as_stored(batch_db):
    db, _ = batch_db
    stored = {r["path"]: r for r in sql(db, "SELECT * FROM results WHERE batch_id = 1")}
    p = run(["results", "--batch", "1", "--format", "csv"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    table = _csv(p.stdout)
    assert len(table) == len(stored)
    for col in ("low_confidence", "out_of_domain", "ood_score"):
        assert col in table[0]
    j = json.loads(run(["results", "--batch", "1", "--format", "json"], db).stdout)
    assert {r["path"] for r in j} == set(stored)
    n_flags = 0
    for r in j:
        s = stored[r["path"]]
        if s["status"] == "done":  # the model computes the flags for every labelled file
            assert isinstance(r["low_confidence"], bool) and isinstance(r["out_of_domain"], bool)
            assert r["ood_score"] == pytest.approx(s["ood_score"])
            n_flags += 1
        assert r["low_confidence"] == (None if s["low_confidence"] is None else bool(s["low_confidence"]))
        assert r["out_of_domain"] == (None if s["out_of_domain"] is None else bool(s["out_of_domain"]))
    assert n_flags == sum(1 for s in stored.values() if s["status"] == "done") >= 15
    failed = next(r for r in j if r["status"] == "failed")
    assert failed["low_confidence"] is None and failed["out_of_domain"] is None and failed["ood_score"] is None
    # segments of the long recording carry the flags too
    seg = json.loads(run(["results", "--batch", "1", "--segments", "--format", "json"], db).stdout)
    assert len(seg) >= 2
    stored_seg = sql(db, "SELECT idx, low_confidence, out_of_domain, ood_score FROM segments ORDER BY idx")
    assert [(s["index"], s["low_confidence"], s["out_of_domain"]) for s in seg] == [
        (r["idx"], bool(r["low_confidence"]), bool(r["out_of_domain"])) for r in stored_seg
    ]


def test_confident_leaves_out_exactly_the_flagged_rows(batch_db, tmp_path):
    db = copy_db(batch_db[0], tmp_path)
    low, ood = _flag_some(db)
    assert low and ood - low
    everything = {r["path"] for r in _csv(run(["results", "--batch", "1", "--format", "csv"], db).stdout)}
    p = run(["results", "--batch", "1", "--format", "csv", "--confident"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    kept = _csv(p.stdout)
    assert {r["path"] for r in kept} == everything - low  # out-of-domain alone is kept; failed rows are kept
    assert all(r["low_confidence"] != "True" for r in kept)
    assert any(r["status"] == "failed" for r in kept)
    # with --status done: only confident labelled rows
    done = _csv(run(["results", "--batch", "1", "--format", "csv", "--confident", "--status", "done"], db).stdout)
    assert {r["path"] for r in done} == everything - low - {r["path"] for r in kept if r["status"] == "failed"}
    # segments: flag one segment, it alone disappears
    segs = sql(db, "SELECT id, idx FROM segments ORDER BY idx")
    sql(db, "UPDATE segments SET low_confidence = (id = ?)", segs[0]["id"])
    seg = _csv(run(["results", "--batch", "1", "--segments", "--format", "csv", "--confident"], db).stdout)
    assert [int(r["index"]) for r in seg] == [s["idx"] for s in segs[1:]]
    h = run(["results", "--help"], db)
    assert "--confident" in h.stdout and "low_confidence" in h.stdout


def test_results_table_shows_the_flags(batch_db, tmp_path):
    db = copy_db(batch_db[0], tmp_path)
    low, ood = _flag_some(db)
    p = run(["results", "--batch", "1"], db, COLUMNS="400")
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "flags" in p.stdout
    for line in p.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) < 6 or cells[0] != "1":
            continue
        path = cells[1]
        assert ("low conf." in cells[5]) == (path in low), line
        assert ("out of domain" in cells[5]) == (path in ood), line


def test_status_json_counts_flags_and_warnings(batch_db, tmp_path):
    db = copy_db(batch_db[0], tmp_path)
    low, ood = _flag_some(db)
    sql(db, "UPDATE batches SET warnings = ? WHERE id = 1", json.dumps(WARNINGS))
    p = run(["status", "1", "--format", "json"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) == {
        "batch_id",
        "status",
        "mode",
        "counts",
        "dimensions",
        "warnings",
        "files_per_s",
        "eta_s",
        "finished_at",
    }
    by_status = dict(
        (r[0], r[1]) for r in sql(db, "SELECT status, count(*) FROM results WHERE batch_id = 1 GROUP BY status")
    )
    assert doc["batch_id"] == 1 and doc["status"] == "done_with_failures" and doc["mode"] == "embedded"
    assert doc["counts"] == {
        "total": sum(by_status.values()),
        "done": by_status["done"],
        "failed": by_status["failed"],
        "pending": 0,
        "low_confidence": len(low),
        "out_of_domain": len(ood),
    }
    assert by_status["failed"] == 1  # broken.wav
    assert doc["warnings"] == WARNINGS
    assert doc["finished_at"] and doc["eta_s"] == 0.0
    # the table shows the same counts and each warning
    t = run(["status", "1"], db, COLUMNS="300")
    assert t.returncode == 0, t.stderr
    for key, n in (("low confidence", len(low)), ("out of domain", len(ood)), ("done", by_status["done"])):
        m = re.search(rf"│\s*{key}\s*│\s*(\d+)\s*│", t.stdout)
        assert m and int(m.group(1)) == n, t.stdout
    for w in WARNINGS:
        assert w["message"] in t.stdout


def test_status_computes_warnings_of_a_batch_finished_without_them(batch_db, tmp_path):
    db = copy_db(batch_db[0], tmp_path)
    done = [r["path"] for r in sql(db, "SELECT path FROM results WHERE batch_id = 1 AND status = 'done'")]
    sql(db, "UPDATE results SET out_of_domain = 1 WHERE batch_id = 1 AND status = 'done'")
    _refinalise(db)
    sql(db, "UPDATE batches SET warnings = NULL WHERE id = 1")
    doc = json.loads(run(["status", "1", "--format", "json"], db).stdout)
    assert doc["counts"]["out_of_domain"] == len(done) >= 10
    assert [w["code"] for w in doc["warnings"] if w["code"] == "out_of_domain"] == ["out_of_domain"]
    assert "100% of these recordings are unlike the training data" in doc["warnings"][0]["message"]
    # shown, not stored
    assert sql(db, "SELECT warnings FROM batches WHERE id = 1")[0]["warnings"] is None


def test_submit_summary_prints_counts_and_warnings(batch_db, tmp_path):
    db, p = batch_db
    stored = json.loads(sql(db, "SELECT warnings FROM batches WHERE id = 1")[0]["warnings"] or "[]")
    flat = " ".join(p.stdout.split())  # rich wraps long lines
    for w in stored:  # whatever the model decided, the summary shows what was stored
        assert " ".join(w["message"].split()) in flat
    n_low, n_ood = sql(
        db,
        "SELECT sum(low_confidence = 1), sum(out_of_domain = 1) FROM results WHERE batch_id = 1 AND status = 'done'",
    )[0]
    assert f"{n_low} low confidence, {n_ood} out of domain" in flat
    # a finished batch resumed: the summary shows the warnings stored on it (here written by the test)
    db2 = copy_db(db, tmp_path)
    sql(db2, "UPDATE batches SET warnings = ? WHERE id = 1", json.dumps(WARNINGS))
    r = run(["submit", "--resume", "1", "-q"], db2)
    no_traceback(r)
    assert r.returncode == 3, r.stdout + r.stderr
    flat = " ".join(r.stdout.split())
    for w in WARNINGS:
        assert w["message"] in flat
    assert "warning" in r.stdout


def test_models_show_prints_calibration_and_draws_reliability(batch_db, tmp_path):
    db = copy_db(batch_db[0], tmp_path)
    row = sql(db, "SELECT version, metrics FROM models WHERE active = 1")[0]
    trust = json.loads(row["metrics"]).get("trust")
    if not trust:
        pytest.skip("the packaged default model stores no calibration (trained before ser-feat-3)")
    out = tmp_path / "rep"
    p = run(["models", "show", row["version"], "--report", str(out)], db, COLUMNS="250")
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    for mode, c in trust["calibration"].items():
        assert mode in p.stdout
        assert f"{c['ece_before']:.3f} -> {c['ece_after']:.3f}" in p.stdout
        assert f"{c['mean_confidence_before']:.3f} -> {c['mean_confidence_after']:.3f}" in p.stdout
        assert f"{c['low_confidence_threshold']:.2f}" in p.stdout
        held = c.get("held_out_corpora")
        if held:  # the ECE the temperature was fitted for is shown beside the table's
            assert "on held-out corpora" in p.stdout and f"ECE {held['ece_after']:.3f}" in " ".join(p.stdout.split())
    assert f"score > {trust['ood']['threshold']:.3f}" in p.stdout
    assert f"{trust['ood']['oof_out_of_domain_share']:.1%}" in p.stdout
    png = out / "reliability_diagram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "confusion_matrix.png").exists()
    # a model without calibration says so and draws no reliability diagram
    metrics = json.loads(row["metrics"])
    metrics.pop("trust")
    sql(db, "UPDATE models SET metrics = ? WHERE version = ?", json.dumps(metrics), row["version"])
    out2 = tmp_path / "rep2"
    q = run(["models", "show", row["version"], "--report", str(out2)], db)
    assert q.returncode == 0, q.stderr
    assert "no calibration stored" in q.stdout and not (out2 / "reliability_diagram.png").exists()


def test_resume_honours_the_pinned_model(batch_db, tmp_path):
    """A batch pinned to a model (rescore) keeps it on `--resume`, although another model is active."""
    db = copy_db(batch_db[0], tmp_path)
    src = sql(db, "SELECT * FROM models WHERE active = 1")[0]
    sql(
        db,
        "INSERT INTO models (version, created_at, labels, metrics, checksum, feature_version, active, source, bundle) "
        "VALUES ('pinned-copy', ?, ?, ?, ?, ?, 0, ?, ?)",
        src["created_at"],
        src["labels"],
        src["metrics"],
        src["checksum"],
        src["feature_version"],
        src["source"],
        src["bundle"],
    )
    opts = json.loads(sql(db, "SELECT options FROM batches WHERE id = 1")[0]["options"])
    opts["model_version"] = "pinned-copy"
    sql(db, "UPDATE batches SET options = ?, status = 'running', warnings = NULL WHERE id = 1", json.dumps(opts))
    redo = [r["path"] for r in sql(db, "SELECT path FROM results WHERE batch_id = 1 AND status = 'done' LIMIT 3")]
    for path in redo:
        sql(
            db,
            # back to pending as the engine puts a row back: the finished run's lease is ended too
            "UPDATE results SET status = 'pending', emotion = NULL, model_version = NULL, finished_at = NULL, "
            "worker_id = NULL, lease_expires_at = NULL WHERE batch_id = 1 AND path = ?",
            path,
        )
    p = run(["submit", "--resume", "1", "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr
    got = {r["path"]: r["model_version"] for r in sql(db, "SELECT path, model_version FROM results WHERE batch_id = 1")}
    assert all(got[path] == "pinned-copy" for path in redo), got
    assert sql(db, "SELECT version FROM models WHERE active = 1")[0]["version"] == src["version"]
