"""Arousal and valence: how activated and how positive a recording sounds, each in [0, 1].

0.5 is the neutral point of each dimension: arousal above 0.5 is *high* (activated: angry, happy,
fearful, surprised), below it *low* (neutral, calm, sad, disgust); valence above 0.5 is *positive*
(happy, surprised, neutral, calm), below it *negative* (sad, angry, fearful, disgust). These binary
groupings are the ones cross-corpus work maps categorical corpora onto (Schuller et al. 2010,
"Cross-corpus acoustic emotion recognition: variances and strategies", IEEE Trans. Affective
Computing 1(2)), and they carry across languages where the eight categories do not.

The continuous target of a category (:data:`CATEGORY_POSITIONS`) places it in the quadrant of
Russell's circumplex of affect (Russell 1980, "A circumplex model of affect", J. Personality and
Social Psychology 39(6)) that those groupings give, at a distance from the centre that orders the
categories inside a quadrant (angry more activated than happy, calm less than neutral). The numbers
are this project's coarse placement, not ratings: they are documented here so that a reader can
disagree with them, and only their side of 0.5 enters the binary evaluation.

Two ways to get the dimensions of a recording:

* :func:`mapped_dimensions`: the category head's probabilities weighted by the positions (no
  training; what every bundle can do);
* :class:`DimensionHead`: a head trained on the same features (numpy forward pass at inference).
  Both packaged models' heads (:func:`ser_model.training.fit_dimension_head`, one per pipeline) are
  two linear logistic regressions: the probability that a recording is high-arousal and that it is
  positive, learned from the side of 0.5 of each training file's category, so that a corpus with only
  some categories still teaches both dimensions.

A bundle with heads gives the mean of the two (:meth:`ser_model.model.ModelBundle.dimensions`):
leave-one-corpus-out that mean beat the mapping on arousal (files alone, batch-normalised and
speaker-adaptive) and on valence for files alone, and a non-linear (MLP) regression onto the positions lost to both
(``benchmarks/results/dimensions.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DIMENSIONS: tuple[str, str] = ("arousal", "valence")
"""Column order of every ``(n, 2)`` array here."""

CATEGORY_POSITIONS: dict[str, tuple[float, float]] = {
    # label: (arousal, valence), each in [0, 1], 0.5 the neutral point
    "neutral": (0.35, 0.60),
    "calm": (0.20, 0.70),
    "happy": (0.75, 0.85),
    "surprised": (0.85, 0.65),
    "sad": (0.25, 0.15),
    "angry": (0.85, 0.15),
    "fearful": (0.80, 0.20),
    "disgust": (0.40, 0.15),
}
"""Where each category sits on (arousal, valence); see the module docstring for the source."""


def positions(labels: Sequence[str]) -> np.ndarray:
    """The (arousal, valence) targets of category labels.

    Args:
        labels: category names (``"angry"``, ...), length ``n``.

    Returns:
        float64 ``(n, 2)``.

    Raises:
        KeyError: a label with no position (not one of the eight RAVDESS emotions).
    """
    try:
        return np.asarray([CATEGORY_POSITIONS[str(lab)] for lab in labels], dtype=np.float64).reshape(-1, 2)
    except KeyError as e:
        raise KeyError(f"no arousal/valence position for label {e.args[0]!r}") from None


def has_positions(labels: Sequence[str]) -> bool:
    """True when every label has a position (the eight RAVDESS emotions or a subset)."""
    return all(str(lab) in CATEGORY_POSITIONS for lab in labels)


def mapped_dimensions(proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Arousal and valence as the probability-weighted positions of the categories.

    Args:
        proba: class probabilities ``(n, len(labels))``, rows summing to 1.
        labels: the columns' labels.

    Returns:
        float64 ``(n, 2)`` in [0, 1]: ``proba @ positions(labels)``.

    Raises:
        KeyError: a label with no position.
    """
    p = np.atleast_2d(np.asarray(proba, dtype=np.float64))
    return np.clip(p @ positions(labels), 0.0, 1.0)


def binary(values: np.ndarray) -> np.ndarray:
    """High/positive (True) where a dimension is above 0.5: ``values > 0.5`` (same shape)."""
    return np.asarray(values) > 0.5


