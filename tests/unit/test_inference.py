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
from ser_model.model import ModelBundle, build_pipeline, load_bundle
from tests.conftest import REPO


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


@pytest.mark.parametrize(("n_classes", "dtype"), [(4, np.float32), (2, np.float64)])
def test_a_pca_step_folds_into_the_first_layer(n_classes, dtype):
    X, y = _data(n_classes, d=30, dtype=dtype)
    pipe = build_pipeline(hidden_layer_sizes=(16,), max_iter=60, alpha=1e-3, n_components=8)
    assert [name for name, _ in pipe.steps] == ["scaler", "pca", "mlp"]
    _fit(pipe, X, y)
    w = MLPWeights.from_pipeline(pipe)
    assert w.n_features == 30 and w.coefs[0].shape == (30, 16) and w.coefs[0].dtype == pipe["mlp"].coefs_[0].dtype
    ref = pipe.predict_proba(X)
    np.testing.assert_allclose(w.predict_proba(X), ref, rtol=1e-4, atol=1e-5 if dtype == np.float32 else 1e-10)
    # the bundle stores the folded arrays: a loaded bundle labels as the fitted pipeline did
    b = ModelBundle(pipeline=pipe, labels=[f"l{i}" for i in range(n_classes)])
    np.testing.assert_allclose(b.predict_proba(X[:9]), ref[:9], rtol=1e-4, atol=1e-5)
    whitened = build_pipeline(hidden_layer_sizes=(4,), max_iter=5, n_components=3)
    whitened.set_params(pca__whiten=True)
    _fit(whitened, X, y)
    with pytest.raises(ValueError, match="not whitened"):
        MLPWeights.from_pipeline(whitened)


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


def test_bundle_loads_as_data_without_scikit_learn_or_joblib(tmp_path):
    X, y = _data(3, d=989)
    pipe = build_pipeline(hidden_layer_sizes=(32,), max_iter=20)
    _fit(pipe, X, y)
    b = ModelBundle(pipeline=pipe, labels=["calm", "angry", "sad"], speaker_pipeline=pipe)
    path = tmp_path / "m.npz"
    M.save_bundle(b, path)
    with np.load(path, allow_pickle=False) as z:  # a plain .npz: JSON document + numeric arrays
        assert "bundle.json" in z.files
        assert all(z[k].dtype.kind in "biuf" for k in z.files if k != "bundle.json")
    assert pipe.named_steps["mlp"].coefs_ is not None  # saving did not strip the caller's model

    code = (
        "import sys, numpy as np\n"
        "from ser_model.model import load_bundle\n"
        f"b = load_bundle({str(path)!r})\n"
        "p = b.predict_proba(np.ones((2, 989), np.float32))\n"
        "ps, modes = b.predict_proba_speakers(np.ones((9, 989), np.float32), ['a'] * 9)\n"
        "assert p.shape == (2, 3) and set(modes) == {'speaker-adaptive'}\n"
        "print('sklearn' in sys.modules, 'joblib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"

    loaded = load_bundle(path)
    np.testing.assert_allclose(loaded.predict_proba(X[:7]), pipe.predict_proba(X[:7]), rtol=1e-5, atol=1e-6)
    with pytest.raises(M.BundleError, match="not the fitted scikit-learn pipelines"):
        loaded.pipeline  # noqa: B018 - the property raises
    # a loaded bundle saved again is the same file, byte for byte
    M.save_bundle(loaded, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()


def test_format_1_bundle_is_refused_and_converts_to_the_same_model(tmp_path):
    X, y = _data(3)
    pipe = build_pipeline(hidden_layer_sizes=(8,), max_iter=20)
    _fit(pipe, X, y)
    buf = io.BytesIO()
    joblib.dump(
        {"format": 1, "pipeline": pipe, "labels": ["a", "b", "c"], "feature_version": M.FEATURE_VERSION, "meta": {}},
        buf,
    )
    data = buf.getvalue()
    with pytest.raises(M.LegacyBundleError, match="models convert"):
        M.bundle_from_bytes(data, M.sha256_bytes(data))
    old = tmp_path / "old.joblib"
    old.write_bytes(data)
    M.convert_legacy_bundle(old, tmp_path / "new.npz", trust_pickle=True)
    b = load_bundle(tmp_path / "new.npz")
    np.testing.assert_allclose(b.predict_proba(X), pipe.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert not b.has_speaker_pipeline and b.speaker_pipeline is None
