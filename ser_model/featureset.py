"""The two feature sets a model can be trained on, and the one function that computes either.

==============  ===================================================================================
version         what it is
==============  ===================================================================================
``ser-feat-3``  the *fast* set: 989 hand-crafted acoustic features (:mod:`ser_model.features`),
                about 3 ms per 3.8-s file
``ser-feat-3+whisper-2``
                the *accurate* set: the same 989 values followed by the time-pooled output of a
                Whisper encoder (:mod:`ser_model.encoder`; mean and standard deviation over time,
                768 values for Whisper tiny) of the speech trimmed of its leading and trailing
                silence (:data:`ENCODER_TRIM_MARGIN_S` kept each side) and zero-padded to at least
                :data:`ENCODER_MIN_SECONDS` (4 s)
``ser-feat-3+whisper-1``
                the accurate set of bundles trained before 2026-12-05: the encoder on the whole
                recording at its own length. Still computed for those bundles
==============  ===================================================================================

Why trim and pad (``benchmarks/results/babble_and_encoder_probes.md``, models trained on clean RAVDESS, grouped
CV by actor, TESS as another corpus): Whisper was trained on 30-s windows only; run on a short
recording at its own length, its pooled output follows the recording's length and where the speech
sits in it. RAVDESS files carry about 1.4 s of silence around 2.3 s of speech, TESS files almost none,
and a VAD segment of a long recording 0.5 s each side. At its own length the encoder kept 0.22 WA on
TESS (0.69 on RAVDESS), and a segment cut from a file got the file's label 75 % of the time. Padded
to 6 s without trimming: TESS 0.50, segments 81 %. Trimmed and padded: TESS 0.52-0.56, segments
92-95 %, RAVDESS 0.67-0.69 (within seed noise). The hand-crafted features already trim the same way.

Both start from the same signal: the recording level-normalised to a -26 dBFS active speech level
(:func:`ser_model.level.normalise_level`) with the fixed noise floor of :mod:`ser_model.features`, so
the gain invariance of the fast set holds for the encoder part too. The hand-crafted part stays
beside the encoder on purpose: Whisper tiny.en is English-only, and on other languages an encoder
alone collapses onto few labels (issue 18's probe: a German corpus at 0.10 WA, one label).
"""

from __future__ import annotations

import numpy as np

from ser_model.audio import SAMPLE_RATE
from ser_model.features import FEATURE_VERSION, N_FEATURES, _features, _noise_floor, speech_span
from ser_model.level import normalise_level

FAST = FEATURE_VERSION
"""Feature version of the fast model (hand-crafted features only)."""
ACCURATE = f"{FEATURE_VERSION}+whisper-2"
"""Feature version of the accurate model (hand-crafted features + Whisper encoder embedding of the
trimmed speech padded to at least :data:`ENCODER_MIN_SECONDS`)."""
ACCURATE_V1 = f"{FEATURE_VERSION}+whisper-1"
"""The accurate set of earlier bundles: the encoder on the whole recording at its own length."""
ENCODER_MIN_SECONDS = {ACCURATE: 4.0, ACCURATE_V1: 0.0}
"""Shortest encoder input of each accurate version (seconds; shorter inputs are zero-padded)."""
ENCODER_TRIM_MARGIN_S = 0.1
"""Seconds kept before and after the speech span when a version trims the encoder's input."""
_TRIMS = frozenset({ACCURATE})
FEATURE_SETS = {"fast": FAST, "accurate": ACCURATE}
"""Names users type (``train --features``) and the feature versions they stand for."""
KNOWN_VERSIONS = frozenset({*FEATURE_SETS.values(), ACCURATE_V1})
"""Every feature version a bundle may carry (``train`` only makes those of :data:`FEATURE_SETS`)."""


def needs_encoder(feature_version: str) -> bool:
    """True when ``feature_version`` includes an encoder embedding."""
    return feature_version in ENCODER_MIN_SECONDS


