"""Utterance-level acoustic features, all derived from one STFT of the 16 kHz signal.

Pipeline for one recording ``y`` (mono, 16 kHz, from :func:`ser_model.audio.load_audio`):

1. One STFT: Hann window of 512 samples (32 ms), hop 160 samples (10 ms), FFT size 1024
   (zero-padded, so that the autocorrelation below has no circular aliasing for lags up to 32 ms).
2. Trim leading/trailing silence in the frame domain: keep the span of frames whose energy is within
   :data:`TRIM_TOP_DB` dB of the loudest frame (the rule of ``librosa.effects.trim``, applied to the
   STFT frames instead of a second framing).
3. Frame-level descriptors (low-level descriptors, LLDs), each a row block of shape ``(d, n_frames)``:

   ========================  ====  ==========================================================
   name                      d     definition (unit)
   ========================  ====  ==========================================================
   ``logmel``                64    log-mel power, 64 Slaney mel bands 0-8 kHz (dB, ``librosa.power_to_db``)
   ``mfcc``                  20    MFCC: DCT-II of ``logmel`` (``librosa.feature.mfcc``)
   ``mfcc_d``                20    first-order delta of MFCC, 9-frame Savitzky-Golay (``librosa.feature.delta``)
   ``mfcc_dd``               20    second-order delta of MFCC
   ``chroma``                12    chroma from the power spectrum, A440 tuning, max-normalised (``librosa.filters.chroma``)
   ``contrast``              7     spectral contrast, 6 octave bands from 100 Hz + valley row (dB, Jiang et al. 2002)
   ``centroid``              1     spectral centroid (Hz)
   ``bandwidth``             1     spectral bandwidth, 2nd order (Hz)
   ``rolloff``               1     85 % spectral roll-off frequency (Hz)
   ``flatness``              1     spectral flatness (Wiener entropy, ratio 0-1)
   ``zcr``                   1     zero-crossing rate (crossings per sample, 32 ms frames)
   ``rms_db``                1     frame RMS level (dBFS)
   ``rms_db_d``              1     delta of ``rms_db`` (dB per frame)
   ========================  ====  ==========================================================

4. Functionals over the frames of every LLD row: mean, standard deviation, 10th, 50th and 90th
   percentile -> ``150 * 5 = 750`` values.
5. Pitch (F0) and voicing: per-frame autocorrelation from the same power spectrum (Wiener-Khinchin
   theorem; the autocorrelation pitch method of Boersma 1993, "Accurate short-term analysis of the
   fundamental frequency and the harmonics-to-noise ratio of a sampled sound"), normalised by lag 0
   and peak-picked over 60-500 Hz. The window taper is deliberately not divided out: its bias towards
   short lags suppresses octave-down errors (against ``librosa.pyin`` on 80 RAVDESS files, 6.6 % of the
   frames both call voiced differ by more than 2 semitones, versus 17.8 % with the correction).
   Frames with normalised peak >= 0.3 and energy within 30 dB of the loudest frame count as voiced. Over voiced frames, F0 in semitones re 100 Hz:
   mean, std, p10, p50, p90, p90-p10 range and slope (semitones/s); plus the voiced fraction and the
   mean voicing strength -> 9 values.
6. Speech duration after trimming (seconds) -> 1 value.

The result is a float32 vector of :data:`N_FEATURES` (= 760) values, named by :func:`feature_names`.
Any change to this module that changes the numbers must change :data:`FEATURE_VERSION`: model bundles
record it and refuse to load under another version.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np

from ser_model.audio import SAMPLE_RATE, AudioError

FEATURE_VERSION = "ser-feat-1"
"""Identifier of the feature definition; stored in every model bundle."""

WIN_LENGTH = 512  # samples, 32 ms at 16 kHz
HOP_LENGTH = 160  # samples, 10 ms at 16 kHz
N_FFT = 1024  # zero-padded FFT size
N_MELS = 64
N_MFCC = 20
CONTRAST_FMIN = 100.0  # Hz
CONTRAST_BANDS = 6
TRIM_TOP_DB = 40.0  # dB below the loudest frame
F0_MIN = 60.0  # Hz
F0_MAX = 500.0  # Hz
VOICING_THRESHOLD = 0.3  # normalised autocorrelation peak (no window correction)
VOICED_ENERGY_DB = 30.0  # dB below the loudest frame
MIN_FRAMES = 10  # 100 ms of sound after trimming

_LLD_BLOCKS: tuple[tuple[str, int], ...] = (
    ("logmel", N_MELS),
    ("mfcc", N_MFCC),
    ("mfcc_d", N_MFCC),
    ("mfcc_dd", N_MFCC),
    ("chroma", 12),
    ("contrast", CONTRAST_BANDS + 1),
    ("centroid", 1),
    ("bandwidth", 1),
    ("rolloff", 1),
    ("flatness", 1),
    ("zcr", 1),
    ("rms_db", 1),
    ("rms_db_d", 1),
)
_STATS = ("mean", "std", "p10", "p50", "p90")
_PITCH = (
    "f0_st_mean",
    "f0_st_std",
    "f0_st_p10",
    "f0_st_p50",
    "f0_st_p90",
    "f0_st_range",
    "f0_st_slope",
    "voiced_fraction",
    "voicing_strength_mean",
)
N_LLD = sum(d for _, d in _LLD_BLOCKS)
N_FEATURES = N_LLD * len(_STATS) + len(_PITCH) + 1


@lru_cache(maxsize=1)
def feature_names() -> tuple[str, ...]:
    """Names of the :data:`N_FEATURES` values of :func:`extract_features`, in order.

    Returns:
        Names such as ``"mfcc_03_std"``, ``"f0_st_mean"``, ``"speech_duration_s"``.
    """
    names: list[str] = []
    for stat in _STATS:
        for block, d in _LLD_BLOCKS:
            if d == 1:
                names.append(f"{block}_{stat}")
            else:
                names.extend(f"{block}_{i:02d}_{stat}" for i in range(d))
    names.extend(_PITCH)
    names.append("speech_duration_s")
    return tuple(names)


@lru_cache(maxsize=1)
def _filterbanks() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mel and chroma filter banks, analysis window and FFT bin frequencies (Hz), built once."""
    mel_fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2)
    chroma_fb = librosa.filters.chroma(sr=SAMPLE_RATE, n_fft=N_FFT, tuning=0.0)
    window = librosa.filters.get_window("hann", WIN_LENGTH, fftbins=True).astype(np.float32)
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=N_FFT)
    return mel_fb.astype(np.float32), chroma_fb.astype(np.float32), window, freqs


