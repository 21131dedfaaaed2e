"""After the labels: `report`, `labels export`, `rescore` + `diff` and the Python API, through the CLI on
real RAVDESS files (skipped without the corpus)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import RAVDESS, REPO, needs_corpus
from tests.unit.test_cli import cli, copy_db, no_traceback, run, sql

pytestmark = needs_corpus


def _make_recordings(root: Path) -> Path:
    """24 RAVDESS files in two actor folders, a 40-s 'call' of 8 utterances, and two broken files."""
    for actor in ("Actor_03", "Actor_04"):
        (root / actor).mkdir(parents=True)
        for f in sorted((RAVDESS / actor).glob("*.flac"))[::5][:12]:
            os.symlink(f, root / actor / f.name)
    parts = []
    for f in sorted((RAVDESS / "Actor_02").glob("*.flac"))[::7][:8]:
        y, sr = sf.read(f, dtype="float32")
        parts += [y, np.zeros(int(1.5 * sr), np.float32)]
    (root / "calls").mkdir()
    sf.write(root / "calls" / "call.wav", np.concatenate(parts), 16000)
    (root / "calls" / "broken.wav").write_bytes(b"not audio at all " * 20)
    (root / "calls" / "empty.wav").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path]:
    """(database file, recordings folder) after one embedded batch (batch 1) over the recordings."""
    tmp = tmp_path_factory.mktemp("after")
    rec = _make_recordings(tmp / "rec")
    db = tmp / "ser.db"
    p = run(["submit", str(rec), "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr  # two broken files
    return db, rec


def _status_counts(db: Path, batch: int) -> dict[str, int]:
    p = run(["status", str(batch)], db)
    assert p.returncode == 0, p.stderr
    out = {}
    for key in ("files", "done", "failed", "pending"):
        m = re.search(rf"│\s*{key}\s*│\s*(\d+)\s*│", p.stdout)
        assert m, p.stdout
        out[key] = int(m.group(1))
    return out


# ------------------------------------------------------------------------------------------ report


def test_report_is_self_contained_and_shows_the_status_counts(labelled, tmp_path):
    db, rec = labelled
    html_file = tmp_path / "report.html"
    p = run(["report", "1", "--output", str(html_file)], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    html = html_file.read_text(encoding="utf-8")
    counts = _status_counts(db, 1)
    assert counts == {"files": 27, "done": 25, "failed": 2, "pending": 0}
    for key, value in (("total", counts["files"]), ("done", counts["done"]), ("failed", counts["failed"])):
        assert re.search(rf'id="count-{key}">{value}<', html), key
    # self-contained: every src/href is a data: URI (or a fragment), no script or stylesheet from elsewhere
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<link" not in html and "<script" not in html and "@import" not in html
    figures = re.findall(r'src="data:image/svg\+xml;base64,', html)
    assert len(figures) == 4  # emotions, confidence histogram, per-folder shares, one timeline
    # per-emotion counts equal to the database's
    for emotion, n in sql(
        db, "SELECT emotion, count(*) FROM results WHERE batch_id = 1 AND status = 'done' GROUP BY emotion"
    ):
        assert re.search(rf"<td>{emotion}</td><td class=\"num\">{n}</td>", html), emotion
    # failed files with their reasons, the per-folder breakdown, the timeline and the model's metrics
    assert "empty file (0 bytes)" in html and "not a readable audio file" in html
    assert "rec/Actor_03" in html and "rec/Actor_04" in html and "rec/calls" in html
    assert str(rec / "calls" / "call.wav") in html and "8 segments" in html
    version = sql(db, "SELECT DISTINCT model_version FROM results WHERE batch_id = 1 AND status = 'done'")[0][0]
    assert version in html and "speaker-independent" in html and "UAR" in html


def test_report_opens_in_headless_chromium(labelled, tmp_path, record_property):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (scripts/install-test-services.sh installs it)")
    db, _ = labelled
    html_file = tmp_path / "report.html"
    assert run(["report", "1", "-o", str(html_file)], db).returncode == 0
    png = tmp_path / "report.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars",
        "--window-size=1200,2600",
        f"--screenshot={png}",
        html_file.as_uri(),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), p.stderr[-2000:]
    print(f"report screenshot: {png}")
    record_property("screenshot", str(png))
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.shape[:2] == (2600, 1200)
    not_white = (img[..., :3] < 0.9).any(axis=-1)
    assert not_white.mean() > 0.03  # text, cards and the figures were drawn
    # the figures rendered: coloured bars (emotion chart, histogram) are on the page, whichever
    # emotions the model chose (each emotion has its own colour, so no single colour is certain)
    rgb = img[..., :3]
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3
    assert coloured.sum() > 5000


def test_report_of_a_missing_batch_is_a_usage_error(labelled, tmp_path):
    db, _ = labelled
    p = run(["report", "99", "-o", str(tmp_path / "r.html")], db)
    no_traceback(p)
    assert p.returncode == 2 and "no batch 99" in p.stderr


# ------------------------------------------------------------------------------------------ labels export


def test_labels_export_writes_the_least_sure_files(labelled, tmp_path):
    db, _ = labelled
    out = tmp_path / "tolabel.csv"
    p = run(["labels", "export", "1", "--count", "6", "--output", str(out)], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "label", "speaker", "predicted", "confidence"]
        got = list(reader)
    expected = sql(
        db,
        "SELECT path, emotion, confidence FROM results WHERE batch_id = 1 AND status = 'done' "
        "ORDER BY confidence ASC LIMIT 6",
    )
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    assert all(r["label"] == "" for r in got)
    assert [r["predicted"] for r in got] == [r["emotion"] for r in expected]
    conf = [float(r["confidence"]) for r in got]
    assert conf == sorted(conf) and conf[0] == pytest.approx(expected[0]["confidence"], abs=1e-4)
    # never silently overwrites a manifest someone may have labelled
    again = run(["labels", "export", "1", "-n", "3", "-o", str(out)], db)
    assert again.returncode == 2 and "exists" in again.stderr
    assert len(out.read_text().splitlines()) == 7
    assert run(["labels", "export", "1", "-n", "3", "-o", str(out), "--force"], db).returncode == 0
    assert len(out.read_text().splitlines()) == 4


# ------------------------------------------------------------------------------------------ rescore, diff


def register_swapped_model(url: str, tmp_path: Path, swap: tuple[str, str]) -> str:
    """Register the default model with two label names swapped: it moves exactly the files of those two."""
    from ser_model.model import DEFAULT_MODEL_PATH, ModelBundle, load_bundle, read_sidecar, save_bundle
    from worker.training import register_bundle

    base = load_bundle(DEFAULT_MODEL_PATH, expected_sha256=read_sidecar(DEFAULT_MODEL_PATH)["sha256"])
    a, b = swap
    labels = [b if lab == a else a if lab == b else lab for lab in base.labels]
    bundle = ModelBundle(
        labels=labels,
        feature_version=base.feature_version,
        meta=dict(base.meta),
        weights={"global": base.weights["global"], "speaker-adaptive": None},
    )
    path = tmp_path / "swapped.npz"
    digest = save_bundle(bundle, path)
    return register_bundle(path, digest, bundle, "swapped", activate=False, url=url)


def test_rescore_with_another_model_and_diff_lists_exactly_the_changed_files(labelled, tmp_path):
    db = copy_db(labelled[0], tmp_path)
    version = register_swapped_model(f"sqlite:///{db}", tmp_path, ("calm", "neutral"))
    p = run(["rescore", "1", "--model", version, "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr  # the same two broken files fail again
    new_id = int(p.stdout.strip().splitlines()[-1])
    assert new_id == 2
    a = {r["path"]: r for r in sql(db, "SELECT * FROM results WHERE batch_id = 1")}
    b = {r["path"]: r for r in sql(db, "SELECT * FROM results WHERE batch_id = 2")}
    assert set(a) == set(b)
    assert {r["model_version"] for r in b.values()} == {version}
    opts = json.loads(sql(db, "SELECT options FROM batches WHERE id = 2")[0][0])
    assert opts["model_version"] == version and opts["rescore_of"] == 1 and opts["segment"] == "vad"
    call = next(p for p in a if p.endswith("call.wav"))
    assert b[call]["n_segments"] == a[call]["n_segments"] == 8  # same segmentation
    swap = {"calm": "neutral", "neutral": "calm"}
    expected = {
        p: (r["emotion"], swap[r["emotion"]])
        for p, r in a.items()
        if r["status"] == "done" and r["emotion"] in swap and r["analysis_mode"] != "segments"
    }
    assert expected, "the fixture batch should have calm or neutral files"

    j = run(["diff", "1", "2", "--format", "json"], db)
    no_traceback(j)
    assert j.returncode == 0, j.stderr
    d = json.loads(j.stdout)
    changed = {r["path"]: (r["emotion_a"], r["emotion_b"]) for r in d["changed"]}
    # the segmented call's aggregate may or may not flip; every other file changes iff it was calm/neutral
    changed.pop(call, None)
    assert changed == expected
    sm = d["summary"]
    assert sm["compared"] == 27 and sm["only_a"] == sm["only_b"] == 0
    assert sm["changed"] + sm["unchanged"] == 27
    assert sm["transitions"]["(failed)"] == {"(failed)": 2}
    n_calm = sum(1 for r in a.values() if r["emotion"] == "calm" and r["analysis_mode"] != "segments")
    assert sm["transitions"].get("calm", {}).get("neutral", 0) >= n_calm
    assert all(r["model_b"] == version and r["model_a"].startswith("default-") for r in d["changed"])

    c = run(["diff", "1", "2", "--format", "csv"], db)
    rows = list(csv.DictReader(io.StringIO(c.stdout)))
    assert [r["path"] for r in rows] == [r["path"] for r in d["changed"]]
    assert list(rows[0])[:7] == ["path", "emotion_a", "emotion_b", "confidence_a", "confidence_b", "model_a", "model_b"]
    assert f"{sm['changed']} of 27 file(s) changed label" in c.stderr
    t = run(["diff", "1", "2"], db)
    assert t.returncode == 0 and "transitions" in t.stdout and f"{sm['changed']} of 27" in t.stdout


def test_rescore_and_diff_usage_errors(labelled, tmp_path):
    db = copy_db(labelled[0], tmp_path)
    p = run(["rescore", "1", "--model", "no-such-model"], db)
    no_traceback(p)
    assert p.returncode == 2 and "no model version" in p.stderr
    p = run(["rescore", "42"], db)
    assert p.returncode == 2 and "no batch 42" in p.stderr
    p = run(["diff", "1", "42"], db)
    assert p.returncode == 2 and "no batch 42" in p.stderr


# ------------------------------------------------------------------------------------------ Python API


def test_predict_files_returns_typed_results_like_a_batch(labelled):
    from ser_batch import Prediction, predict_files

    db, rec = labelled
    files = sorted((rec / "Actor_03").iterdir())[:3] + [rec / "calls" / "call.wav", rec / "calls" / "empty.wav"]
    got = predict_files(files)
    assert [p.path for p in got] == [str(f) for f in files]
    assert all(isinstance(p, Prediction) for p in got)
    rows = {r["path"]: r for r in sql(db, "SELECT * FROM results WHERE batch_id = 1")}
    for p in got[:4]:
        assert p.ok and p.error is None
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.confidence == pytest.approx(max(p.probabilities.values()))
        # the same label and confidence as the batch gave the same file
        assert p.emotion == rows[p.path]["emotion"]
        assert p.confidence == pytest.approx(rows[p.path]["confidence"], abs=1e-6)
        assert p.model_version == rows[p.path]["model_version"]
    assert got[3].analysis_mode == "segments" and len(got[3].segments) == 8
    assert got[3].segments[0].end_s > got[3].segments[0].start_s
    assert not got[4].ok and got[4].error == "empty file (0 bytes)" and got[4].emotion is None
    with pytest.raises(ValueError, match="segment"):
        predict_files(files[:1], segment="window:0:1")


_API_SCRIPT = """
import json, sys
from ser_batch import predict_files
out = {}
for p in predict_files(sys.argv[1:]):
    out[p.path] = {"emotion": p.emotion, "probabilities": p.probabilities,
                   "segments": [s.probabilities for s in p.segments]}
