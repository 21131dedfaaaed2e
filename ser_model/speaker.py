"""Speaker-adaptive normalisation: z-normalise each speaker's features by that speaker's own statistics.

A batch often holds several recordings of the same speaker. Emotion shows as a *deviation* from how that
speaker usually sounds (pitch, loudness, timbre), and much of the between-speaker variance in the global
features is speaker identity, not emotion. Per-speaker z-normalisation of the utterance-level features
removes it: for speaker ``s`` with feature rows ``X_s`` (shape ``(n_s, d)``),

    ``Z_s = (X_s - mean(X_s)) / std(X_s)``  (per feature column; a column whose std is below
    :data:`STD_FLOOR` is only centred).

This is the speaker normalisation of Busso, Lee & Narayanan (2009), "Analysis of emotionally salient
aspects of fundamental frequency for emotion detection", IEEE TASLP 17(4), and the "speaker
standardisation" of Schuller et al.'s INTERSPEECH challenge baselines, applied to the whole functional
vector. The classifier for normalised features is trained the same way (each training speaker normalised
by its own files), see :func:`ser_model.training.cross_validate` with ``speaker_adaptive=True``.

The statistics of a speaker are only trusted with at least :data:`MIN_SPEAKER_FILES` files; rows of
speakers below that (or with an unknown speaker, ``None``) are *not* normalised and must be classified by
the global model (mode :data:`MODE_GLOBAL`). :data:`MODE_SPEAKER` marks the others.

Assumption behind the method: a speaker's files cover a mix of emotions. Statistics from a speaker whose
files are mostly one emotion put that emotion at the origin, where the model expects the speaker's
*average* voice; ``benchmarks/accuracy.py`` measures the resulting loss (e.g. 70 % neutral files).

All functions are pure (no I/O) and work on numpy arrays; speaker keys are any hashable strings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SPEAKER_FILES = 8
"""Fewest files of a speaker whose statistics are used; fewer -> global model for that speaker's files."""

STD_FLOOR = 1e-6
"""A per-speaker standard deviation below this is replaced by 1 (the column is only centred)."""

MODE_SPEAKER = "speaker-adaptive"
"""Mode of a row normalised by its speaker's statistics and classified by the speaker-adaptive model."""

MODE_GLOBAL = "global"
"""Mode of a row classified by the global model (unknown speaker, or fewer than the minimum files)."""

MODE_BATCH = "batch-normalised"
"""Mode of a row normalised by the statistics of its whole batch (one recording channel) and classified
by the batch-normalised model: the per-corpus normalisation of Schuller et al. 2010, "Cross-corpus
acoustic emotion recognition: variances and strategies", IEEE Trans. Affective Computing 1(2)."""

MIN_BATCH_FILES = 20
"""Fewest files a batch needs for batch normalisation; smaller batches are labelled globally."""


@dataclass(frozen=True)
class SpeakerStats:
    """Per-feature statistics of one speaker.

    Attributes:
        mean: shape ``(d,)``, float64, the speaker's mean of every feature.
        std: shape ``(d,)``, float64, the speaker's population standard deviation (``ddof=0``),
            already floored: entries below :data:`STD_FLOOR` are 1.
        n_files: rows the statistics were computed from.
    """

    mean: np.ndarray
    std: np.ndarray
    n_files: int


