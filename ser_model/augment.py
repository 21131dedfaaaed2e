"""Waveform augmentation for training: added noise, time stretch, pitch shift, time shift.

The four transforms of the seed projects (seed 002), as pure functions on a mono 16 kHz signal. They
are a *training option* (``ser_model.training.augment_table``): augmented copies of a training
speaker's files join the training part of a fold only, never a test part, so grouped cross-validation
stays speaker-independent. Whether they help is decided by that grouped CV (see
``benchmarks/results/accuracy.md``); the default model is trained without them unless they do.

Sources: additive noise at a set SNR and time shift are textbook (e.g. Ko et al., 2015, "Audio
augmentation for speech recognition", INTERSPEECH); time stretch and pitch shift are
``librosa.effects.time_stretch`` (phase vocoder) and ``librosa.effects.pitch_shift`` (phase vocoder +
resampling), as used for speech emotion by e.g. Rebai et al. and the seed projects.
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np

from ser_model.audio import SAMPLE_RATE

AUGMENTATIONS: tuple[str, ...] = ("noise", "stretch", "pitch", "shift")
"""Names accepted by :func:`augment` and :func:`random_augment`."""

NOISE_SNR_DB = (15.0, 30.0)
"""Range of the signal-to-noise ratio (dB) drawn for ``noise``."""
STRETCH_RATES = (0.85, 1.15)
"""Range of the time-stretch rate (>1 faster) drawn for ``stretch``."""
PITCH_STEPS = (-2.0, 2.0)
"""Range of the pitch shift (semitones) drawn for ``pitch``."""
SHIFT_S = (-0.3, 0.3)
"""Range of the circular-free time shift (seconds) drawn for ``shift``."""


def _mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {y.shape}")
    return y


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at a given signal-to-noise ratio.

    Args:
        y: mono samples, shape ``(n,)``.
        snr_db: signal-to-noise ratio in dB, relative to the mean power of ``y``.
        rng: random generator for the noise.

    Returns:
        float32 array of shape ``(n,)``; a silent input is returned unchanged.

    Raises:
        ValueError: ``y`` is not one-dimensional.
    """
    y = _mono(y)
    power = float(np.mean(y.astype(np.float64) ** 2))
    if power == 0.0:
        return y.copy()
    noise_power = power / (10.0 ** (snr_db / 10.0))
    return (y + rng.normal(0.0, np.sqrt(noise_power), size=y.shape)).astype(np.float32)


def time_stretch(y: np.ndarray, rate: float) -> np.ndarray:
    """Change tempo without changing pitch (``librosa.effects.time_stretch``, phase vocoder).

    Args:
        y: mono samples, shape ``(n,)``.
        rate: speed factor; > 1 is faster (shorter output, about ``n / rate`` samples).

    Returns:
        float32 array of shape ``(round(n / rate),)`` approximately.

    Raises:
        ValueError: ``y`` is not one-dimensional or ``rate <= 0``.
    """
    y = _mono(y)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    return librosa.effects.time_stretch(y, rate=rate).astype(np.float32)


def pitch_shift(y: np.ndarray, n_steps: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Shift pitch by ``n_steps`` semitones, keeping the duration (``librosa.effects.pitch_shift``).

    Args:
        y: mono samples, shape ``(n,)``.
        n_steps: semitones, positive = higher.
        sr: sample rate of ``y`` in Hz.

    Returns:
        float32 array of shape ``(n,)``.

    Raises:
        ValueError: ``y`` is not one-dimensional.
    """
    y = _mono(y)
    return librosa.effects.pitch_shift(y, sr=sr, n_steps=n_steps, res_type="soxr_hq").astype(np.float32)


def time_shift(y: np.ndarray, shift_s: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Delay (positive) or advance (negative) the signal, padding with zeros (no wrap-around).

    Args:
        y: mono samples, shape ``(n,)``.
        shift_s: shift in seconds.
        sr: sample rate of ``y`` in Hz.

    Returns:
        float32 array of shape ``(n,)``: ``y`` moved by ``round(shift_s * sr)`` samples.

    Raises:
        ValueError: ``y`` is not one-dimensional.
    """
    y = _mono(y)
    k = int(round(shift_s * sr))
    out = np.zeros_like(y)
    if k >= 0:
        out[k:] = y[: len(y) - k] if k < len(y) else y[:0]
    else:
        out[: len(y) + k] = y[-k:]
    return out


def augment(y: np.ndarray, kind: str, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Apply one named augmentation with a parameter drawn uniformly from its range.

    Args:
        y: mono samples, shape ``(n,)``, at ``sr``.
        kind: one of :data:`AUGMENTATIONS`.
        rng: random generator for the parameter (and the noise).
        sr: sample rate in Hz.

    Returns:
        The augmented float32 signal (same length except for ``stretch``).

    Raises:
        ValueError: unknown ``kind`` or ``y`` not one-dimensional.
    """
    if kind == "noise":
        return add_noise(y, float(rng.uniform(*NOISE_SNR_DB)), rng)
    if kind == "stretch":
        return time_stretch(y, float(rng.uniform(*STRETCH_RATES)))
    if kind == "pitch":
        steps = float(rng.uniform(*PITCH_STEPS))
        return pitch_shift(y, steps if abs(steps) >= 0.25 else 0.25 * np.sign(steps or 1.0), sr)
    if kind == "shift":
        return time_shift(y, float(rng.uniform(*SHIFT_S)), sr)
    raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}")


def parse_augmentations(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse ``"noise,pitch"`` (or a sequence) into validated augmentation names.

    Args:
        text: comma-separated names, a sequence of names, or None/empty for none.

    Returns:
        Distinct names in the given order.

    Raises:
        ValueError: a name is not in :data:`AUGMENTATIONS`.
    """
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        k = raw.strip().lower()
        if not k:
            continue
        if k not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {k!r}; choose from {', '.join(AUGMENTATIONS)}")
        if k not in out:
            out.append(k)
    return tuple(out)