def dimension_rows(
    bundle: Any,
    X: np.ndarray,
    proba: np.ndarray,
    modes: Sequence[str] | None = None,
    groups: Sequence[str | None] | None = None,
) -> list[tuple[float | None, float | None]]:
    """Per-row ``(arousal, valence)`` from a bundle's ``dimensions`` (:meth:`ser_model.model.ModelBundle.dimensions`).

    Args:
        bundle: the model; one without a ``dimensions`` method gives Nones.
        X: raw features ``(n, n_features)``.
        proba: calibrated probabilities ``(n, len(labels))``.
        modes: per-row analysis mode, or None (every row labelled alone).
        groups: per-row normalisation key of rows of a normalised mode (speaker or batch key), or None.

    Returns:
        ``n`` pairs of floats in [0, 1], or ``(None, None)`` for every row when the bundle gives no
        dimensions (labels without a position).
    """
    dimensions = getattr(bundle, "dimensions", None)
    d = dimensions(X, proba, modes, groups) if dimensions is not None else None
    n = int(np.atleast_2d(proba).shape[0])
    if d is None:
        return [(None, None)] * n
    d = np.asarray(d, dtype=np.float64).reshape(n, 2)
    return [(float(a), float(v)) for a, v in d]


@dataclass
class DimensionHead:
    """A head from features to (arousal, valence), run with numpy at inference.

    ``predict`` standardises the features, applies the layers (``activation`` between them) and then
    ``output``: ``"identity"`` for a regression onto the positions, ``"logistic"`` (the sigmoid) for
    the linear logistic head of :func:`ser_model.training.fit_dimension_head`, whose two outputs are
    the probabilities of high arousal and of positive valence.

    Attributes:
        mean: per-feature mean of the scaler, ``(n_features,)``.
        scale: per-feature standard deviation, ``(n_features,)``.
        coefs: weight matrices of the layers (the last one ``(n_hidden or n_features, 2)``).
        intercepts: bias vectors of the layers.
        activation: hidden activation (``"relu"``, ``"tanh"`` or ``"logistic"``).
        meta: how it was trained (targets, corpora, metrics).
        output: output function, ``"identity"`` or ``"logistic"``.
    """

    mean: np.ndarray
    scale: np.ndarray
    coefs: list[np.ndarray]
    intercepts: list[np.ndarray]
    activation: str = "relu"
    meta: dict[str, Any] | None = None
    output: str = "identity"

    @property
    def n_features(self) -> int:
        """Width of the input."""
        return int(self.mean.shape[0])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Arousal and valence of feature rows.

        Args:
            X: features ``(n, n_features)``.

        Returns:
            float64 ``(n, 2)`` clipped to [0, 1].

        Raises:
            ValueError: ``X`` has another width.
        """
        from ser_model.threads import one_blas_thread

        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.n_features:
            raise ValueError(f"dimension head takes {self.n_features} features, got {X.shape[1]}")
        with one_blas_thread():
            h = (X - self.mean) / self.scale
            for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
                h = h @ w + b
                if i < len(self.coefs) - 1:
                    h = _activate(self.activation, h)
            if self.output != "identity":
                h = _activate(self.output, h)
        return np.clip(h, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Arrays and metadata for a bundle document (see :mod:`ser_model.bundle_io`)."""
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coefs": list(self.coefs),
            "intercepts": list(self.intercepts),
            "activation": self.activation,
            "meta": self.meta or {},
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DimensionHead:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float64),
            scale=np.asarray(d["scale"], dtype=np.float64),
            coefs=[np.asarray(c) for c in d["coefs"]],
            intercepts=[np.asarray(b) for b in d["intercepts"]],
            activation=str(d.get("activation", "relu")),
            meta=dict(d.get("meta") or {}),
            output=_checked_output(str(d.get("output", "identity"))),
        )


def _checked_output(name: str) -> str:
    if name not in ("identity", "logistic"):
        raise ValueError(f"unknown output function {name!r}")
    return name


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "logistic":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow for large |z|
    raise ValueError(f"unknown activation {name!r}")


def uar_binary(truth: np.ndarray, pred: np.ndarray) -> float:
    """Unweighted average recall of a binary decision (mean of the recall of True and of False,
    over the classes present in ``truth``).

    Args:
        truth: bool ``(n,)``.
        pred: bool ``(n,)``.

    Returns:
        UAR in [0, 1]; NaN for empty input.
    """
    truth = np.asarray(truth, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    recalls = [float(np.mean(pred[truth == c] == c)) for c in (True, False) if (truth == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two series (Lin 1989, Biometrics 45(1)):
    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``, population moments.

    Returns:
        CCC in [-1, 1]; NaN when both series are constant or empty.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    den = x.var() + y.var() + (mx - my) ** 2
    return float(2 * np.mean((x - mx) * (y - my)) / den) if den > 0 else float("nan")
