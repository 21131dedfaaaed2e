"""Speaker-adaptive normalisation: statistics, fallback below the minimum, bundle routing, grouped CV."""

import numpy as np
import pytest

from ser_model import model as M
from ser_model.speaker import (
    MIN_SPEAKER_FILES,
    MODE_GLOBAL,
    MODE_SPEAKER,
    apply_speaker_stats,
    speaker_modes,
    speaker_normalise,
    speaker_statistics,
)
from ser_model.training import FeatureTable, cross_validate, train_bundle

SMALL = {"hidden_layer_sizes": (16,), "early_stopping": False, "max_iter": 300, "alpha": 1e-2}
LABELS = ["calm", "angry", "sad"]


def _speaker_table(n_speakers=8, per_label=6, d=6, offset=8.0, seed=0):
    """Each speaker shifts and scales every feature a lot; the emotion moves one feature a little."""
    rng = np.random.default_rng(seed)
    X, labels, spk = [], [], []
    for s in range(n_speakers):
        shift = rng.uniform(-offset, offset, size=d)
        scale = rng.uniform(0.5, 2.0, size=d)
        for i, lab in enumerate(LABELS):
            for _ in range(per_label):
                x = rng.standard_normal(d) * 0.3
                x[i] += 1.5
                X.append(x * scale + shift)
                labels.append(lab)
                spk.append(f"spk{s}")
    X = np.asarray(X, np.float32)
    return FeatureTable(X, labels, spk, [f"f{i}" for i in range(len(X))], [], "fp")


def test_normalised_speakers_have_zero_mean_unit_std():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 4)) * 5 + 3
    spk = ["a"] * 10 + ["b"] * 20
    Z, adapted = speaker_normalise(X, spk, min_files=8)
    assert adapted.all()
    for s in ("a", "b"):
        rows = Z[np.asarray(spk) == s]
        np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(rows.std(axis=0), 1.0, atol=1e-12)


def test_invariant_to_a_speaker_specific_affine_change():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((12, 5))
    Y = X * np.array([2.0, 0.5, 3.0, 1.0, 7.0]) + np.array([10.0, -4.0, 0.0, 1.0, 100.0])
    Zx, _ = speaker_normalise(X, ["s"] * 12)
    Zy, _ = speaker_normalise(Y, ["s"] * 12)
    np.testing.assert_allclose(Zx, Zy, atol=1e-9)


def test_fallback_below_minimum_and_unknown_speaker_rows_unchanged():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((MIN_SPEAKER_FILES + 7 + 2, 3)) + 50.0
    spk = ["big"] * MIN_SPEAKER_FILES + ["small"] * 7 + [None, None]
    Z, adapted = speaker_normalise(X, spk)
    assert adapted.tolist() == [True] * MIN_SPEAKER_FILES + [False] * 9
    np.testing.assert_array_equal(Z[~adapted], X[~adapted])
    assert np.abs(Z[adapted]).max() < 5.0  # normalised rows are no longer around 50
    assert speaker_modes(adapted) == [MODE_SPEAKER] * MIN_SPEAKER_FILES + [MODE_GLOBAL] * 9
    assert set(speaker_statistics(X, spk)) == {"big"}


def test_result_does_not_depend_on_row_order_bit_for_bit():
    rng = np.random.default_rng(5)
    # magnitudes spread over many octaves: a plain np.mean gives different last bits per order
    X = rng.standard_normal((40, 30)) * np.exp(rng.uniform(-5, 5, (40, 30)))
    spk = ["s"] * 40
    perm = rng.permutation(40)
    assert (X.mean(axis=0) != X[perm].mean(axis=0)).any()  # the hazard is real for this data
    Z, _ = speaker_normalise(X, spk)
    Zp, _ = speaker_normalise(X[perm], [spk[i] for i in perm])
    np.testing.assert_array_equal(Zp, Z[perm])
    assert speaker_normalise(X.astype(np.float32), spk)[0].dtype == np.float32


def test_constant_feature_is_centred_not_divided_by_zero():
    X = np.column_stack([np.full(10, 4.0), np.arange(10.0)])
    Z, _ = speaker_normalise(X, ["s"] * 10)
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 0], 0.0)


