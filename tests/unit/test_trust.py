"""Calibration, out-of-domain scores and batch warnings (ser_model.trust) on synthetic data."""

import numpy as np
import pytest

from ser_model.trust import (
    apply_temperature,
    batch_warnings,
    expected_calibration_error,
    fit_ood,
    fit_ood_threshold,
    fit_temperature,
    label_prior,
    low_confidence_threshold,
)


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_sample(n=6000, k=8, seed=0):
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    p = _softmax(z)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z, y


def test_apply_temperature_keeps_label_and_softens():
    z, _ = _calibrated_sample(200)
    p = _softmax(z)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-9)
    soft = apply_temperature(p, 2.0)
    np.testing.assert_array_equal(soft.argmax(1), p.argmax(1))
    assert (soft.max(1) <= p.max(1) + 1e-12).all() and soft.max(1).mean() < p.max(1).mean()
    np.testing.assert_allclose(soft.sum(1), 1.0)
    with pytest.raises(ValueError):
        apply_temperature(p, 0.0)


def test_fit_temperature_undoes_overconfidence_and_ece_drops():
    z, y = _calibrated_sample()
    over = _softmax(3.0 * z)  # the same model, three times too sharp
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(over, y)
    after = expected_calibration_error(apply_temperature(over, t), y)
    assert before > 0.1 and after < 0.03
    # the calibrated model's mean confidence matches its accuracy
    cal = apply_temperature(over, t)
    assert abs(cal.max(1).mean() - (cal.argmax(1) == y).mean()) < 0.03


def test_low_confidence_threshold_reaches_target_on_accepted_rows():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.1, 1.0, 3000)
    correct = rng.uniform(size=3000) < conf  # calibrated: P(correct) = confidence
    t = low_confidence_threshold(conf, correct, target_wa=0.75)
    kept = conf >= t
    assert correct[kept].mean() >= 0.75
    assert 0.3 < t < 0.8  # accepts a real share, not just the top rows
    assert low_confidence_threshold(np.full(50, 0.9), np.ones(50, bool)) == 0.0


def test_ood_scores_in_domain_about_one_and_threshold_flags_shifted_data():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(5, 50))
    X = rng.normal(size=(800, 5)) @ A  # correlated 50-dim features of rank 5 plus noise
    X = X + 0.1 * rng.normal(size=X.shape)
    det = fit_ood(X[:600], n_components=5)
    held_out = det.score(X[600:])
    assert 0.5 < np.median(held_out) < 2.0
    det.threshold = fit_ood_threshold(held_out, 99.0)
    _, flags_in = det.flags(X[600:])
    assert flags_in.mean() <= 0.02
    # a shift along a direction the training data never varied in (the residual term catches it)
    shifted = X[600:] + 2.0 * rng.normal(size=(1, 50))
    _, flags_out = det.flags(shifted)
    assert flags_out.mean() > 0.9


def test_ood_detector_round_trips_through_a_dict():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 12))
    det = fit_ood(X, n_components=4)
    det.threshold = 1.5
    from ser_model.trust import OODDetector

    det2 = OODDetector.from_dict(det.to_dict())
    np.testing.assert_allclose(det2.score(X), det.score(X))
    assert det2.threshold == 1.5


def test_batch_warnings_rules():
    prior = label_prior(["angry"] * 10 + ["sad"] * 10 + ["calm"] * 80, ["angry", "sad", "calm"])
    assert prior == {"angry": 0.1, "sad": 0.1, "calm": 0.8}
    w = batch_warnings(n_labelled=100, n_out_of_domain=62, label_counts={"angry": 82, "sad": 18}, train_prior=prior)
    codes = {x["code"] for x in w}
    assert codes == {"out_of_domain", "label_collapse"}
    assert "62% of these recordings are unlike the training data" in w[0]["message"]
    # a label that is frequent in training may dominate a batch without a warning
    assert (
        batch_warnings(n_labelled=100, n_out_of_domain=5, label_counts={"calm": 90, "sad": 10}, train_prior=prior) == []
    )
    # tiny batches get none
    assert batch_warnings(n_labelled=5, n_out_of_domain=5, label_counts={"angry": 5}, train_prior=prior) == []