print(json.dumps(out))
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_api_and_batch_give_equal_probabilities_whatever_the_blas_threads(threads, tmp_path):
    """The same files through the Python API (one process) and an embedded batch (a pool of two processes),
    both run with OMP_NUM_THREADS/OPENBLAS_NUM_THREADS set to 1 and to 2: every probability equal to 1e-6,
    segments of a long recording too. With 2 BLAS threads the encoder's mel projection summed in another
    order and confidences moved by 5e-4 before the computations were pinned (ser_model.threads)."""
    rec = tmp_path / "rec"
    rec.mkdir()
    for actor in ("Actor_05", "Actor_06"):
        for f in sorted((RAVDESS / actor).glob("*.flac"))[::9][:3]:
            os.symlink(f, rec / f.name)
    parts = [sf.read(f, dtype="float32")[0] for f in sorted((RAVDESS / "Actor_07").glob("*.flac"))[::11][:4]]
    sf.write(rec / "long.wav", np.concatenate(parts), 16000)
    files = sorted(str(p) for p in rec.iterdir())
    env_threads = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    db = tmp_path / "ser.db"
    p = run(["submit", str(rec), "-q", "--segment-min-s", "10"], db, **env_threads)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    _, env = cli(db, **env_threads)
    api = subprocess.run(
        [str(Path(sys.executable)), "-c", _API_SCRIPT, *files],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert api.returncode == 0, api.stderr
    got = json.loads(api.stdout)
    rows = {r["path"]: r for r in sql(db, "SELECT * FROM results WHERE batch_id = 1")}
    assert set(got) == set(rows) == set(files)
    for path, pred in got.items():
        stored = json.loads(rows[path]["probabilities"])
        assert pred["emotion"] == rows[path]["emotion"]
        assert pred["probabilities"].keys() == stored.keys()
        for lab, v in pred["probabilities"].items():
            assert v == pytest.approx(stored[lab], abs=1e-6), (path, lab)
    segs = sql(db, "SELECT probabilities FROM segments ORDER BY start_s")
    long = got[str(rec / "long.wav")]["segments"]
    assert len(long) == len(segs) > 1
    for api_p, row in zip(long, segs, strict=True):
        stored = json.loads(row["probabilities"])
        assert all(v == pytest.approx(stored[lab], abs=1e-6) for lab, v in api_p.items())