def test_statistics_of_one_set_applied_to_another():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 3)) * 2 + 1
    stats = speaker_statistics(X, ["s"] * 20)
    new = np.array([[1.0, 1.0, 1.0]])
    Z, adapted = apply_speaker_stats(new, ["s"], stats)
    np.testing.assert_allclose(Z[0], (new[0] - X.mean(0)) / X.std(0))
    assert adapted.tolist() == [True]
    with pytest.raises(ValueError, match="width"):
        apply_speaker_stats(np.zeros((1, 4)), ["s"], stats)


@pytest.mark.parametrize(
    ("X", "spk", "kw", "msg"),
    [
        (np.zeros((3, 2)), ["a", "b"], {}, "speaker keys"),
        (np.zeros(3), ["a", "b", "c"], {}, "shape"),
        (np.zeros((3, 2)), ["a"] * 3, {"min_files": 1}, "at least 2"),
    ],
)
def test_bad_input_raises(X, spk, kw, msg):
    with pytest.raises(ValueError, match=msg):
        speaker_normalise(X, spk, **kw)


def test_speaker_adaptive_cv_beats_global_when_speakers_dominate():
    t = _speaker_table()
    glob = cross_validate(t, labels=LABELS, n_splits=4, params=SMALL)
    adapt = cross_validate(t, labels=LABELS, n_splits=4, params=SMALL, speaker_adaptive=True)
    assert adapt["speaker_adaptive"] and adapt["n_speaker_adapted"] == len(t.labels)
    assert "speaker-adaptive" in adapt["protocol"]
    assert adapt["wa"] > 0.85
    assert adapt["wa"] > glob["wa"] + 0.2


def test_bundle_routes_rows_by_speaker_and_falls_back_exactly(tmp_path):
    t = _speaker_table()
    b = train_bundle(t, labels=LABELS, params=SMALL, min_speaker_files=8)
    assert b.speaker_pipeline is not None and b.meta["min_speaker_files"] == 8
    path = tmp_path / "m.npz"
    M.save_bundle(b, path)
    b = M.load_bundle(path)
    assert b.has_speaker_pipeline

    # a new batch: speaker "new" with 18 files (adapted), speaker "few" with 3 files, 2 unknown
    new = _speaker_table(n_speakers=1, seed=9)
    X = np.vstack([new.X, new.X[:3] + 1.0, new.X[3:5]])
    spk = ["new"] * len(new.X) + ["few"] * 3 + [None, None]
    proba, modes = b.predict_proba_speakers(X, spk)
    assert modes == [MODE_SPEAKER] * len(new.X) + [MODE_GLOBAL] * 5
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba[len(new.X) :], b.predict_proba(X[len(new.X) :]))
    true = np.array([LABELS.index(lab) for lab in new.labels])
    assert np.mean(proba[: len(new.X)].argmax(1) == true) > 0.8

    with pytest.raises(ValueError, match="speaker keys"):
        b.predict_proba_speakers(X, spk[:-1])


def test_bundle_without_speaker_pipeline_is_global_everywhere(tmp_path):
    t = _speaker_table(n_speakers=3)
    b = train_bundle(t, labels=LABELS, params=SMALL, speaker_adaptive=False)
    assert b.speaker_pipeline is None and "min_speaker_files" not in b.meta
    proba, modes = b.predict_proba_speakers(t.X, t.speakers)
    assert modes == [MODE_GLOBAL] * len(t.X)
    np.testing.assert_array_equal(proba, b.predict_proba(t.X))


def test_bundle_of_the_old_layout_converts_without_speaker_pipeline(tmp_path):
    import io

    import joblib

    t = _speaker_table(n_speakers=3)
    b = train_bundle(t, labels=LABELS, params=SMALL, speaker_adaptive=False)
    buf = io.BytesIO()
    old = {"format": 1, "pipeline": b.pipeline, "labels": LABELS, "feature_version": b.feature_version, "meta": {}}
    joblib.dump(old, buf)
    data = buf.getvalue()
    with pytest.raises(M.LegacyBundleError):
        M.bundle_from_bytes(data, M.sha256_bytes(data))
    (tmp_path / "old.joblib").write_bytes(data)
    M.convert_legacy_bundle(tmp_path / "old.joblib", tmp_path / "new.npz", trust_pickle=True)
    loaded = M.load_bundle(tmp_path / "new.npz")
    assert loaded.speaker_pipeline is None
    _, modes = loaded.predict_proba_speakers(t.X, t.speakers)
    assert set(modes) == {MODE_GLOBAL}