def test_distance_temperature_softens_only_far_files_and_is_fitted_where_far_files_are_worse():
    from ser_model.trust import DistanceTemperature, fit_distance_temperature

    t = DistanceTemperature(t0=1.5, growth=2.0, ref=1.0)
    np.testing.assert_allclose(t.temperatures(np.array([0.5, 1.0, 2.0]), 3), [1.5, 1.5, 1.5 * 3.0])
    assert DistanceTemperature.from_dict(t.to_dict()) == t and DistanceTemperature.from_dict(1.3).growth == 0.0
    # synthetic: near files are calibrated at T=2, far files are much more over-confident
    z, y = _calibrated_sample(8000, seed=4)
    rng = np.random.default_rng(5)
    scores = rng.uniform(0.5, 2.0, len(y))
    sharp = np.where(scores > 1.25, 6.0, 2.0)[:, None]
    proba = _softmax(sharp * z)
    fit = fit_distance_temperature(proba, y, scores)
    assert fit.growth > 0.5
    cal = apply_temperature(proba, fit.temperatures(scores, len(y)))
    far = scores > 1.5
    assert abs(cal[far].max(1).mean() - (cal[far].argmax(1) == y[far]).mean()) < 0.06
    assert expected_calibration_error(cal, y) < expected_calibration_error(
        apply_temperature(proba, fit_temperature(proba, y)), y
    )
    assert fit.ref < fit.s_max <= scores.max()  # the cap lies within the range of the fit ...
    beyond = fit.temperatures(np.array([scores.max(), scores.max() + 1.0, scores.max() + 10.0]), 3)
    assert beyond[0] == beyond[1] == beyond[2]  # ... and nothing is extrapolated past it
    assert DistanceTemperature.from_dict(fit.to_dict()) == fit


def test_fitted_cap_stops_the_temperature_where_accuracy_stops_falling():
    """Far files (scores 2-8) are as over-confident as files at 2: a temperature that keeps growing
    with the score flattens them below their accuracy; the fitted cap does not."""
    from dataclasses import replace

    from ser_model.trust import fit_distance_temperature

    z, y = _calibrated_sample(12000, seed=7)
    rng = np.random.default_rng(8)
    scores = np.concatenate([rng.uniform(0.5, 2.0, 8000), rng.uniform(2.0, 8.0, 4000)])
    sharp = (2.0 + 2.0 * np.clip(scores - 1.0, 0.0, 1.0))[:, None]  # over-confidence grows up to s = 2, then flat
    proba = _softmax(sharp * z)
    fit = fit_distance_temperature(proba, y, scores)
    assert 1.5 < fit.s_max < 3.0 and fit.growth > 0.0
    far = scores > 4.0
    cal = apply_temperature(proba, fit.temperatures(scores, len(y)))
    gap = cal[far].max(1).mean() - (cal[far].argmax(1) == y[far]).mean()
    assert abs(gap) < 0.05
    uncapped = replace(fit, s_max=float("inf"))
    flat = apply_temperature(proba, uncapped.temperatures(scores, len(y)))
    assert flat[far].max(1).mean() - (flat[far].argmax(1) == y[far]).mean() < gap - 0.05  # under-confident
    given = fit_distance_temperature(proba, y, scores, cap=3.0)
    assert given.s_max == 3.0


@pytest.mark.parametrize("shape", [(300, 40), (30, 60)])
def test_ood_detector_axes_are_those_of_the_svd(shape):
    """The leading axes from the Gram matrix's top eigenpairs score like a full SVD (rows > or < columns)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal(shape) @ np.diag(np.linspace(3.0, 0.1, shape[1])) + 5.0
    det = fit_ood(X, n_components=8)
    Z = (X - X.mean(0)) / X.std(0)
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    np.testing.assert_allclose(det.variances, s[:8] ** 2 / (shape[0] - 1), rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(det.components * vt[:8], axis=1)), 1.0, atol=1e-8)
    Xn = rng.standard_normal((20, shape[1])) * 2.0
    P = ((Xn - X.mean(0)) / X.std(0)) @ vt[:8].T
    maha = np.sum(P * P / (s[:8] ** 2 / (shape[0] - 1)), axis=1)
    assert np.all(np.isfinite(det.score(Xn))) and det.score(Xn).shape == (20,)
    assert np.all(maha / shape[1] <= det.score(Xn) ** 2 + 1e-9)
