import numpy as np
import pytest

from ser_model import model as M
from ser_model.training import FeatureTable, cross_validate, encode_labels, train_bundle

# early stopping needs more data than these tests use (it would stop after ~20 one-batch epochs)
SMALL = {"hidden_layer_sizes": (16,), "early_stopping": False, "max_iter": 300}


def _table(n_per=60, d=10, speakers=6):
    rng = np.random.default_rng(0)
    labels, X, spk = [], [], []
    for i, lab in enumerate(["calm", "angry", "sad"]):
        for k in range(n_per):
            x = rng.standard_normal(d)
            x[i] += 6.0  # separable on one feature each
            X.append(x)
            labels.append(lab)
            spk.append(f"s{k % speakers}")
    return FeatureTable(np.asarray(X, np.float32), labels, spk, [f"f{i}" for i in range(len(X))], [], "fp")


def test_cv_is_grouped_and_accurate_on_separable_data():
    cv = cross_validate(_table(), labels=["calm", "angry", "sad"], n_splits=3, params=SMALL)
    assert cv["protocol"].startswith("speaker-independent")
    assert cv["wa"] > 0.9 and cv["n"] == 180
    assert set(cv["per_class_recall"]) == {"calm", "angry", "sad"}


def test_cv_without_speakers_is_labelled_speaker_dependent():
    t = _table()
    t.speakers = [None] * len(t.labels)
    cv = cross_validate(t, labels=["calm", "angry", "sad"], n_splits=3, params=SMALL)
    assert "speaker-dependent" in cv["protocol"]


def test_bundle_roundtrip_and_checksum(tmp_path):
    t = _table()
    b = train_bundle(t, labels=["calm", "angry", "sad"], params=SMALL)
    p = tmp_path / "m.npz"
    digest = M.save_bundle(b, p)
    loaded = M.load_bundle(p)
    np.testing.assert_allclose(loaded.predict_proba(t.X[:5]), b.predict_proba(t.X[:5]))
    assert loaded.labels == ["calm", "angry", "sad"]
    assert M.read_sidecar(p)["sha256"] == digest
    assert loaded.meta["data_fingerprint"] == "fp" and "scikit-learn" in loaded.meta["versions"]
    # tampering: one byte changed -> refused before unpickling
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(M.BundleError, match="checksum mismatch"):
        M.load_bundle(p)


def test_feature_version_mismatch_is_refused(tmp_path):
    b = train_bundle(_table(), labels=["calm", "angry", "sad"], params=SMALL)
    b.feature_version = "some-other-version"
    p = tmp_path / "old.npz"
    M.save_bundle(b, p)
    with pytest.raises(M.BundleError, match="feature version"):
        M.load_bundle(p)


def test_encode_labels_rejects_unknown():
    assert list(encode_labels(["b", "a"], ["a", "b"])) == [1, 0]
    with pytest.raises(ValueError):
        encode_labels(["c"], ["a", "b"])


def test_packaged_default_model_loads_and_has_si_metrics():
    b = M.load_bundle(M.DEFAULT_MODEL_PATH)
    assert len(b.labels) == 8
    met = b.meta["metrics"]
    assert met["protocol"].startswith("speaker-independent")
    assert 0.3 < met["wa"] <= 1.0 and 0.3 < met["uar"] <= 1.0 and 0.3 < met["macro_f1"] <= 1.0
    assert set(met["per_class_recall"]) == set(b.labels)


def test_feature_cache_is_per_extractor_code_and_libraries(tmp_path, monkeypatch):
    """A vector cached by other extractor code or libraries is never read back under the same FEATURE_VERSION."""
    import soxr

    from ser_model import training as T
    from ser_model.datasets import LabelledFile
    from tests.conftest import tone, write

    wav = write(tmp_path / "a.wav", tone(180.0, seconds=1.0), 16000)
    cache = tmp_path / "cache"
    T.feature_cache_namespace.cache_clear()
    ns = T.feature_cache_namespace()
    assert ns.startswith(M.FEATURE_VERSION + "-")
    table = T.extract_table([LabelledFile(str(wav), "calm", "s1")], n_jobs=1, cache_dir=str(cache))
    (cached,) = (cache / ns).glob("*.npy")
    np.testing.assert_array_equal(np.load(cached), table.X[0])
    # a stale vector in the same folder is used ...
    np.save(cached, np.full_like(table.X[0], 7.0))
    assert (T.extract_table([LabelledFile(str(wav), "calm", "s1")], n_jobs=1, cache_dir=str(cache)).X[0] == 7.0).all()
    # ... but not once a library (or the extractor's source) differs
    monkeypatch.setattr(soxr, "__version__", "0.0-other")
    T.feature_cache_namespace.cache_clear()
    try:
        assert T.feature_cache_namespace() != ns
        again = T.extract_table([LabelledFile(str(wav), "calm", "s1")], n_jobs=1, cache_dir=str(cache))
        np.testing.assert_array_equal(again.X[0], table.X[0])
    finally:
        T.feature_cache_namespace.cache_clear()
