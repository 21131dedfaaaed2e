"""The two feature sets a model can be trained on, and the one function that computes either.

==============  ===================================================================================
version         what it is
==============  ===================================================================================
``ser-feat-3``  the *fast* set: 989 hand-crafted acoustic features (:mod:`ser_model.features`),
                about 3 ms per 3.8-s file
``ser-feat-3+whisper-1``
                the *accurate* set: the same 989 values followed by the time-pooled output of a
                Whisper encoder (:mod:`ser_model.encoder`; mean and standard deviation over time,
                768 values for Whisper tiny), about 17 ms per 3.8-s file
==============  ===================================================================================

Both start from the same signal: the recording level-normalised to a -26 dBFS active speech level
(:func:`ser_model.level.normalise_level`) with the fixed noise floor of :mod:`ser_model.features`, so
the gain invariance of the fast set holds for the encoder part too. The hand-crafted part stays
beside the encoder on purpose: Whisper tiny.en is English-only, and on other languages an encoder
alone collapses onto few labels (issue 18's probe: a German corpus at 0.10 WA, one label).
"""

from __future__ import annotations

import numpy as np

from ser_model.audio import SAMPLE_RATE
from ser_model.features import FEATURE_VERSION, N_FEATURES, _features, _noise_floor
from ser_model.level import normalise_level

FAST = FEATURE_VERSION
"""Feature version of the fast model (hand-crafted features only)."""
ACCURATE = f"{FEATURE_VERSION}+whisper-1"
"""Feature version of the accurate model (hand-crafted features + Whisper encoder embedding)."""
FEATURE_SETS = {"fast": FAST, "accurate": ACCURATE}
"""Names users type (``train --features``) and the feature versions they stand for."""
KNOWN_VERSIONS = frozenset(FEATURE_SETS.values())


def needs_encoder(feature_version: str) -> bool:
    """True when ``feature_version`` includes an encoder embedding."""
    return feature_version == ACCURATE


def n_features(feature_version: str, encoder_dim: int | None = None) -> int:
    """Length of the feature vector of ``feature_version`` (``encoder_dim`` is needed for the accurate set).

    Raises:
        ValueError: an unknown version, or the accurate set without ``encoder_dim``.
    """
    if feature_version == FAST:
        return N_FEATURES
    if feature_version == ACCURATE:
        if encoder_dim is None:
            raise ValueError("the accurate feature set needs the encoder's embedding size")
        return N_FEATURES + encoder_dim
    raise ValueError(f"unknown feature version {feature_version!r}; known: {', '.join(sorted(KNOWN_VERSIONS))}")


def extract(y: np.ndarray, feature_version: str = FAST, encoder: object | None = None) -> np.ndarray:
    """Feature vector of one recording in the given feature set.

    Args:
        y: mono samples ``(n,)`` at 16 kHz (:func:`ser_model.audio.load_audio`).
        feature_version: :data:`FAST` or :data:`ACCURATE`.
        encoder: a :class:`ser_model.encoder.WhisperEncoder` (or anything with ``embed(y) -> (d,)``);
            required for :data:`ACCURATE`.

    Returns:
        float32 ``(n_features(feature_version, d),)``: the 989 hand-crafted values (equal to
        :func:`ser_model.features.extract_features`), then for :data:`ACCURATE` the encoder's ``d``.

    Raises:
        ValueError: an unknown version, a missing encoder, or ``y`` not one-dimensional.
        ser_model.audio.AudioError: too little sound after trimming (as the fast features).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {y.shape}")
    y = normalise_level(y, SAMPLE_RATE)
    floor = _noise_floor(y.shape[0])
    hand = _features(y, floor)
    if feature_version == FAST:
        return hand
    if feature_version != ACCURATE:
        raise ValueError(f"unknown feature version {feature_version!r}; known: {', '.join(sorted(KNOWN_VERSIONS))}")
    if encoder is None:
        raise ValueError("the accurate feature set needs an encoder (ser_model.encoder.get_encoder())")
    emb = encoder.embed(y + floor)  # type: ignore[attr-defined]
    if not np.isfinite(emb).all():
        from ser_model.audio import AudioError

        raise AudioError("the speech encoder produced non-finite values")
    return np.concatenate([hand, emb]).astype(np.float32)
