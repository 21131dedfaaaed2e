"""A model is data, not code: crafted pickles (in the ``models`` table or as a file with a matching sidecar)
are refused with a clear message and run nothing; format 3 round-trips any JSON-safe metadata and arrays.

The payload is a real one: unpickling it would create a marker file (checked once, deliberately, below).
"""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ser_model import bundle_io
from ser_model import model as M
from tests.conftest import tone, write
from tests.unit.test_cli import no_traceback, run


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_pickle(marker: Path) -> bytes:
    """A format-2-looking joblib-style pickle whose loading creates ``marker``."""
    return pickle.dumps({"format": 2, "labels": ["calm"], "feature_version": M.FEATURE_VERSION, "x": _Payload(marker)})


def crafted_file(folder: Path, marker: Path, suffix: str = ".npz") -> Path:
    """A crafted bundle file plus a sidecar holding its true SHA-256."""
    data = crafted_pickle(marker)
    path = folder / f"evil{suffix}"
    path.write_bytes(data)
    Path(str(path) + ".json").write_text(json.dumps({"sha256": M.sha256_bytes(data), "labels": ["calm"]}))
    return path


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """Guard for the tests below: the payload is live, so "no marker" means "nothing was run"."""
    marker = tmp_path / "marker"
    pickle.loads(crafted_pickle(marker))  # noqa: S301 - deliberately, once, to prove the payload works
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".npz", ".joblib"])
def test_python_api_refuses_a_crafted_file_with_matching_sidecar(tmp_path, suffix):
    import ser_batch

    marker = tmp_path / "marker"
    path = crafted_file(tmp_path, marker, suffix)
    with pytest.raises(ValueError, match=r"pickled bundle.*models convert .*--trust-pickle"):
        ser_batch.load(path)
    with pytest.raises(ValueError, match="pickled bundle"):
        ser_batch.predict_files([], model=str(path))
    with pytest.raises(M.LegacyBundleError):
        M.load_bundle(path)
    assert not marker.exists()


def _insert_evil_row(db: Path, marker: Path) -> None:
    data = crafted_pickle(marker)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE models SET active = 0")
        con.execute(
            "INSERT INTO models (version, labels, metrics, checksum, feature_version, active, source, bundle, "
            "created_at) VALUES ('evil', '[\"calm\"]', '{}', ?, ?, 1, 'db', ?, CURRENT_TIMESTAMP)",
            (M.sha256_bytes(data), M.FEATURE_VERSION, data),
        )
    con.close()


def test_crafted_row_in_the_models_table_is_refused_by_submit_registry_and_api(tmp_path, monkeypatch):
    db = tmp_path / "ser.db"
    marker = tmp_path / "marker"
    p = run(["models", "list"], db)  # creates the schema and registers the packaged default
    assert p.returncode == 0, p.stderr
    _insert_evil_row(db, marker)
    audio = write(tmp_path / "in" / "a.wav", tone(seconds=1.5), 16000)

    p = run(["submit", str(audio.parent), "-q"], db)
    no_traceback(p)
    assert p.returncode != 0
    assert "pickled bundle" in p.stderr and "models convert" in p.stderr, p.stderr
    assert not marker.exists()

    url = f"sqlite:///{db}"
    monkeypatch.setenv("SER_DATABASE_URL", url)
    from worker.settings import get_settings
    from worker.storage.registry import RegistryError, _cache, load_model

    get_settings.cache_clear()
    _cache.clear()
    with pytest.raises(RegistryError, match="pickled bundle"):
        load_model(url=url)
    import ser_batch

    with pytest.raises(ValueError, match="pickled bundle"):
        ser_batch.load("evil")
    assert not marker.exists()
    get_settings.cache_clear()


