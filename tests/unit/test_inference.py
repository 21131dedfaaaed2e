"""The numpy forward pass (ser_model.inference) against scikit-learn, and bundles that load without it."""

import io
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest

from ser_model import model as M
from ser_model.inference import MLPWeights
from ser_model.model import DEFAULT_MODEL_PATH, ModelBundle, build_pipeline, load_bundle
from tests.conftest import RAVDESS, REPO, needs_corpus


def _data(n_classes: int, n_per: int = 40, d: int = 12, dtype=np.float32):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n_classes * n_per, d)) * rng.uniform(0.1, 50.0, d) + rng.uniform(-20, 20, d)
    y = np.repeat(np.arange(n_classes), n_per)
    X[np.arange(len(y)), y] += 3.0 * X[:, y].std()
    return X.astype(dtype), y


def _fit(pipe, X, y):
    with warnings.catch_warnings():  # a few epochs: not converged, which does not matter here
        warnings.simplefilter("ignore")
        return pipe.fit(X, y)


@pytest.mark.parametrize(
    ("n_classes", "activation", "layers", "dtype"),
    [
        (4, "relu", (16,), np.float32),
        (3, "tanh", (8, 6), np.float64),
        (2, "logistic", (10,), np.float32),  # two classes: one logistic output unit in scikit-learn
        (5, "identity", (7,), np.float64),
    ],
)
def test_forward_pass_equals_scikit_learn(n_classes, activation, layers, dtype):
    X, y = _data(n_classes, dtype=dtype)
    pipe = build_pipeline(hidden_layer_sizes=layers, max_iter=60, alpha=1e-3)
    pipe.set_params(mlp__activation=activation)
    _fit(pipe, X, y)
    w = MLPWeights.from_pipeline(pipe)
    ref = pipe.predict_proba(X)
    got = w.predict_proba(X)
    assert got.shape == ref.shape == (len(y), n_classes) and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 if dtype == np.float32 else 1e-12)
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.99
    np.testing.assert_allclose(w.predict_proba(X[3]), ref[3:4], rtol=1e-5, atol=1e-6)  # one vector


def test_bad_input_is_refused_like_scikit_learn():
    X, y = _data(3)
    pipe = build_pipeline(hidden_layer_sizes=(4,), max_iter=5)
    _fit(pipe, X, y)
    w = MLPWeights.from_pipeline(pipe)
    with pytest.raises(ValueError, match="features"):
        w.predict_proba(X[:, :5])
    bad = X[:2].copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        w.predict_proba(bad)
    with pytest.raises(ValueError, match="fitted"):
        MLPWeights.from_pipeline(build_pipeline())


@needs_corpus
def test_default_model_equals_its_scikit_learn_pipelines_on_real_files():
    from ser_model.audio import load_audio
    from ser_model.features import extract_features

    paths = sorted(RAVDESS.glob("Actor_0[34]/*.flac"))[::6]
    X = np.vstack([extract_features(load_audio(str(p))[0]) for p in paths])
    b = load_bundle(DEFAULT_MODEL_PATH)
    for mode, pipe in (("global", b.pipeline), ("speaker-adaptive", b.speaker_pipeline)):
        ref = pipe.predict_proba(X)
        got = b.weights[mode].predict_proba(X)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_bundle_stores_weights_once_and_loads_without_scikit_learn(tmp_path):
    X, y = _data(3, d=989)
    pipe = build_pipeline(hidden_layer_sizes=(32,), max_iter=20)
    _fit(pipe, X, y)
    b = ModelBundle(pipeline=pipe, labels=["calm", "angry", "sad"], speaker_pipeline=pipe)
    path = tmp_path / "m.joblib"
    M.save_bundle(b, path)
    outer = joblib.load(path)
    assert outer["format"] == 2
    inner = joblib.load(io.BytesIO(outer["sklearn"]))
    assert inner["pipeline"].named_steps["mlp"].coefs_ is None  # the matrices are stored once, as weights
    assert pipe.named_steps["mlp"].coefs_ is not None  # saving did not strip the caller's model

    code = (
        "import sys, numpy as np\n"
        "from ser_model.model import load_bundle\n"
        f"b = load_bundle({str(path)!r})\n"
        "p = b.predict_proba(np.ones((2, 989), np.float32))\n"
        "ps, modes = b.predict_proba_speakers(np.ones((9, 989), np.float32), ['a'] * 9)\n"
        "assert p.shape == (2, 3) and set(modes) == {'speaker-adaptive'}\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

    loaded = load_bundle(path)
    np.testing.assert_allclose(loaded.predict_proba(X[:7]), b.predict_proba(X[:7]))
    # the scikit-learn pipeline comes back whole on first use, and predicts as before
    np.testing.assert_allclose(loaded.pipeline.predict_proba(X[:7]), pipe.predict_proba(X[:7]))
    # a loaded bundle saved again without touching its pipelines is the same model
    M.save_bundle(loaded, tmp_path / "again.joblib")
    again = load_bundle(tmp_path / "again.joblib")
    np.testing.assert_allclose(again.pipeline.predict_proba(X[:7]), pipe.predict_proba(X[:7]))


def test_format_1_bundle_still_loads_and_predicts_the_same(tmp_path):
    X, y = _data(3)
    pipe = build_pipeline(hidden_layer_sizes=(8,), max_iter=20)
    _fit(pipe, X, y)
    buf = io.BytesIO()
    joblib.dump(
        {"format": 1, "pipeline": pipe, "labels": ["a", "b", "c"], "feature_version": M.FEATURE_VERSION, "meta": {}},
        buf,
    )
    data = buf.getvalue()
    b = M.bundle_from_bytes(data, M.sha256_bytes(data))
    np.testing.assert_allclose(b.predict_proba(X), pipe.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert not b.has_speaker_pipeline