def n_features(feature_version: str, encoder_dim: int | None = None) -> int:
    """Length of the feature vector of ``feature_version`` (``encoder_dim`` is needed for the accurate set).

    Raises:
        ValueError: an unknown version, or the accurate set without ``encoder_dim``.
    """
    if feature_version == FAST:
        return N_FEATURES
    if needs_encoder(feature_version):
        if encoder_dim is None:
            raise ValueError("the accurate feature set needs the encoder's embedding size")
        return N_FEATURES + encoder_dim
    raise ValueError(f"unknown feature version {feature_version!r}; known: {', '.join(sorted(KNOWN_VERSIONS))}")


def encoder_input(y: np.ndarray, floor: np.ndarray, feature_version: str = ACCURATE) -> np.ndarray:
    """The samples the encoder hears in ``feature_version``, before its padding to
    :data:`ENCODER_MIN_SECONDS`.

    Args:
        y: level-normalised mono samples ``(n,)`` at 16 kHz (:func:`ser_model.level.normalise_level`).
        floor: the fixed noise floor ``(n,)`` of :func:`ser_model.features._noise_floor`.
        feature_version: an accurate version (:data:`ACCURATE` trims, :data:`ACCURATE_V1` does not).

    Returns:
        float32 ``(m,)``: ``y + floor``, for :data:`ACCURATE` cut to the speech span of ``y``
        (:func:`ser_model.features.speech_span`, found before the floor is added) with
        :data:`ENCODER_TRIM_MARGIN_S` either side.
    """
    z = y + floor
    if feature_version not in _TRIMS:
        return z
    start, stop = speech_span(y)
    margin = int(round(ENCODER_TRIM_MARGIN_S * SAMPLE_RATE))
    return z[max(0, start - margin) : stop + margin]


def extract(y: np.ndarray, feature_version: str = FAST, encoder: object | None = None) -> np.ndarray:
    """Feature vector of one recording in the given feature set.

    Args:
        y: mono samples ``(n,)`` at 16 kHz (:func:`ser_model.audio.load_audio`).
        feature_version: :data:`FAST`, :data:`ACCURATE` or :data:`ACCURATE_V1`.
        encoder: a :class:`ser_model.encoder.WhisperEncoder` (or anything with
            ``embed(y, min_seconds) -> (d,)``); required for the accurate sets.

    Returns:
        float32 ``(n_features(feature_version, d),)``: the 989 hand-crafted values (equal to
        :func:`ser_model.features.extract_features`), then for the accurate sets the encoder's ``d``.

    Raises:
        ValueError: an unknown version, a missing encoder, or ``y`` not one-dimensional.
        ser_model.audio.AudioError: too little sound after trimming (as the fast features).
    """
    from ser_model.threads import one_blas_thread

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {y.shape}")
    with one_blas_thread():  # the same numbers whoever calls (ser_model.threads)
        return _extract(y, feature_version, encoder)


def _extract(y: np.ndarray, feature_version: str, encoder: object | None) -> np.ndarray:
    y = normalise_level(y, SAMPLE_RATE)
    floor = _noise_floor(y.shape[0])
    hand = _features(y, floor)
    if feature_version == FAST:
        return hand
    if not needs_encoder(feature_version):
        raise ValueError(f"unknown feature version {feature_version!r}; known: {', '.join(sorted(KNOWN_VERSIONS))}")
    if encoder is None:
        raise ValueError("the accurate feature set needs an encoder (ser_model.encoder.get_encoder())")
    embed = encoder.embed  # type: ignore[attr-defined]
    emb = embed(encoder_input(y, floor, feature_version), min_seconds=ENCODER_MIN_SECONDS[feature_version])
    if not np.isfinite(emb).all():
        from ser_model.audio import AudioError

        raise AudioError("the speech encoder produced non-finite values")
    return np.concatenate([hand, emb]).astype(np.float32)