def test_worker_task_fails_the_rows_of_a_crafted_model_and_runs_nothing(tmp_path, monkeypatch):
    from sqlalchemy.orm import Session

    from worker.celery_app.tasks import classify
    from worker.settings import get_settings
    from worker.storage.db import Batch, get_engine, insert_pending
    from worker.storage.migrate import upgrade
    from worker.storage.registry import _cache

    db = tmp_path / "ser.db"
    url = f"sqlite:///{db}"
    marker = tmp_path / "marker"
    monkeypatch.setenv("SER_DATABASE_URL", url)
    get_settings.cache_clear()
    _cache.clear()
    upgrade(url)
    _insert_evil_row(db, marker)
    audio = str(write(tmp_path / "in" / "a.wav", tone(seconds=1.5), 16000))
    with Session(get_engine(url)) as s, s.begin():
        b = Batch(source_paths=["/r"], status="running", mode="distributed", n_files=1)
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, [audio], {})
    counts = classify.apply(args=[bid, [audio]]).get()
    assert counts["failed"] == 1 and counts["done"] == 0
    con = sqlite3.connect(db)
    (err,) = con.execute("SELECT error FROM results WHERE batch_id = ?", (bid,)).fetchone()
    con.close()
    assert "pickled bundle" in err
    assert not marker.exists()
    get_settings.cache_clear()


def test_object_array_inside_a_format_3_file_is_refused(tmp_path):
    """An ``.npy`` member holding a pickled object array is the one way an .npz can carry code: refused."""
    marker = tmp_path / "marker"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    good = M.bundle_to_bytes(M.load_bundle(M.DEFAULT_MODEL_PATH))
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        member = io.BytesIO()
        np.lib.format.write_array(member, arr, allow_pickle=True)
        dst.writestr("evil.npy", member.getvalue())
    data = buf.getvalue()
    with pytest.raises(M.BundleError, match="unreadable"):
        M.bundle_from_bytes(data, M.sha256_bytes(data))
    assert not marker.exists()


def test_format_3_round_trips_any_json_meta_and_named_arrays(tmp_path):
    """Another model's extra metadata and arrays (e.g. an encoder's name, digest and a projection) need no new format."""
    base = M.load_bundle(M.DEFAULT_MODEL_PATH)
    rng = np.random.default_rng(0)
    extra_meta = {
        "encoder": {"name": "some-encoder", "sha256": "ab" * 32, "layers": [3, 6], "sr": 16000, "ok": True},
        "conditions": {"noise_db": [None, 10.5, float("inf")]},
        "projection": rng.standard_normal((4, 3)).astype(np.float32),
    }
    extra_trust = {**base.trust, "speaker_stats": {"mean": rng.standard_normal(5), "n": np.int64(7)}}
    b = M.ModelBundle(
        labels=base.labels, meta={**base.meta, **extra_meta}, trust=extra_trust, weights=dict(base.weights)
    )
    path = tmp_path / "accurate.npz"
    M.save_bundle(b, path)
    loaded = M.load_bundle(path)
    assert loaded.meta["encoder"] == extra_meta["encoder"]
    assert loaded.meta["conditions"]["noise_db"] == [None, 10.5, float("inf")]
    np.testing.assert_array_equal(loaded.meta["projection"], extra_meta["projection"])
    assert loaded.meta["projection"].dtype == np.float32
    np.testing.assert_array_equal(loaded.trust["speaker_stats"]["mean"], extra_trust["speaker_stats"]["mean"])
    assert loaded.trust["speaker_stats"]["n"] == 7
    X = rng.standard_normal((3, base.weights["global"].n_features))
    np.testing.assert_array_equal(loaded.predict_proba(X), base.predict_proba(X))
    # what cannot be stored as data is refused when saving, with the path of the value
    bad = M.ModelBundle(labels=base.labels, meta={"f": {"g": object()}}, weights=dict(base.weights))
    with pytest.raises(M.BundleError, match=r"meta\.f\.g"):
        M.save_bundle(bad, tmp_path / "bad.npz")


def test_packaged_default_is_format_3_and_loads_without_pickle():
    data = M.DEFAULT_MODEL_PATH.read_bytes()
    assert bundle_io.is_container(data)
    assert M.read_sidecar(M.DEFAULT_MODEL_PATH)["format"] == 3
    doc = bundle_io.decode(data)
    assert doc["format"] == 3 and len(doc["labels"]) == 8


