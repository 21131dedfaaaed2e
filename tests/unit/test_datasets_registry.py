"""Dataset parsers, the CSV manifest, the model registry and retraining through the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from ser_model.datasets import DatasetError, load_dataset
from tests.conftest import TESS, needs_corpus, tone, write
from tests.unit.test_cli import EXAMPLES, no_traceback, rows, run


def _tree(root: Path) -> None:
    for lab in ("happy", "sad"):
        for k in range(3):
            write(root / lab / f"{lab}{k}.wav", tone(freq=150 + 50 * k), 16000)


def test_folders_dataset(tmp_path):
    _tree(tmp_path / "d")
    items = load_dataset([tmp_path / "d"], "folders")
    assert len(items) == 6 and {i.label for i in items} == {"happy", "sad"}
    assert all(i.speaker is None for i in items)


def test_csv_manifest_relative_paths_and_speakers(tmp_path):
    _tree(tmp_path / "d")
    m = tmp_path / "d" / "manifest.csv"
    m.write_text("path,label,speaker\nhappy/happy0.wav,Happy,ann\nsad/sad0.wav,sad,bob\n" + "sad/sad1.wav,sad,\n")
    items = load_dataset([m], "csv")
    assert [(i.path.name, i.label, i.speaker) for i in items] == [
        ("happy0.wav", "happy", "ann"),
        ("sad0.wav", "sad", "bob"),
        ("sad1.wav", "sad", None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nx.wav,sad\n")
    with pytest.raises(DatasetError, match="path,label"):
        load_dataset([bad], "csv")


def test_dataset_errors(tmp_path):
    _tree(tmp_path / "d")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset([tmp_path / "nope"], "folders")
    with pytest.raises(DatasetError, match="no training files for emotion"):
        load_dataset([tmp_path / "d"], "folders", emotions=["happy", "angry"])
    with pytest.raises(DatasetError, match="at least two labels"):
        load_dataset([tmp_path / "d"], "folders", emotions=["happy"])
    with pytest.raises(DatasetError, match="not a RAVDESS name"):
        load_dataset([tmp_path / "d"], "ravdess")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset([tmp_path / "d"], "librispeech")


@needs_corpus
def test_tess_dataset_maps_labels():
    items = load_dataset([TESS], "tess")
    assert len(items) == 2800
    assert {i.label for i in items} == {"angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad"}
    assert {i.speaker for i in items} == {"tess:OAF", "tess:YAF"}


def test_registry_default_activate_and_reload(db_url):
    from ser_model.model import DEFAULT_MODEL_PATH, load_bundle, save_bundle
    from worker.storage.db import ModelVersion, get_engine
    from worker.storage.migrate import upgrade
    from worker.storage.registry import RegistryError, activate, active_version, ensure_default_model, load_model
    from worker.training import register_bundle

    upgrade(db_url)
    eng = get_engine(db_url)
    with Session(eng) as s, s.begin():
        v0 = ensure_default_model(s)
        assert ensure_default_model(s) == v0  # idempotent
    assert load_model(url=db_url).version == v0
    # register a copy of the default bundle as a new version stored in the database
    b = load_bundle(DEFAULT_MODEL_PATH)
    p = Path(db_url.removeprefix("sqlite:///")).with_name("copy.npz")
    digest = save_bundle(b, p)
    v1 = register_bundle(p, digest, b, "copy-test", activate=False, url=db_url)
    with Session(eng) as s:
        assert active_version(s) == v0
    with Session(eng) as s, s.begin():
        activate(s, v1)
    with Session(eng) as s:
        assert active_version(s) == v1
        assert s.query(ModelVersion).filter(ModelVersion.active.is_(True)).count() == 1
    assert load_model(url=db_url).version == v1  # picked up without restarting anything
    with Session(eng) as s, s.begin(), pytest.raises(RegistryError):
        activate(s, "no-such-version")
    # a tampered bundle in the database is refused
    with Session(eng) as s, s.begin():
        row = s.get(ModelVersion, v1)
        data = bytearray(row.bundle)
        data[100] ^= 0xFF
        row.bundle = bytes(data)
    import worker.storage.registry as reg

    reg._cache.clear()
    with pytest.raises(RegistryError, match="checksum mismatch"):
        load_model(url=db_url)


@needs_corpus
@pytest.mark.slow
def test_train_tess_activate_then_next_batch_uses_it(tmp_path):
    """`train --activate` makes the next batch use the new version; earlier rows keep the old one."""
    db = tmp_path / "ser.db"
    first = run(["submit", str(EXAMPLES)], db)
    assert first.returncode == 0
    folders = [str(TESS / f"{spk}_{emo}") for spk in ("OAF", "YAF") for emo in ("angry", "sad", "happy")]
    t = run(
        # one degraded copy per file: this checks registering and activating, not the recipe (3 by default)
        ["train", *folders, "--dataset", "tess", "--activate", "--folds", "2", "--conditions", "1"],
        db,
        SER_MODEL_DIR=str(tmp_path / "models"),
        SER_FEATURE_CACHE_DIR=str(tmp_path / "fcache"),
    )
    no_traceback(t)
    assert t.returncode == 0, t.stdout + t.stderr
    assert "speaker-independent" in t.stdout and "registered model version" in t.stdout
    assert (tmp_path / "models").is_dir() and list((tmp_path / "models").rglob("confusion_matrix.png"))
    second = run(["submit", str(EXAMPLES)], db)
    assert second.returncode == 0
    old = {r["model_version"] for r in rows(db, 1)}
    new = {r["model_version"] for r in rows(db, 2)}
    assert len(old) == len(new) == 1 and old != new
    assert next(iter(old)).startswith("default-") and next(iter(new)).startswith("tess3-")
    assert {r["emotion"] for r in rows(db, 2)} <= {"angry", "sad", "happy"}
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM models WHERE active = 1").fetchone()[0] == 1


def test_metrics_are_json_safe_for_postgresql():
    """NaN/inf metrics (empty calibration bins) become null: PostgreSQL's JSON rejects NaN."""
    import json
    import math

    from worker.storage.registry import json_safe

    m = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "x", "e": 2}
    safe = json_safe(m)
    assert safe == {"a": None, "b": [1.0, None, {"c": None}], "d": "x", "e": 2}
    json.dumps(safe, allow_nan=False)  # would raise on any NaN left
