"""The classifier (StandardScaler + MLP) and the model bundle (format 3: JSON and numeric arrays).

A bundle holds the classifier's arrays (scaler and MLP weights), the label set,
the feature-extractor version and names, library versions, training metrics and the training data
fingerprint. Optionally a second fitted pipeline, ``speaker_pipeline``, trained on speaker-normalised
features (:mod:`ser_model.speaker`) for the speaker-adaptive mode: use
:meth:`ModelBundle.predict_proba_speakers` with the speaker key of every file; files whose speaker has
fewer than ``meta["min_speaker_files"]`` files in the batch, or no key, go through the global ``pipeline``
exactly as :meth:`ModelBundle.predict_proba` would. Bundles written before this option (no
``speaker_pipeline`` key) load with ``speaker_pipeline=None`` and classify every file globally.
Bundles also carry ``trust`` (:mod:`ser_model.trust`): the temperature of each pipeline, fitted on
out-of-fold probabilities, so that :meth:`ModelBundle.predict_proba` returns *calibrated* probabilities;
the out-of-domain detector with its threshold; the low-confidence thresholds; the training label prior.
Prediction needs only the pipelines' arrays (:class:`ser_model.inference.MLPWeights`), so a bundle
holds data only (``format`` 3, :mod:`ser_model.bundle_io`): JSON plus numeric ``.npy`` arrays in one
zip file, read with ``allow_pickle=False``. Loading a bundle never unpickles and never imports
scikit-learn; the fitted scikit-learn pipelines of a freshly trained bundle are not stored. Pickled
bundles of formats 1 and 2 are refused (:class:`LegacyBundleError`); ``ser-batch models convert FILE
--trust-pickle`` (:func:`convert_legacy_bundle`) turns one the operator trusts into format 3. A bundle's
SHA-256 is recorded next to it (``<file>.json`` sidecar, and the ``models`` table) and checked before the
file is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # scikit-learn is imported where it is used: reading a sidecar must stay light
    from sklearn.pipeline import Pipeline

from ser_model.dimensions import DimensionHead
from ser_model.features import FEATURE_VERSION, N_FEATURES
from ser_model.featureset import KNOWN_VERSIONS
from ser_model.inference import MLPWeights
from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER

BUNDLE_FORMAT = 3
DEFAULT_MODEL_PATH = Path(__file__).with_name("models") / "default.npz"
"""The default model shipped in the package: the accurate model (hand-crafted features + Whisper
encoder, multi-condition training on RAVDESS actors 1-20, 8 emotions)."""
FAST_MODEL_PATH = Path(__file__).with_name("models") / "fast.npz"
"""The fast model shipped in the package (hand-crafted features only, RAVDESS actors 1-20, 8 emotions)."""
PACKAGED_MODELS = {"default": DEFAULT_MODEL_PATH, "fast": FAST_MODEL_PATH}
"""Packaged models by the name users give them (``--model fast``)."""


class TrustFlags(NamedTuple):
    """Per-row trust flags (:meth:`ModelBundle.flags`); each ``(n,)`` array, or None without trust state."""

    ood_score: np.ndarray | None
    out_of_domain: np.ndarray | None
    low_confidence: np.ndarray | None


class BundleError(Exception):
    """A model bundle is missing, corrupt, tampered with, or built for another feature version."""


class LegacyBundleError(BundleError):
    """A pickled bundle (format 1 or 2): refused, since unpickling runs code (convert it once if trusted)."""


LEGACY_HINT = (
    "it is a pickled bundle (format 1 or 2), and unpickling can run arbitrary code, so ser-batch no longer "
    "opens them; if you trust where it came from, convert it once: "
    "`ser-batch models convert FILE --trust-pickle` (writes format 3)"
)


class ModelBundle:
    """A trained model and what it was trained on.

    Prediction (:meth:`predict_proba`, :meth:`predict_proba_speakers`) runs the numpy forward pass of
    :class:`ser_model.inference.MLPWeights`, so a bundle read from disk classifies without importing
    scikit-learn. The fitted scikit-learn pipelines exist only in a bundle trained in this process
    (:attr:`pipeline`, :attr:`speaker_pipeline`); a bundle read from disk has its arrays only.

    Args:
        pipeline: fitted ``Pipeline([("scaler", StandardScaler), ("mlp", MLPClassifier)])`` whose
            classes are the integer indices into ``labels`` (integer targets sidestep scikit-learn
            1.8's early-stopping validation, which fails on string targets); None when ``weights``
            is given (a bundle read from disk).
        labels: label set, in the order of the probability columns.
        feature_version: :data:`ser_model.features.FEATURE_VERSION` at training time.
        meta: everything else: ``metrics``, ``data_fingerprint``, ``versions``, ``created_at``,
            ``params``, ``n_train``, ``name``; with a speaker-adaptive pipeline also
            ``min_speaker_files`` and ``speaker_metrics``.
        speaker_pipeline: optional fitted pipeline of the same form for speaker z-normalised
            features (:func:`ser_model.speaker.speaker_normalise`), or None.
        trust: calibration and out-of-domain state (:func:`ser_model.training.fit_trust`):
            ``temperature`` and ``low_confidence_threshold`` (dicts by mode, ``"global"`` and
            ``"speaker-adaptive"``), ``ood`` (:meth:`ser_model.trust.OODDetector.to_dict`) and
            ``train_prior`` (label -> share). Empty: probabilities are the raw softmax and no flags
            are computed.
        weights: the two pipelines' arrays by mode (``"global"``, ``"speaker-adaptive"`` or None);
            default: taken from the pipelines.
        sklearn_state: accepted for compatibility and ignored: pickled pipelines (format 2) are never
            unpickled.

    Raises:
        ValueError: neither ``pipeline`` nor ``weights`` given.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        labels: Sequence[str] = (),
        feature_version: str = FEATURE_VERSION,
        meta: dict[str, Any] | None = None,
        speaker_pipeline: Pipeline | None = None,
        trust: dict[str, Any] | None = None,
        *,
        weights: dict[str, MLPWeights | None] | None = None,
        sklearn_state: bytes | None = None,
    ) -> None:
        if pipeline is None and weights is None:
            raise ValueError("a model bundle needs a fitted pipeline or its weights")
        self.labels = list(labels)
        self.feature_version = feature_version
        self.meta: dict[str, Any] = meta if meta is not None else {}
        self.trust: dict[str, Any] = dict(trust or {})
        self._pipelines: tuple[Pipeline, Pipeline | None] | None = (
            None if pipeline is None else (pipeline, speaker_pipeline)
        )
        if weights is None:
            weights = {
                MODE_GLOBAL: MLPWeights.from_pipeline(pipeline),
                MODE_SPEAKER: None if speaker_pipeline is None else MLPWeights.from_pipeline(speaker_pipeline),
            }
        self.weights: dict[str, MLPWeights | None] = weights
        self.dimension_head: DimensionHead | None = None
        self.dimension_heads: dict[str, DimensionHead] = {}
        """Heads of the normalised modes (:data:`MODE_SPEAKER`, :data:`MODE_BATCH`), fitted on the rows
        their pipelines were fitted on; :attr:`dimension_head` is the global one."""

    def dimensions(
        self,
        X: np.ndarray,
        proba: np.ndarray,
        modes: Sequence[str] | None = None,
        groups: Sequence[str | None] | None = None,
    ) -> np.ndarray | None:
        """Arousal and valence of rows, each in [0, 1] (0.5 the neutral point; :mod:`ser_model.dimensions`).

        Each row's pair is the mean of two estimates from the pipeline that labelled it (its mode):
        the probability-weighted category positions of ``proba``
        (:func:`ser_model.dimensions.mapped_dimensions`) and the mode's trained head
        (:attr:`dimension_head` for global rows, :attr:`dimension_heads` for speaker-adaptive and
        batch-normalised rows, which it takes z-normalised by their group's statistics as the
        pipeline did). Leave-one-corpus-out (``benchmarks/results/dimensions.md``) the mean beat the
        mapping on arousal for files alone, batch-normalised and speaker-adaptive (0.76 / 0.81 / 0.85
        against 0.75 / 0.77 / 0.81 mean UAR), on valence for files alone (0.69 against 0.67; 0.69 /
        0.70 against 0.70 / 0.71 in the normalised modes), and tied the head alone on files alone,
        while it keeps one scale for every row of a batch. Without a head for the row's mode (a bundle trained with
        ``--no-dimension-head`` or before the heads, or no ``groups`` given for normalised rows), the
        mapped positions alone.

        Args:
            X: raw features ``(n, n_features)`` of the rows.
            proba: their class probabilities ``(n, len(labels))``.
            modes: per-row analysis mode (:data:`ser_model.speaker.MODE_GLOBAL`, ``MODE_SPEAKER``,
                ``MODE_BATCH``; anything else counts as global), or None for all global.
            groups: per-row normalisation key (speaker or batch key) of the normalised rows, as given to
                :meth:`predict_proba_speakers` together with every other row of their groups; None
                leaves normalised rows to the mapping.

        Returns:
            float64 ``(n, 2)`` (arousal, valence), or None when a label of the bundle has no position
            (a model trained on labels other than the eight emotions; ``train`` fits no head for it).

        Raises:
            ValueError: ``modes`` or ``groups`` is not of length ``n``.
        """
        from ser_model.dimensions import has_positions, mapped_dimensions
        from ser_model.speaker import speaker_normalise

        X = np.atleast_2d(X)
        n = X.shape[0]
        row_modes = (
            [MODE_GLOBAL] * n
            if modes is None
            else [m if m in (MODE_SPEAKER, MODE_BATCH) else MODE_GLOBAL for m in modes]
        )
        if len(row_modes) != n or (groups is not None and len(groups) != n):
            raise ValueError(f"analysis modes / groups of another length than the {n} feature rows")
        heads = {MODE_GLOBAL: self.dimension_head, **self.dimension_heads}
        if not has_positions(self.labels):
            return None
        out = mapped_dimensions(proba, self.labels)
        for mode in set(row_modes):
            head = heads.get(mode)
            rows = np.asarray([m == mode for m in row_modes])
            if head is None or head.n_features != X.shape[1] or (mode != MODE_GLOBAL and groups is None):
                continue
            Xm = X[rows]
            if mode != MODE_GLOBAL:  # the group's statistics over all its rows, as predict_proba_speakers
                Xm = speaker_normalise(Xm, [g for g, r in zip(groups, rows, strict=True) if r], min_files=2)[0]  # type: ignore[arg-type]
            out[rows] = 0.5 * (out[rows] + head.predict(Xm))
        return out

    @property
    def encoder_info(self) -> dict[str, Any] | None:
        """``meta["encoder"]`` (name, SHA-256 of ``model.bin``, embedding size) of an accurate model, else None."""
        enc = self.meta.get("encoder")
        return dict(enc) if isinstance(enc, dict) else None

    def check_encoder(self) -> None:
        """Check that the encoder in force is the one this bundle was trained with (SHA-256 of ``model.bin``).

        A no-op for the fast feature set. Hashes the file only (cached per process); the encoder itself
        is loaded on the first :meth:`extract`, in the process that uses it (never before a fork).

        Raises:
            BundleError: the bundle lacks its encoder record, or the encoder differs or is missing.
        """
        from ser_model.encoder import EncoderError, default_encoder_dir, encoder_sha256
        from ser_model.featureset import needs_encoder

        if not needs_encoder(self.feature_version):
            return
        enc = self.encoder_info
        if not enc or not enc.get("sha256"):
            raise BundleError("model bundle uses a speech encoder but does not record which (meta.encoder)")
        try:
            got = encoder_sha256(default_encoder_dir())
        except EncoderError as e:
            raise BundleError(str(e)) from None
        if got != enc["sha256"]:
            raise BundleError(
                f"model bundle was trained with the encoder {enc.get('name')!r} (SHA-256 {enc['sha256'][:12]}...), "
                f"but the encoder in force has SHA-256 {got[:12]}...; set SER_ENCODER_DIR to that encoder "
                "or use the fast model (--model fast)"
            )

    def extract(self, y: np.ndarray) -> np.ndarray:
        """The feature vector this model takes, for one recording (:func:`ser_model.featureset.extract`).

        Args:
            y: mono samples ``(n,)`` at 16 kHz.

        Returns:
            float32 ``(n_features,)``.

        Raises:
            ser_model.audio.AudioError: too little sound after trimming.
            BundleError: the bundle's encoder cannot be loaded or is not the one it was trained with.
        """
        from ser_model.encoder import EncoderError, get_encoder
        from ser_model.featureset import extract, needs_encoder

        encoder = None
        if needs_encoder(self.feature_version):
            enc = self.encoder_info or {}
            try:
                encoder = get_encoder(expected_sha256=enc.get("sha256"))
            except EncoderError as e:
                raise BundleError(str(e)) from None
        return extract(y, self.feature_version, encoder)

    def _sklearn(self) -> tuple[Pipeline, Pipeline | None]:
        if self._pipelines is None:
            raise BundleError(
                "this bundle was read from a file: it stores the arrays prediction needs (format 3), not the "
                "fitted scikit-learn pipelines; use predict_proba or the weights"
            )
        return self._pipelines

    @property
    def pipeline(self) -> Pipeline:
        """The fitted global scikit-learn pipeline of a bundle trained in this process.

        Raises:
            BundleError: the bundle was read from a file (format 3 keeps arrays only).
        """
        return self._sklearn()[0]

    @property
    def speaker_pipeline(self) -> Pipeline | None:
        """The fitted speaker-adaptive pipeline, or None (as :attr:`pipeline`).

        Raises:
            BundleError: the bundle was read from a file and has a speaker-adaptive model.
        """
        if self._pipelines is None and not self.has_speaker_pipeline:
            return None
        return self._sklearn()[1]

    @property
    def has_batch_pipeline(self) -> bool:
        """Whether the bundle has a batch-normalised pipeline (:data:`ser_model.speaker.MODE_BATCH`)."""
        return self.weights.get(MODE_BATCH) is not None

    @property
    def has_speaker_pipeline(self) -> bool:
        """Whether the bundle has a speaker-adaptive model."""
        return self.weights.get(MODE_SPEAKER) is not None

    def ood_scores(self, X: np.ndarray) -> np.ndarray | None:
        """Out-of-domain scores ``(n,)`` of raw features (:class:`ser_model.trust.OODDetector`), or None."""
        from ser_model.trust import OODDetector

        if "ood" not in self.trust:
            return None
        return OODDetector.from_dict(self.trust["ood"]).score(X)

    def _calibrate(self, proba: np.ndarray, mode: str, X: np.ndarray) -> np.ndarray:
        """Apply the temperature of ``mode`` (a function of the rows' out-of-domain scores)."""
        from ser_model.trust import DistanceTemperature, apply_temperature

        spec = self.trust.get("temperature", {}).get(mode)
        if spec is None:
            return proba
        temp = DistanceTemperature.from_dict(spec)
        return apply_temperature(proba, temp.temperatures(self.ood_scores(X), proba.shape[0]))

    def flags(self, X: np.ndarray, proba: np.ndarray, modes: Sequence[str] | None = None) -> TrustFlags:
        """Out-of-domain score and flag, and the low-confidence flag, of every row.

        Args:
            X: raw (not speaker-normalised) features ``(n, N_FEATURES)``.
            proba: *calibrated* probabilities of those rows ``(n, len(labels))``.
            modes: per row ``"global"`` or ``"speaker-adaptive"`` (which threshold applies); default
                all global.

        Returns:
            :class:`TrustFlags`; its arrays are None when the bundle has no ``trust`` state.
        """
        X = np.atleast_2d(np.asarray(X))
        proba = np.atleast_2d(np.asarray(proba))
        if not self.trust:
            return TrustFlags(None, None, None)
        return self.flags_from_scores(self.ood_scores(X), proba.max(axis=1), modes)

    def flags_from_scores(
        self, scores: np.ndarray, confidence: np.ndarray, modes: Sequence[str] | None = None
    ) -> TrustFlags:
        """The flags of rows whose out-of-domain scores and calibrated confidences are known.

        Args:
            scores: out-of-domain scores ``(n,)`` (:meth:`ood_scores`, or a duration-weighted mean of
                segment scores).
            confidence: calibrated confidence of each row's label ``(n,)``.
            modes: per row ``"global"`` or ``"speaker-adaptive"`` (which low-confidence threshold
                applies); default all global.

        Returns:
            :class:`TrustFlags` (``scores`` against the out-of-domain threshold, ``confidence``
            against the mode's low-confidence threshold); arrays None without ``trust`` state.
        """
        if not self.trust:
            return TrustFlags(None, None, None)
        scores = np.asarray(scores, dtype=np.float64)
        thr = self.trust.get("low_confidence_threshold", {})
        modes = list(modes) if modes is not None else [MODE_GLOBAL] * scores.shape[0]
        t = np.array([float(thr.get(m, thr.get(MODE_GLOBAL, 0.0))) for m in modes])
        return TrustFlags(scores, scores > float(self.trust["ood"]["threshold"]), np.asarray(confidence) < t)

    @property
    def min_speaker_files(self) -> int:
        """Fewest files of one speaker for the speaker-adaptive mode (``meta`` or the library default)."""
        from ser_model.speaker import MIN_SPEAKER_FILES

        return int(self.meta.get("min_speaker_files", MIN_SPEAKER_FILES))

    def _proba(self, mode: str, X: np.ndarray) -> np.ndarray:
        from ser_model.threads import one_blas_thread

        w = self.weights[mode]
        assert w is not None
        with one_blas_thread():  # the same numbers whoever calls (ser_model.threads)
            proba = w.predict_proba(X)
        out = np.zeros((proba.shape[0], len(self.labels)), dtype=np.float64)
        out[:, w.classes] = proba
        return out

    def predict_proba(self, X: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Class probabilities, temperature-calibrated when the bundle has a calibrator.

        Args:
            X: features, shape ``(n, N_FEATURES)``.
            calibrated: apply the global temperature model (``trust["temperature"]["global"]``, a
                :class:`ser_model.trust.DistanceTemperature` of the rows' out-of-domain scores); False
                gives the MLP's raw softmax.

        Returns:
            Array ``(n, len(labels))``; rows sum to 1.
        """
        proba = self._proba(MODE_GLOBAL, X)
        return self._calibrate(proba, MODE_GLOBAL, np.atleast_2d(X)) if calibrated else proba

    def predict_proba_speakers(
        self,
        X: np.ndarray,
        speakers: Sequence[str | None],
        *,
        min_files: int | None = None,
        calibrated: bool = True,
        mode: str = MODE_SPEAKER,
    ) -> tuple[np.ndarray, list[str]]:
        """Class probabilities with speaker-adaptive normalisation where a speaker has enough files.

        The rows of each speaker with at least ``min_files`` rows in ``X`` are z-normalised by that
        speaker's statistics over those rows (:func:`ser_model.speaker.speaker_normalise`) and
        classified by ``speaker_pipeline``; all other rows (unknown speaker ``None``, too few files,
        or no ``speaker_pipeline`` in the bundle) by the global ``pipeline``, with exactly the result
        of :meth:`predict_proba`. Pass *all* files of a batch that share speakers in one call: the
        statistics come from the rows given.

        Args:
            X: features, shape ``(n, N_FEATURES)``.
            speakers: speaker key per row, length ``n``.
            min_files: override of :attr:`min_speaker_files`.
            calibrated: apply each pipeline's temperature (see :meth:`predict_proba`).
            mode: :data:`ser_model.speaker.MODE_SPEAKER` (keys are speakers), or
                :data:`ser_model.speaker.MODE_BATCH`: keys are normalisation groups (a whole batch,
                one recording channel), classified by the batch-normalised pipeline; ``min_files``
                then defaults to :data:`ser_model.speaker.MIN_BATCH_FILES`.

        Returns:
            ``(proba, modes)``: ``proba`` ``(n, len(labels))`` rows summing to 1; ``modes`` a list of
            ``n`` strings, ``mode`` or :data:`ser_model.speaker.MODE_GLOBAL`.

        Raises:
            ValueError: ``len(speakers) != n``.
        """
        from ser_model.speaker import MIN_BATCH_FILES, speaker_normalise

        X = np.atleast_2d(np.asarray(X))
        if len(speakers) != X.shape[0]:
            raise ValueError(f"{len(speakers)} speaker keys for {X.shape[0]} feature rows")
        if self.weights.get(mode) is None:
            return self.predict_proba(X, calibrated=calibrated), [MODE_GLOBAL] * X.shape[0]
        default_min = MIN_BATCH_FILES if mode == MODE_BATCH else self.min_speaker_files
        Z, adapted = speaker_normalise(X, speakers, min_files=min_files or default_min)
        out = np.zeros((X.shape[0], len(self.labels)), dtype=np.float64)
        if adapted.any():
            p = self._proba(mode, Z[adapted])
            out[adapted] = self._calibrate(p, mode, X[adapted]) if calibrated else p
        if (~adapted).any():
            # same input dtype as predict_proba
            out[~adapted] = self.predict_proba(X[~adapted], calibrated=calibrated)
        return out, [mode if a else MODE_GLOBAL for a in adapted]


def build_pipeline(
    *,
    hidden_layer_sizes: tuple[int, ...] = (256,),
    alpha: float = 3.0,
    random_state: int = 0,
    max_iter: int = 300,
    early_stopping: bool = False,
    batch_size: int | str = "auto",
    n_components: int | None = None,
) -> Pipeline:
    """An unfitted StandardScaler + MLPClassifier pipeline, with a PCA between them if asked.

    The MLP (scikit-learn ``MLPClassifier``: ReLU, Adam, L2 penalty ``alpha``) takes standardised
    features. The defaults won a small search with GroupKFold by actor on RAVDESS actors 1-20
    (``benchmarks/accuracy.py``): a strong L2 penalty and a fixed epoch budget beat early stopping,
    whose 10 % validation split (about 100 files) is too noisy to pick the stopping epoch.

    With ``n_components``, the standardised features are projected on their first principal
    components (scikit-learn ``PCA``, not whitened, seeded by ``random_state``) before the MLP: the
    first layer then has ``n_components`` rows instead of one per feature, which makes every
    minibatch's products and Adam updates cheaper. A projection and the first layer are both linear,
    so :meth:`ser_model.inference.MLPWeights.from_pipeline` folds them into one first-layer matrix:
    a bundle stores and runs the same arrays as without it. Callers fitting on fewer rows or features
    than ``n_components`` use :func:`ser_model.training.pipeline_for`, which shrinks or drops the step.

    Args:
        hidden_layer_sizes: units per hidden layer.
        alpha: L2 regularisation strength.
        random_state: seed for weight initialisation, batch order and the early-stopping split.
        max_iter: maximum epochs.
        early_stopping: hold out 10 % of the training data and stop when its score has not improved
            for 20 epochs.
        batch_size: minibatch size; ``"auto"`` is ``min(200, n_samples)``.
        n_components: principal components kept before the MLP; None: no projection.

    Returns:
        ``Pipeline([("scaler", ...), ("mlp", ...)])``, or ``[("scaler", ...), ("pca", ...), ("mlp", ...)]``.
    """
    from sklearn.decomposition import PCA
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pca = [("pca", PCA(n_components=n_components, random_state=random_state))] if n_components else []
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            *pca,
            (
                "mlp",
                MLPClassifier(
                    hidden_layer_sizes=hidden_layer_sizes,
                    alpha=alpha,
                    batch_size=batch_size,
                    learning_rate_init=1e-3,
                    max_iter=max_iter,
                    early_stopping=early_stopping,
                    validation_fraction=0.1,
                    n_iter_no_change=20,
                    random_state=random_state,
                ),
            ),
        ]
    )


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a bundle depends on."""
    import librosa
    import sklearn
    import soundfile
    import soxr

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "librosa": librosa.__version__,
        "soundfile": soundfile.__version__,
        "soxr": soxr.__version__,
    }


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _bundle_document(bundle: ModelBundle) -> dict[str, Any]:
    return {
        "labels": list(bundle.labels),
        "feature_version": bundle.feature_version,
        "meta": bundle.meta,
        "trust": bundle.trust,
        "weights": {mode: None if w is None else w.to_dict() for mode, w in bundle.weights.items()},
        **({"dimension_head": bundle.dimension_head.to_dict()} if bundle.dimension_head is not None else {}),
        **(
            {"dimension_heads": {m: h.to_dict() for m, h in bundle.dimension_heads.items()}}
            if bundle.dimension_heads
            else {}
        ),
    }


def bundle_to_bytes(bundle: ModelBundle) -> bytes:
    """Serialise a bundle to format 3 (:mod:`ser_model.bundle_io`: JSON plus numeric arrays, no pickle).

    Layout: ``labels``, ``feature_version``, ``meta``, ``trust`` and ``weights``
    (:meth:`ser_model.inference.MLPWeights.to_dict` by mode). ``meta`` and ``trust`` may hold any
    JSON-safe values and numeric numpy arrays (they round-trip exactly); the fitted scikit-learn
    pipelines are not stored.

    Raises:
        BundleError: ``meta`` or ``trust`` holds a value that is neither JSON-safe nor a numeric array.
    """
    from ser_model import bundle_io

    try:
        return bundle_io.encode(_bundle_document(bundle))
    except ValueError as e:
        raise BundleError(f"model bundle cannot be stored: {e}") from None


def _bundle_from_document(obj: dict[str, Any]) -> ModelBundle:
    if not isinstance(obj, dict) or not isinstance(obj.get("weights"), dict) or "labels" not in obj:
        raise BundleError("model bundle has an unknown layout")
    fv = obj.get("feature_version")
    if fv not in KNOWN_VERSIONS:
        raise BundleError(
            f"model bundle was built for feature version {fv!r}, this ser-batch computes "
            f"{' or '.join(sorted(KNOWN_VERSIONS))}; retrain it with `ser-batch train`"
        )
    try:
        weights = {mode: None if w is None else MLPWeights.from_dict(w) for mode, w in obj["weights"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"model bundle has unusable weights: {type(e).__name__}: {e}") from None
    if weights.get(MODE_GLOBAL) is None:
        raise BundleError("model bundle has no global model")
    meta, trust = obj.get("meta") or {}, obj.get("trust") or {}
    if not isinstance(meta, dict) or not isinstance(trust, dict):
        raise BundleError("model bundle has an unknown layout (meta and trust must be objects)")
    bundle = ModelBundle(
        labels=[str(v) for v in obj["labels"]], feature_version=fv, meta=meta, trust=trust, weights=weights
    )
    if isinstance(obj.get("dimension_head"), dict):
        from ser_model.dimensions import DimensionHead

        try:
            bundle.dimension_head = DimensionHead.from_dict(obj["dimension_head"])
            heads = obj.get("dimension_heads") or {}
            if not isinstance(heads, dict):
                raise TypeError("dimension_heads is not an object")
            bundle.dimension_heads = {
                str(m): DimensionHead.from_dict(h) for m, h in heads.items() if m in (MODE_SPEAKER, MODE_BATCH)
            }
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"model bundle has an unusable dimension head: {type(e).__name__}: {e}") from None
    bundle.check_encoder()
    return bundle


def _check_sha256(data: bytes, expected_sha256: str) -> None:
    actual = sha256_bytes(data)
    if actual != expected_sha256.lower():
        raise BundleError(
            f"model bundle checksum mismatch: expected sha256 {expected_sha256[:16]}..., got {actual[:16]}...; "
            "refusing to load it"
        )


def bundle_from_bytes(data: bytes, expected_sha256: str) -> ModelBundle:
    """Verify the SHA-256 of serialised bundle bytes, then read them (format 3 only; nothing is executed).

    Args:
        data: bytes written by :func:`bundle_to_bytes`.
        expected_sha256: hex digest recorded when the bundle was saved.

    Returns:
        The bundle.

    Raises:
        LegacyBundleError: a pickled bundle (format 1 or 2): refused without being unpickled, with
            the conversion command in the message.
        BundleError: checksum mismatch, unreadable content, a feature version that is not one of
            :data:`ser_model.featureset.KNOWN_VERSIONS`, or (for the accurate set) an encoder in
            force other than the one recorded in the bundle.
    """
    from ser_model import bundle_io

    _check_sha256(data, expected_sha256)
    if not bundle_io.is_container(data):
        raise LegacyBundleError(f"model bundle refused: {LEGACY_HINT}")
    try:
        obj = bundle_io.decode(data)
    except ValueError as e:
        raise BundleError(f"model bundle is unreadable: {e}") from None
    return _bundle_from_document(obj)


def convert_legacy_bundle(
    path: str | os.PathLike[str], output: str | os.PathLike[str], *, trust_pickle: bool = False
) -> str:
    """Read a pickled bundle (format 1 or 2) once and write it as format 3, with the same arrays.

    The operator-only way out of :class:`LegacyBundleError`: unpickling RUNS ANY CODE in the file, so
    call this only on a file whose origin you trust. When ``path`` has a ``.json`` sidecar its SHA-256
    is checked first. Format 2 keeps its stored arrays bit for bit; format 1 (fitted pipelines) has its
    arrays taken from the pipelines (this imports scikit-learn).

    Args:
        path: the pickled ``.joblib`` bundle.
        output: the format-3 file to write (a sidecar goes beside it).
        trust_pickle: must be True: the caller vouches for the file.

    Returns:
        The hex SHA-256 of the written file.

    Raises:
        BundleError: ``trust_pickle`` not set, unreadable file, checksum mismatch, already format 3,
            an unknown layout or another feature version.
    """
    from ser_model import bundle_io

    if not trust_pickle:
        raise BundleError("converting a pickled bundle runs the code in it: pass trust_pickle=True (--trust-pickle)")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read model bundle {p}: {e.strerror or e}") from None
    if Path(str(p) + ".json").exists():
        _check_sha256(data, str(read_sidecar(p).get("sha256", "")))
    if bundle_io.is_container(data):
        raise BundleError(f"{p} is already a format-3 bundle; nothing to convert")
    try:
        obj = bundle_io.read_legacy_pickle(data)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise BundleError(f"model bundle is unreadable: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise BundleError("model bundle has an unknown layout")
    if "pipeline" in obj:  # format 1: the fitted pipelines themselves
        spk = obj.get("speaker_pipeline")
        obj = {
            **obj,
            "weights": {
                MODE_GLOBAL: MLPWeights.from_pipeline(obj["pipeline"]).to_dict(),
                MODE_SPEAKER: None if spk is None else MLPWeights.from_pipeline(spk).to_dict(),
            },
        }
    bundle = _bundle_from_document(obj)
    return save_bundle(bundle, output)


def save_bundle(bundle: ModelBundle, path: str | os.PathLike[str]) -> str:
    """Write ``path`` (format 3) and ``path + ".json"`` (metadata with the SHA-256).

    Args:
        bundle: the model.
        path: destination file (``.npz`` by convention); parent folders are created.

    Returns:
        The hex SHA-256 of the written bundle file.

    Raises:
        BundleError: ``meta`` or ``trust`` holds a value that cannot be stored (see :func:`bundle_to_bytes`).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = bundle_to_bytes(bundle)
    digest = sha256_bytes(data)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    sidecar = {
        "sha256": digest,
        "format": BUNDLE_FORMAT,
        "labels": bundle.labels,
        "feature_version": bundle.feature_version,
        **bundle.meta,
    }
    Path(str(p) + ".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n")
    return digest


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata written next to a bundle by :func:`save_bundle` (plain JSON).

    Raises:
        BundleError: the sidecar is missing or not JSON.
    """
    side = Path(str(path) + ".json")
    try:
        return json.loads(side.read_text())
    except FileNotFoundError:
        raise BundleError(f"model metadata not found: {side}") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"model metadata unreadable: {side}: {e}") from None


def load_bundle(path: str | os.PathLike[str], expected_sha256: str | None = None) -> ModelBundle:
    """Load a bundle file after checking its SHA-256.

    Args:
        path: format-3 bundle file.
        expected_sha256: digest to check; by default the one in the ``.json`` sidecar.

    Returns:
        The bundle.

    Raises:
        LegacyBundleError: a pickled bundle (refused unopened; the message says how to convert it).
        BundleError: missing file or sidecar, checksum mismatch, unreadable content,
            or another feature version.
    """
    p = Path(path)
    if expected_sha256 is None:
        expected_sha256 = str(read_sidecar(p).get("sha256", ""))
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read model bundle {p}: {e.strerror or e}") from None
    try:
        return bundle_from_bytes(data, expected_sha256)
    except LegacyBundleError as e:
        raise LegacyBundleError(f"model bundle {p} refused: " + LEGACY_HINT.replace("FILE", str(p))) from e


def new_meta(**kw: Any) -> dict[str, Any]:
    """Bundle metadata with ``created_at`` (UTC ISO 8601), library versions, feature count and ``kw``."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "n_features": N_FEATURES,
        **kw,
    }