def test_cli_convert_then_import_registers_the_same_model(tmp_path):
    import joblib

    base = M.load_bundle(M.DEFAULT_MODEL_PATH)
    old = tmp_path / "old.joblib"
    legacy = {
        "format": 2,
        "labels": base.labels,
        "feature_version": base.feature_version,
        "meta": {**base.meta, "name": "legacy"},
        "trust": base.trust,
        "weights": {k: None if w is None else w.to_dict() for k, w in base.weights.items()},
        "sklearn": b"",
    }
    joblib.dump(legacy, old)
    Path(str(old) + ".json").write_text(json.dumps({"sha256": M.sha256_bytes(old.read_bytes())}))
    db = tmp_path / "ser.db"
    p = run(["models", "import", str(old)], db)
    no_traceback(p)
    assert p.returncode != 0 and "models convert" in p.stderr
    p = run(["models", "convert", str(old)], db)
    no_traceback(p)
    assert p.returncode == 2 and "--trust-pickle" in p.stderr
    p = run(["models", "convert", str(old), "--trust-pickle"], db)
    assert p.returncode == 0, p.stderr
    new = tmp_path / "old.npz"
    conv = M.load_bundle(new)
    for mode, w in base.weights.items():
        if w is not None:
            for a, c in zip(w.coefs, conv.weights[mode].coefs, strict=True):
                np.testing.assert_array_equal(a, c)
    p = run(["models", "import", str(new), "--activate"], db)
    assert p.returncode == 0, p.stderr
    version = p.stdout.strip().split()[1]
    assert version.startswith("old-")
    p = run(["models", "import", str(new)], db)
    assert p.returncode != 0 and "already registered" in p.stderr
    # a tampered file is refused by its checksum
    data = bytearray(new.read_bytes())
    data[200] ^= 0xFF
    new.write_bytes(bytes(data))
    p = run(["models", "import", str(new)], db)
    assert p.returncode != 0 and "checksum mismatch" in p.stderr


def test_db_roles_prints_grants_and_refuses_to_apply_on_sqlite(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["db", "roles", "--prefix", "acme"], db)
    assert p.returncode == 0, p.stderr
    sql = p.stdout
    assert "GRANT SELECT ON batches, results, segments, models, jobs, alembic_version TO acme_reader;" in sql
    assert "batch_webhooks" not in sql.split("TO acme_reader;")[0].splitlines()[-1]
    assert "GRANT SELECT ON models, alembic_version TO acme_worker;" in sql
    assert "ALTER TABLE models OWNER TO acme_admin;" in sql
    p = run(["db", "roles", "--apply"], db)
    no_traceback(p)
    assert p.returncode == 2 and "PostgreSQL only" in p.stderr
    p = run(["db", "roles", "--prefix", "x; DROP TABLE results"], db)
    assert p.returncode == 2 and "role prefix" in p.stderr


def test_an_earlier_packaged_default_row_names_the_activation(db_url):
    """A database whose active model is the pickled packaged default of before (another SHA-256) says what to do."""
    from sqlalchemy.orm import Session

    from worker.storage.db import ModelVersion, get_engine
    from worker.storage.migrate import upgrade
    from worker.storage.registry import PACKAGE_SOURCE, RegistryError, _cache, default_version_name, load_model

    upgrade(db_url)
    with Session(get_engine(db_url)) as s, s.begin():
        s.add(
            ModelVersion(
                version="default-20261122-b4d3c0b9",
                labels=["calm"],
                metrics={},
                checksum="b4d3c0b9" + "0" * 56,
                feature_version=M.FEATURE_VERSION,
                active=True,
                source=PACKAGE_SOURCE,
            )
        )
    _cache.clear()
    side = M.read_sidecar(M.DEFAULT_MODEL_PATH)
    current = default_version_name(side["sha256"], side["created_at"])
    with pytest.raises(RegistryError, match=f"earlier packaged default.*models activate {current}"):
        load_model(url=db_url)