def _check(X: np.ndarray, speakers: Sequence[str | None]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a feature matrix of shape (n, d), got {X.shape}")
    if len(speakers) != X.shape[0]:
        raise ValueError(f"{len(speakers)} speaker keys for {X.shape[0]} feature rows")
    return X


def speaker_statistics(
    X: np.ndarray,
    speakers: Sequence[str | None],
    *,
    min_files: int = MIN_SPEAKER_FILES,
) -> dict[str, SpeakerStats]:
    """Mean and standard deviation of every speaker with at least ``min_files`` rows.

    Args:
        X: features, shape ``(n, d)``.
        speakers: speaker key of each row, length ``n``; ``None`` means unknown (never gets statistics).
        min_files: fewest rows a speaker needs; must be >= 2.

    Returns:
        ``{speaker: SpeakerStats}`` for the speakers that qualify (others are absent). The values do
        not depend on the order of the rows (bit for bit).

    Raises:
        ValueError: ``X`` is not 2-D, the lengths differ, or ``min_files < 2``.
    """
    X = _check(X, speakers)
    if min_files < 2:
        raise ValueError(f"min_files must be at least 2 (a standard deviation needs two files), got {min_files}")
    counts = Counter(s for s in speakers if s is not None)
    keys = np.asarray([s if s is not None else "" for s in speakers], dtype=object)
    known = np.asarray([s is not None for s in speakers])
    out: dict[str, SpeakerStats] = {}
    for spk, n in counts.items():
        if n < min_files:
            continue
        # sorting each column first makes the sums independent of row order, so embedded and
        # distributed runs (files arriving in any order) get bit-identical statistics
        rows = np.sort(X[known & (keys == spk)], axis=0)
        mean = rows.mean(axis=0)
        std = np.sqrt(np.sort((rows - mean) ** 2, axis=0).mean(axis=0))
        out[spk] = SpeakerStats(mean, np.where(std < STD_FLOOR, 1.0, std), int(n))
    return out


def apply_speaker_stats(
    X: np.ndarray,
    speakers: Sequence[str | None],
    stats: dict[str, SpeakerStats],
) -> tuple[np.ndarray, np.ndarray]:
    """Z-normalise the rows whose speaker has statistics; leave the others unchanged.

    Args:
        X: features, shape ``(n, d)``.
        speakers: speaker key of each row, length ``n`` (``None`` = unknown).
        stats: from :func:`speaker_statistics` (may come from a larger set of files than ``X``).

    Returns:
        ``(Z, adapted)``: ``Z`` ``(n, d)`` (computed in float64, returned in the floating dtype of
        ``X``, float64 otherwise), normalised rows where ``adapted`` (bool ``(n,)``) is True and the
        unchanged input rows elsewhere.

    Raises:
        ValueError: ``X`` is not 2-D, the lengths differ, or a statistic has another width than ``X``.
    """
    dtype = np.asarray(X).dtype if np.issubdtype(np.asarray(X).dtype, np.floating) else np.float64
    X = _check(X, speakers)
    Z = X.copy()
    adapted = np.zeros(X.shape[0], dtype=bool)
    for i, s in enumerate(speakers):
        st = stats.get(s) if s is not None else None
        if st is None:
            continue
        if st.mean.shape != (X.shape[1],):
            raise ValueError(f"speaker {s!r} statistics have width {st.mean.shape[0]}, features have {X.shape[1]}")
        Z[i] = (X[i] - st.mean) / st.std
        adapted[i] = True
    return Z.astype(dtype, copy=False), adapted


def speaker_normalise(
    X: np.ndarray,
    speakers: Sequence[str | None],
    *,
    min_files: int = MIN_SPEAKER_FILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-speaker z-normalisation of a feature matrix by the statistics of its own rows.

    Equivalent to ``apply_speaker_stats(X, speakers, speaker_statistics(X, speakers, min_files=...))``.

    Args:
        X: features, shape ``(n, d)``.
        speakers: speaker key of each row, length ``n`` (``None`` = unknown).
        min_files: fewest rows a speaker needs to be normalised (default :data:`MIN_SPEAKER_FILES`).

    Returns:
        ``(Z, adapted)`` as in :func:`apply_speaker_stats`: ``Z`` ``(n, d)`` in the dtype of ``X``, ``adapted`` bool
        ``(n,)`` (True = normalised, classify with the speaker-adaptive model; False = unchanged,
        classify with the global model).

    Raises:
        ValueError: ``X`` is not 2-D, the lengths differ, or ``min_files < 2``.
    """
    return apply_speaker_stats(X, speakers, speaker_statistics(X, speakers, min_files=min_files))


def speaker_modes(adapted: np.ndarray) -> list[str]:
    """Per-row mode names for an ``adapted`` mask: :data:`MODE_SPEAKER` or :data:`MODE_GLOBAL`.

    Args:
        adapted: bool array ``(n,)`` from :func:`speaker_normalise`.

    Returns:
        List of ``n`` strings.
    """
    return [MODE_SPEAKER if a else MODE_GLOBAL for a in np.asarray(adapted, dtype=bool)]