def _power_spectrogram(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power STFT ``(1 + N_FFT // 2, T)`` and the windowless time frames ``(T, WIN_LENGTH)``, centred."""
    _, _, window, _ = _filterbanks()
    pad = WIN_LENGTH // 2
    yp = np.pad(y, (pad, pad), mode="constant")
    frames = librosa.util.frame(yp, frame_length=WIN_LENGTH, hop_length=HOP_LENGTH, axis=0)  # (T, WIN)
    spec = np.fft.rfft(frames * window, n=N_FFT, axis=1)
    return (spec.real**2 + spec.imag**2).T.astype(np.float32), frames


def _trim_span(frame_db: np.ndarray) -> tuple[int, int]:
    """First and one-past-last frame within :data:`TRIM_TOP_DB` of the loudest frame."""
    keep = np.flatnonzero(frame_db >= frame_db.max() - TRIM_TOP_DB)
    return int(keep[0]), int(keep[-1]) + 1


def _functionals(x: np.ndarray) -> np.ndarray:
    """Mean, std, p10, p50, p90 of every row of ``x`` (shape ``(d, T)``) -> ``(5, d)``."""
    pct = np.percentile(x, [10.0, 50.0, 90.0], axis=1)
    return np.vstack([x.mean(axis=1), x.std(axis=1), pct])


def _pitch(power: np.ndarray, frame_db: np.ndarray) -> np.ndarray:
    """Autocorrelation F0 features (see module doc, step 5) from the power STFT ``(bins, T)``."""
    ac = np.fft.irfft(power, n=N_FFT, axis=0)[:WIN_LENGTH]  # (lags, T)
    r0 = ac[0]
    ok = r0 > 0
    lag_min = int(np.floor(SAMPLE_RATE / F0_MAX))
    lag_max = min(int(np.ceil(SAMPLE_RATE / F0_MIN)), WIN_LENGTH // 2)
    lags = np.arange(lag_min, lag_max + 1)
    r = ac[lag_min : lag_max + 1] / np.where(ok, r0, 1.0)[None, :]
    r = np.clip(r, -1.0, 1.0)
    best = np.argmax(r, axis=0)
    t = np.arange(r.shape[1])
    strength = r[best, t]
    # parabolic interpolation of the peak lag
    b_lo = np.clip(best - 1, 0, len(lags) - 1)
    b_hi = np.clip(best + 1, 0, len(lags) - 1)
    a, b, c = r[b_lo, t], strength, r[b_hi, t]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(np.abs(denom) > 1e-9, denom, 1.0), 0.0)
    lag = lags[best] + np.clip(shift, -0.5, 0.5)
    f0 = SAMPLE_RATE / lag
    voiced = ok & (strength >= VOICING_THRESHOLD) & (frame_db >= frame_db.max() - VOICED_ENERGY_DB)
    out = np.zeros(len(_PITCH), dtype=np.float64)
    out[7] = voiced.mean()
    out[8] = float(strength[voiced].mean()) if voiced.any() else 0.0
    if voiced.sum() >= 2:
        st = 12.0 * np.log2(f0[voiced] / 100.0)
        p10, p50, p90 = np.percentile(st, [10.0, 50.0, 90.0])
        times = t[voiced] * (HOP_LENGTH / SAMPLE_RATE)
        slope = np.polyfit(times, st, 1)[0] if np.ptp(times) > 0 else 0.0
        out[:7] = [st.mean(), st.std(), p10, p50, p90, p90 - p10, slope]
    return out


def extract_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Compute the fixed-length feature vector of one recording.

    Args:
        y: mono samples, shape ``(n,)``, float in [-1, 1], at ``sr``.
        sr: sample rate of ``y`` in Hz; must be :data:`ser_model.audio.SAMPLE_RATE` (16 kHz),
            as produced by :func:`ser_model.audio.load_audio`.

    Returns:
        float32 array of shape ``(N_FEATURES,)`` (760), named by :func:`feature_names`.

    Raises:
        ValueError: ``sr`` is not 16 kHz or ``y`` is not one-dimensional.
        AudioError: fewer than :data:`MIN_FRAMES` frames (100 ms) of sound remain after trimming.
    """
    if sr != SAMPLE_RATE:
        raise ValueError(f"features are defined at {SAMPLE_RATE} Hz, got {sr} Hz; resample with load_audio")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono samples of shape (n,), got {y.shape}")
    mel_fb, chroma_fb, _, freqs = _filterbanks()
    power, frames = _power_spectrogram(y)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    frame_db = 20.0 * np.log10(np.maximum(rms, 1e-10))
    start, stop = _trim_span(frame_db)
    if stop - start < MIN_FRAMES:
        raise AudioError(
            f"too little sound: {(stop - start) * HOP_LENGTH / SAMPLE_RATE:.3f} s above the silence threshold"
        )
    P = power[:, start:stop]
    fr = frames[start:stop]
    fdb = frame_db[start:stop]
    mag = np.sqrt(P)

    logmel = librosa.power_to_db(mel_fb @ P, ref=1.0, amin=1e-10, top_db=80.0)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
    mfcc_d = librosa.feature.delta(mfcc, width=9, order=1, mode="nearest")
    mfcc_dd = librosa.feature.delta(mfcc, width=9, order=2, mode="nearest")
    chroma = librosa.util.normalize(chroma_fb @ P, norm=np.inf, axis=0)
    contrast = librosa.feature.spectral_contrast(
        S=mag, sr=SAMPLE_RATE, n_fft=N_FFT, fmin=CONTRAST_FMIN, n_bands=CONTRAST_BANDS
    )
    centroid = librosa.feature.spectral_centroid(S=mag, freq=freqs)
    bandwidth = librosa.feature.spectral_bandwidth(S=mag, freq=freqs, centroid=centroid)
    rolloff = librosa.feature.spectral_rolloff(S=mag, freq=freqs, roll_percent=0.85)
    flatness = librosa.feature.spectral_flatness(S=mag, power=2.0)
    signs = np.signbit(fr)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)[None, :]
    rms_db = fdb[None, :]
    rms_db_d = librosa.feature.delta(rms_db, width=9, order=1, mode="nearest")

    lld = np.vstack(
        [logmel, mfcc, mfcc_d, mfcc_dd, chroma, contrast, centroid, bandwidth, rolloff, flatness, zcr, rms_db, rms_db_d]
    ).astype(np.float64)
    stats = _functionals(lld).ravel()  # stat-major, matches feature_names()
    pitch = _pitch(P, fdb)
    duration = np.array([(stop - start) * HOP_LENGTH / SAMPLE_RATE])
    out = np.concatenate([stats, pitch, duration]).astype(np.float32)
    if not np.isfinite(out).all():  # defensive: would poison the scaler
        raise AudioError("feature extraction produced non-finite values")
    return out
