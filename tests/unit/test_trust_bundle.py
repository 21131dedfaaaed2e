"""Calibration and out-of-domain state fitted by training, stored in the bundle, and applied when classifying."""

import numpy as np
import pytest

from ser_model import model as M
from ser_model.datasets import load_dataset
from ser_model.speaker import MODE_GLOBAL, MODE_SPEAKER
from ser_model.training import cross_validate, extract_table, train_bundle
from tests.conftest import RAVDESS, TESS, needs_corpus

LABELS = ["calm", "happy", "angry", "sad"]
SMALL = {"hidden_layer_sizes": (32,), "max_iter": 200}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-emotion bundle trained on 8 real RAVDESS actors with grouped CV (as `ser-batch train` does)."""
    files = [
        f for a in range(1, 9) for f in load_dataset([str(RAVDESS / f"Actor_{a:02d}")], "ravdess", emotions=LABELS)
    ]
    table = extract_table(files, n_jobs=2)
    cv = cross_validate(table, labels=LABELS, n_splits=4, params=SMALL)
    cv_sa = cross_validate(table, labels=LABELS, n_splits=4, params=SMALL, speaker_adaptive=True)
    bundle = train_bundle(table, labels=LABELS, cv_report=cv, speaker_cv_report=cv_sa, params=SMALL)
    path = tmp_path_factory.mktemp("bundle") / "b.npz"
    M.save_bundle(bundle, path)
    return table, cv, bundle, path


@needs_corpus
def test_training_fits_calibration_and_ood_on_out_of_fold_predictions(trained):
    table, cv, bundle, _ = trained
    trust = bundle.meta["metrics"]["trust"]
    assert set(trust["calibration"]) == {MODE_GLOBAL, MODE_SPEAKER}
    g = trust["calibration"][MODE_GLOBAL]
    assert g["n"] == len(table.labels) and g["wa"] == pytest.approx(cv["wa"])
    # the raw MLP is over-confident out of fold; calibration brings mean confidence near accuracy
    assert g["mean_confidence_before"] > g["wa"] + 0.05
    assert abs(g["mean_confidence_after"] - g["wa"]) < abs(g["mean_confidence_before"] - g["wa"])
    assert g["ece_after"] < g["ece_before"]
    assert 0.0 < trust["ood"]["oof_out_of_domain_share"] <= 0.10
    assert sum(trust["train_prior"].values()) == pytest.approx(1.0)
    # nothing per-row leaks into the stored metrics
    assert "proba" not in bundle.meta["metrics"] and "predictions" not in bundle.meta["metrics"]


@needs_corpus
def test_calibration_is_stored_and_applied_after_loading(trained):
    table, _, bundle, path = trained
    loaded = M.load_bundle(path)
    assert loaded.trust["temperature"][MODE_GLOBAL]["t0"] == bundle.trust["temperature"][MODE_GLOBAL]["t0"]
    raw = loaded.predict_proba(table.X[:40], calibrated=False)
    cal = loaded.predict_proba(table.X[:40])
    np.testing.assert_array_equal(cal.argmax(1), raw.argmax(1))  # calibration never changes a label
    np.testing.assert_allclose(cal.sum(1), 1.0)
    assert cal.max(1).mean() < raw.max(1).mean()  # the fitted temperature softens (t0 > 1)
    np.testing.assert_allclose(cal, bundle.predict_proba(table.X[:40]))
    flags = loaded.flags(table.X[:40], cal)
    assert flags.ood_score.shape == (40,) and flags.out_of_domain.dtype == bool
    thr = loaded.trust["low_confidence_threshold"][MODE_GLOBAL]
    np.testing.assert_array_equal(flags.low_confidence, cal.max(1) < thr)


@needs_corpus
def test_another_corpus_scores_farther_than_the_training_corpus(trained):
    """TESS (other speakers, microphone, single words) lies farther from the training data than RAVDESS."""
    _, _, bundle, _ = trained
    tess = extract_table(load_dataset([str(TESS / "OAF_angry"), str(TESS / "YAF_sad")], "tess")[:60], n_jobs=2)
    held_out = extract_table(
        load_dataset([str(RAVDESS / "Actor_15"), str(RAVDESS / "Actor_16")], "ravdess", emotions=LABELS), n_jobs=2
    )
    s_tess, s_rav = bundle.ood_scores(tess.X), bundle.ood_scores(held_out.X)
    assert np.median(s_tess) > np.median(s_rav)
    cal_tess = bundle.predict_proba(tess.X)
    # the distance-aware temperature never makes a farther file more confident than plain scaling would
    assert bundle.trust["temperature"][MODE_GLOBAL]["growth"] >= 0.0
    assert cal_tess.max(1).mean() < bundle.predict_proba(tess.X, calibrated=False).max(1).mean()


def test_bundles_of_the_old_feature_version_are_refused(tmp_path):
    """A ser-feat-2 bundle (trained before gain normalisation) is refused with a retrain message."""
    from tests.unit.test_bundle import SMALL as TINY
    from tests.unit.test_bundle import _table

    b = train_bundle(_table(), labels=["calm", "angry", "sad"], params=TINY)
    b.feature_version = "ser-feat-2"
    p = tmp_path / "old.npz"
    M.save_bundle(b, p)
    with pytest.raises(M.BundleError, match=r"ser-feat-2.*retrain it with `ser-batch train`"):
        M.load_bundle(p)
