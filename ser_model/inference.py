"""The forward pass of a fitted StandardScaler + MLPClassifier pipeline, in numpy.

A worker classifies with the weights of the scikit-learn model it was given, but it does not need
scikit-learn to do so: prediction is a standardisation, one matrix product per layer, and a softmax.
:class:`MLPWeights` holds those arrays (taken from the fitted pipeline by :meth:`MLPWeights.from_pipeline`)
and computes exactly what ``Pipeline.predict_proba`` computes, in the same order of operations and
dtypes (scikit-learn 1.8: ``StandardScaler.transform`` then ``MLPClassifier._forward_pass_fast``), so the
probabilities agree to float rounding (``tests/unit/test_inference.py`` compares them on real features).

Why: importing scikit-learn (it imports ``scipy.stats``) and unpickling its objects cost about 0.65 s of
every ``ser-batch submit`` and every worker start, more than labelling 200 files; and
``predict_proba``'s input validation costs about 0.25 ms per call, as much as the whole forward pass of
a chunk. Training, cross-validation and everything that fits a model still use scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
"""The hidden-layer activations of ``MLPClassifier`` (its ``activation`` parameter)."""


def _logistic(z: np.ndarray) -> np.ndarray:
    # scipy.special.expit without importing scipy.special: exp(-z) overflows to inf for z < -709,
    # which gives the correct limit 0
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        np.reciprocal(z, out=z)
    return z


def _hidden(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "logistic":
        return _logistic(z)
    return z  # identity


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in place, as ``sklearn.neural_network._base.softmax`` (max subtracted first)."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass(frozen=True)
class MLPWeights:
    """The arrays of a fitted ``Pipeline([("scaler", StandardScaler), ("mlp", MLPClassifier)])``.

    Attributes:
        mean: the scaler's ``mean_`` ``(n_features,)``, or None (``with_mean=False``).
        scale: the scaler's ``scale_`` ``(n_features,)`` (zero variances already replaced by 1), or None.
        coefs: the MLP's ``coefs_``: one ``(n_in, n_out)`` matrix per layer.
        intercepts: the MLP's ``intercepts_``: one ``(n_out,)`` vector per layer.
        activation: hidden-layer activation, one of :data:`HIDDEN_ACTIVATIONS`.
        out_activation: ``"softmax"`` (three or more classes) or ``"logistic"`` (two classes).
        classes: the MLP's ``classes_`` (integer label indices), in the order of its output columns.
    """

    mean: np.ndarray | None
    scale: np.ndarray | None
    coefs: tuple[np.ndarray, ...]
    intercepts: tuple[np.ndarray, ...]
    activation: str
    out_activation: str
    classes: np.ndarray

    def __post_init__(self) -> None:
        if self.activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"unknown hidden activation {self.activation!r}")
        if self.out_activation not in ("softmax", "logistic"):
            raise ValueError(f"unknown output activation {self.out_activation!r}")
        if not self.coefs or len(self.coefs) != len(self.intercepts):
            raise ValueError("an MLP needs one intercept vector per weight matrix")

    @property
    def n_features(self) -> int:
        """Number of input features (rows of the first weight matrix)."""
        return int(self.coefs[0].shape[0])

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> MLPWeights:
        """The arrays of a fitted scaler + MLP pipeline (read by attribute; scikit-learn is not imported).

        A ``pca`` step between the two (:func:`ser_model.model.build_pipeline` with ``n_components``;
        not whitened) is folded into the first layer: ``((x - m) @ C.T) @ W + b`` is
        ``x @ (C.T @ W) + (b - m @ C.T @ W)`` for the PCA's ``mean_`` ``m`` ``(n_features,)`` and
        ``components_`` ``C`` ``(k, n_features)``, computed in float64 and stored in the MLP's dtype,
        so the weights take the features themselves (``n_features`` rows).

        Raises:
            ValueError: the pipeline is not a fitted ``scaler`` (+ ``pca``) + ``mlp`` pipeline of that form.
        """
        steps = getattr(pipeline, "named_steps", {})
        scaler, pca, mlp = steps.get("scaler"), steps.get("pca"), steps.get("mlp")
        if scaler is None or mlp is None or len(steps) != 2 + (pca is not None) or not hasattr(mlp, "coefs_"):
            raise ValueError(
                "expected a fitted Pipeline([('scaler', StandardScaler), ('pca', PCA) (optional), ('mlp', MLPClassifier)])"
            )
        coefs, intercepts = list(mlp.coefs_), list(mlp.intercepts_)
        if pca is not None:
            if getattr(pca, "whiten", False) or not hasattr(pca, "components_"):
                raise ValueError("a pca step must be fitted and not whitened to fold into the first layer")
            w = np.asarray(pca.components_, dtype=np.float64).T @ np.asarray(coefs[0], dtype=np.float64)
            b = np.asarray(intercepts[0], dtype=np.float64) - np.asarray(pca.mean_, dtype=np.float64) @ w
            coefs[0], intercepts[0] = w.astype(coefs[0].dtype), b.astype(intercepts[0].dtype)
        return cls(
            mean=getattr(scaler, "mean_", None),
            scale=getattr(scaler, "scale_", None),
            coefs=tuple(coefs),
            intercepts=tuple(intercepts),
            activation=str(mlp.activation),
            out_activation=str(mlp.out_activation_),
            classes=np.asarray(mlp.classes_, dtype=int),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays, strings and lists (what a bundle stores; no class needed to read it back)."""
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coefs": list(self.coefs),
            "intercepts": list(self.intercepts),
            "activation": self.activation,
            "out_activation": self.out_activation,
            "classes": self.classes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPWeights:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mean=d["mean"],
            scale=d["scale"],
            coefs=tuple(d["coefs"]),
            intercepts=tuple(d["intercepts"]),
            activation=str(d["activation"]),
            out_activation=str(d["out_activation"]),
            classes=np.asarray(d["classes"], dtype=int),
        )

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of the MLP's classes, as ``Pipeline.predict_proba`` returns them.

        Args:
            X: features ``(n, n_features)`` or one vector ``(n_features,)``; float32 stays float32
                through the standardisation, as in ``StandardScaler.transform``.

        Returns:
            ``(n, len(classes))``, rows summing to 1, column ``j`` the class ``classes[j]``; float32
            when features and weights are float32 (as scikit-learn returns it), else float64. A row's
            probabilities computed in a batch and alone can differ by BLAS rounding (about 1e-7 in
            float32), so the workers classify one file per call (results independent of chunking).

        Raises:
            ValueError: wrong number of features, or a NaN or infinite value (scikit-learn's
                input validation raises the same).
        """
        X = np.atleast_2d(np.asarray(X))
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[-1]} features, but the model expects {self.n_features}")
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float64)
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity.")
        a = X.copy()
        if self.mean is not None:
            a -= self.mean
        if self.scale is not None:
            a /= self.scale
        last = len(self.coefs) - 1
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            a = a @ w
            a += b
            if i != last:
                a = _hidden(self.activation, a)
        if self.out_activation == "logistic":  # two classes: one output unit, p(classes[1])
            p = _logistic(a).ravel()
            return np.column_stack([1.0 - p, p])
        return _softmax(a)
