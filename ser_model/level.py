"""Recording-level normalisation: the features of a file must not depend on its gain.

The level of a recording is set by the microphone, its distance and a gain knob, not by the
speaker's emotion; a model that reads absolute level labels a loud recording "angry" and a quiet one
"sad". Before feature extraction every signal is therefore scaled to a fixed *active speech level*
(:data:`TARGET_LEVEL_DBFS`), measured with the two-stage gating of ITU-R BS.1770-4 ("Algorithms to
measure audio programme loudness and true-peak audio level", 2015), applied to unweighted power:

1. the signal is cut into 400-ms blocks with 75 % overlap (100-ms hop; one block for shorter signals);
2. an *absolute* gate drops blocks more than :data:`SILENCE_GATE_DB` below the loudest block (digital
   silence and room noise between phrases). BS.1770 gates at -70 LKFS absolute; a gate relative to the
   loudest block keeps the whole measurement scale-invariant (any gain moves every block equally);
3. a *relative* gate drops blocks more than :data:`RELATIVE_GATE_DB` (10 dB, as BS.1770) below the mean
   power of the blocks that passed step 2;
4. the level is the mean power of the remaining blocks, in dBFS (0 dBFS = a full-scale square wave).

Scaling by ``10 ** ((TARGET_LEVEL_DBFS - level) / 20)`` is then an exact inverse of any constant gain
applied to the file, up to the file's own quantisation and clipping. No K-weighting filter is used:
the goal is invariance, not perceived loudness, and the unweighted power keeps the method free of a
sample-rate-specific filter. Cues of vocal effort that do not depend on gain remain in the features
(spectral tilt, alpha ratio, Hammarberg index, level dynamics relative to the file's own level).

The target -26 dBFS is the nominal active speech level of ITU-T P.56 test material.
"""

from __future__ import annotations

import numpy as np

from ser_model.audio import SAMPLE_RATE

TARGET_LEVEL_DBFS = -26.0
"""Active speech level (dBFS, unweighted BS.1770 gating) every signal is scaled to before features."""

BLOCK_S = 0.4
"""Gating block length (seconds), as ITU-R BS.1770-4."""

HOP_S = 0.1
"""Gating block hop (seconds): 75 % overlap, as ITU-R BS.1770-4."""

SILENCE_GATE_DB = 70.0
"""Blocks more than this many dB below the loudest block are silence (relative form of BS.1770's -70 LKFS)."""

RELATIVE_GATE_DB = 10.0
"""Blocks more than this many dB below the mean power of the non-silent blocks are left out (BS.1770)."""

_FLOOR = 1e-20  # power floor (-200 dB) so that all-zero input gives a finite level


def active_level_db(y: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Active speech level of a signal: gated mean power in dBFS (module doc, BS.1770-4 gating).

    Args:
        y: mono samples, shape ``(n,)``, float (full scale 1.0).
        sr: sample rate in Hz.

    Returns:
        Level in dBFS (dB re a full-scale square wave, i.e. ``10 log10`` of the mean square). Scaling
        ``y`` by ``g`` adds exactly ``20 log10(g)`` dB. All-zero input gives -200 dB.

    Raises:
        ValueError: ``y`` is not one-dimensional or is empty.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] == 0:
        raise ValueError(f"expected non-empty mono samples of shape (n,), got {y.shape}")
    hop = max(1, round(HOP_S * sr))
    per = max(1, round(BLOCK_S / HOP_S))  # hops per block (4: 75 % overlap)
    n_hops = y.shape[0] // hop
    if n_hops < per:  # shorter than one block: the whole signal is the block
        y64 = y.astype(np.float64)
        power = np.array([np.dot(y64, y64) / y.shape[0]])
    else:
        # energy of every hop, then of every block as the sum of ``per`` consecutive hops
        h = y[: n_hops * hop].reshape(n_hops, hop)
        e = np.einsum("ij,ij->i", h, h).astype(np.float64)  # float32 sums of 1600 squares: 1e-4 dB
        power = np.convolve(e, np.ones(per), mode="valid") / (per * hop)
    power = np.maximum(power, _FLOOR)
    loud = power[power >= power.max() * 10.0 ** (-SILENCE_GATE_DB / 10.0)]
    gate = loud.mean() * 10.0 ** (-RELATIVE_GATE_DB / 10.0)
    return float(10.0 * np.log10(loud[loud >= gate].mean()))


def normalise_level(y: np.ndarray, sr: int = SAMPLE_RATE, *, target_db: float = TARGET_LEVEL_DBFS) -> np.ndarray:
    """Scale a signal so that its active speech level (:func:`active_level_db`) is ``target_db``.

    Args:
        y: mono samples, shape ``(n,)``, float.
        sr: sample rate in Hz.
        target_db: active speech level to reach (dBFS).

    Returns:
        float32 array of shape ``(n,)``; may exceed [-1, 1] (features need no headroom). An all-zero
        signal is returned unscaled.

    Raises:
        ValueError: ``y`` is not one-dimensional or is empty.
    """
    level = active_level_db(y, sr)
    y32 = np.asarray(y, dtype=np.float32)
    if level <= 10.0 * np.log10(_FLOOR) + 1e-6:
        return y32
    return y32 * np.float32(10.0 ** ((target_db - level) / 20.0))
