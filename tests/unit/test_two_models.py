"""The accurate default and the fast model: packaged, registered, chosen per batch; batch normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_model.featureset import ACCURATE, FAST
from ser_model.model import (
    DEFAULT_MODEL_PATH,
    FAST_MODEL_PATH,
    BundleError,
    bundle_from_bytes,
    bundle_to_bytes,
    load_bundle,
    read_sidecar,
    sha256_bytes,
)
from ser_model.speaker import MODE_BATCH, MODE_GLOBAL
from tests.conftest import RAVDESS, needs_corpus
from tests.unit.test_cli import no_traceback, rows, run


def test_packaged_models_record_their_feature_sets_encoder_and_conditions():
    acc, fast = read_sidecar(DEFAULT_MODEL_PATH), read_sidecar(FAST_MODEL_PATH)
    assert acc["feature_version"] == ACCURATE and fast["feature_version"] == FAST
    assert acc["encoder"]["dim"] == 768 and len(acc["encoder"]["sha256"]) == 64
    assert acc["n_features"] == 989 + 768
    assert acc["conditions"]["copies"] >= 1 and "telephone" in acc["conditions"]["kinds"]
    b = load_bundle(DEFAULT_MODEL_PATH)
    assert b.has_batch_pipeline and b.has_speaker_pipeline
    assert set(b.trust["temperature"]) >= {"global", "speaker-adaptive", MODE_BATCH}


def test_accurate_bundle_refuses_another_encoder(monkeypatch, tmp_path):
    """The bundle records the encoder's SHA-256; an encoder folder with another model.bin is refused."""
    other = tmp_path / "enc"
    other.mkdir()
    (other / "model.bin").write_bytes(b"another encoder")
    monkeypatch.setenv("SER_ENCODER_DIR", str(other))
    data = DEFAULT_MODEL_PATH.read_bytes()
    with pytest.raises(BundleError, match="trained with the encoder"):
        bundle_from_bytes(data, sha256_bytes(data))
    load_bundle(FAST_MODEL_PATH)  # the fast model needs no encoder


def test_bundle_with_its_encoder_record_removed_is_refused():
    b = load_bundle(DEFAULT_MODEL_PATH)
    b.meta = {k: v for k, v in b.meta.items() if k != "encoder"}
    data = bundle_to_bytes(b)
    with pytest.raises(BundleError, match="does not record which"):
        bundle_from_bytes(data, sha256_bytes(data))


def test_batch_mode_normalises_by_the_rows_given_and_falls_back_below_the_minimum():
    b = load_bundle(DEFAULT_MODEL_PATH)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, b.weights["global"].n_features)).astype(np.float32)
    p, modes = b.predict_proba_speakers(X, ["b"] * 25, mode=MODE_BATCH)
    assert modes == [MODE_BATCH] * 25 and np.allclose(p.sum(axis=1), 1)
    # the labels do not follow a channel offset: the same rows shifted by one constant vector
    shift = 3.0 * rng.standard_normal(X.shape[1]).astype(np.float32)
    raw, _ = b.predict_proba_speakers(X, ["b"] * 25, mode=MODE_BATCH, calibrated=False)
    raw2, _ = b.predict_proba_speakers(X + shift, ["b"] * 25, mode=MODE_BATCH, calibrated=False)
    np.testing.assert_allclose(raw, raw2, atol=1e-4)
    small, modes = b.predict_proba_speakers(X[:5], ["b"] * 5, mode=MODE_BATCH)
    assert modes == [MODE_GLOBAL] * 5
    np.testing.assert_allclose(small, b.predict_proba(X[:5]))


@needs_corpus
def test_submit_with_the_fast_model_and_with_batch_normalisation(tmp_path):
    src = sorted((RAVDESS / "Actor_02").glob("*.flac"))[:24]
    folder = tmp_path / "rec"
    folder.mkdir()
    for p in src:
        (folder / p.name).symlink_to(p)
    db = tmp_path / "ser.db"
    p = run(["submit", str(folder), "--model", "fast", "-q"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    fast_rows = rows(db, 1)
    assert {r["model_version"][:5] for r in fast_rows} == {"fast-"}
    p = run(["submit", str(folder), "--normalise", "batch", "-q"], db)
    assert p.returncode == 0, p.stderr
    bn = rows(db, 2)
    assert len(bn) == 24 and {r["analysis_mode"] for r in bn} == {MODE_BATCH}
    assert {r["model_version"][:8] for r in bn} == {"default-"}
    assert all(r["emotion"] for r in bn)
    few = tmp_path / "few"
    few.mkdir()
    for q in src[:3]:
        (few / q.name).symlink_to(q)
    p = run(["submit", str(few), "--normalise", "batch", "-q"], db)
    assert p.returncode == 0, p.stderr
    assert "needs at least 20 files" in p.stderr  # said, not a silent fallback
    assert {r["analysis_mode"] for r in rows(db, 3)} == {MODE_GLOBAL}
    p = run(["submit", str(folder), "--normalise", "batch", "--speaker-from", "ravdess"], db)
    assert p.returncode == 2 and "alternatives" in p.stderr
    p = run(["submit", str(folder), "--model", "nope"], db)
    assert p.returncode == 2 and "no model version" in p.stderr
    listed = run(["models", "list"], db)
    assert "fast-" in listed.stdout and "default-" in listed.stdout
    opts = json.loads(
        __import__("sqlite3").connect(db).execute("SELECT options FROM batches WHERE id = 2").fetchone()[0]
    )
    assert opts["normalise"] == "batch"
