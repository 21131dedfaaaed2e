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
7. Contour: the trimmed frames cut into :data:`N_SEGMENTS` (4) equal parts; per part the mean of
   MFCC 0-12, ``rms_db`` (dBFS), the voiced fraction and the mean voiced F0 (semitones re 100 Hz; the
   utterance's mean F0 when the part has no voiced frame) -> ``4 * 16 = 64`` values
   (``seg<k>_<item>_mean``).
8. Prosody and voice quality -> 21 values:

   - rhythm: voiced runs per second (1/s), mean and std of voiced-run length (s), pause fraction
     (frames more than 30 dB below the loudest);
   - pitch dynamics: mean absolute, std, p10 and p90 of the F0 change between consecutive voiced
     frames (semitones per 10 ms frame);
   - harmonics-to-noise ratio from the voicing strength ``r``, ``10 log10(r / (1 - r))`` (dB,
     Boersma 1993): mean, std, p90 over voiced frames;
   - alpha ratio (energy 50-1000 Hz over 1-5 kHz, dB) and Hammarberg index (strongest peak 0-2 kHz
     over 2-5 kHz, dB), mean and std over voiced frames; slope of the long-term average spectrum
     0-5 kHz (dB per octave) -- the eGeMAPS spectral-balance parameters (Eyben et al. 2016, "The
     Geneva Minimalistic Acoustic Parameter Set", IEEE Trans. Affective Computing 7(2));
   - energy dynamics: std of ``rms_db`` over voiced frames, p95-p5 range of ``rms_db``, mean voiced
     level relative to the loudest frame (dB), skewness and excess kurtosis of ``rms_db``.
9. Voiced-frame spectra and MFCC shape: MFCC mean and std over voiced frames (``2 * 20``), skewness
   and excess kurtosis of every MFCC over all frames (``2 * 20``), log-mel mean over voiced frames
   (64) -> 144 values. (When fewer than 2 frames are voiced, all frames are used.)

The result is a float32 vector of :data:`N_FEATURES` (= 989) values, named by :func:`feature_names`.
Any change to this module that changes the numbers must change :data:`FEATURE_VERSION`: model bundles
record it and refuse to load under another version.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np

from ser_model.audio import SAMPLE_RATE, AudioError

FEATURE_VERSION = "ser-feat-2"
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
N_SEGMENTS = 4  # equal parts of the trimmed speech for the contour features
N_SEG_MFCC = 13
_SEG_ITEMS = tuple(f"mfcc_{i:02d}" for i in range(N_SEG_MFCC)) + ("rms_db", "voiced_fraction", "f0_st")
_PROSODY = (
    "voiced_runs_per_s",
    "voiced_run_mean_s",
    "voiced_run_std_s",
    "pause_fraction",
    "f0_st_delta_abs_mean",
    "f0_st_delta_std",
    "f0_st_delta_p10",
    "f0_st_delta_p90",
    "hnr_db_mean",
    "hnr_db_std",
    "hnr_db_p90",
    "alpha_ratio_db_mean",
    "alpha_ratio_db_std",
    "hammarberg_db_mean",
    "hammarberg_db_std",
    "ltas_slope_db_per_oct",
    "rms_db_voiced_std",
    "rms_db_range_p5_p95",
    "rms_db_voiced_mean_re_max",
    "rms_db_skew",
    "rms_db_kurtosis",
)
N_LLD = sum(d for _, d in _LLD_BLOCKS)
N_FEATURES = (
    N_LLD * len(_STATS)
    + len(_PITCH)
    + 1
    + N_SEGMENTS * len(_SEG_ITEMS)
    + len(_PROSODY)
    + 3 * N_MFCC  # voiced-frame MFCC mean, std; MFCC skewness
    + N_MFCC  # MFCC kurtosis
    + N_MELS  # voiced-frame log-mel mean
)


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
    for k in range(N_SEGMENTS):
        names.extend(f"seg{k}_{item}_mean" for item in _SEG_ITEMS)
    names.extend(_PROSODY)
    names.extend(f"mfcc_{i:02d}_voiced_mean" for i in range(N_MFCC))
    names.extend(f"mfcc_{i:02d}_voiced_std" for i in range(N_MFCC))
    names.extend(f"mfcc_{i:02d}_skew" for i in range(N_MFCC))
    names.extend(f"mfcc_{i:02d}_kurtosis" for i in range(N_MFCC))
    names.extend(f"logmel_{i:02d}_voiced_mean" for i in range(N_MELS))
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


def _pitch(power: np.ndarray, frame_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Autocorrelation F0 (see module doc, step 5) from the power STFT ``(bins, T)``.

    Returns:
        ``(features (9,), f0 in semitones re 100 Hz (T,), voiced mask (T,), voicing strength (T,))``.
    """
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
    return out, 12.0 * np.log2(f0 / 100.0), voiced, strength


def _skew_kurt(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness and excess kurtosis of every row of ``x`` ``(d, T)`` (0 for constant rows)."""
    c = x - x.mean(axis=1, keepdims=True)
    m2 = np.mean(c**2, axis=1)
    ok = m2 > 1e-12
    m2s = np.where(ok, m2, 1.0)
    skew = np.where(ok, np.mean(c**3, axis=1) / m2s**1.5, 0.0)
    kurt = np.where(ok, np.mean(c**4, axis=1) / m2s**2 - 3.0, 0.0)
    return skew, kurt


def _contour_and_prosody(
    P: np.ndarray,
    freqs: np.ndarray,
    logmel: np.ndarray,
    mfcc: np.ndarray,
    fdb: np.ndarray,
    st: np.ndarray,
    voiced: np.ndarray,
    strength: np.ndarray,
) -> np.ndarray:
    """Features of module doc steps 7-9 from the trimmed frames (``T`` frames each)."""
    T = fdb.shape[0]
    f0_fill = float(st[voiced].mean()) if voiced.any() else 0.0
    # 7. segment means: contour of timbre, level, voicing and pitch over N_SEGMENTS equal parts
    edges = np.linspace(0, T, N_SEGMENTS + 1).astype(int)
    seg: list[float] = []
    for k in range(N_SEGMENTS):
        a, b = edges[k], max(edges[k + 1], edges[k] + 1)
        v = voiced[a:b]
        seg.extend(mfcc[:N_SEG_MFCC, a:b].mean(axis=1))
        seg.extend([fdb[a:b].mean(), v.mean(), st[a:b][v].mean() if v.any() else f0_fill])
    # 8. rhythm, pitch dynamics, voice quality, energy dynamics
    d = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    runs = (np.flatnonzero(d == -1) - np.flatnonzero(d == 1)) * (HOP_LENGTH / SAMPLE_RATE)
    dur = T * HOP_LENGTH / SAMPLE_RATE
    pause = float(np.mean(fdb < fdb.max() - VOICED_ENERGY_DB))
    dst = np.diff(np.where(voiced, st, np.nan))
    dst = dst[np.isfinite(dst)]
    if dst.size:
        f0dyn = [np.abs(dst).mean(), dst.std(), *np.percentile(dst, [10.0, 90.0])]
    else:
        f0dyn = [0.0, 0.0, 0.0, 0.0]
    r = np.clip(strength[voiced], 1e-3, 0.999) if voiced.any() else np.array([1e-3])
    hnr = 10.0 * np.log10(r / (1.0 - r))
    Pv = P[:, voiced] if voiced.sum() >= 2 else P

    def band_db(lo: float, hi: float, reduce: str) -> np.ndarray:
        m = (freqs >= lo) & (freqs < hi)
        e = Pv[m].sum(axis=0) if reduce == "sum" else Pv[m].max(axis=0)
        return 10.0 * np.log10(e + 1e-10)

    alpha = band_db(50.0, 1000.0, "sum") - band_db(1000.0, 5000.0, "sum")
    hamm = band_db(0.0, 2000.0, "max") - band_db(2000.0, 5000.0, "max")
    ltas = 10.0 * np.log10(Pv.mean(axis=1) + 1e-10)
    m = (freqs > 0) & (freqs < 5000.0)
    slope = np.polyfit(np.log2(freqs[m]), ltas[m], 1)[0]
    fv = fdb[voiced] if voiced.any() else fdb
    rskew, rkurt = _skew_kurt(fdb[None, :])
    prosody = [
        len(runs) / dur,
        runs.mean() if runs.size else 0.0,
        runs.std() if runs.size else 0.0,
        pause,
        *f0dyn,
        hnr.mean(),
        hnr.std(),
        np.percentile(hnr, 90.0),
        alpha.mean(),
        alpha.std(),
        hamm.mean(),
        hamm.std(),
        slope,
        fv.std(),
        np.percentile(fdb, 95.0) - np.percentile(fdb, 5.0),
        fv.mean() - fdb.max(),
        rskew[0],
        rkurt[0],
    ]
    # 9. voiced-frame spectra and higher moments of MFCC
    mv = mfcc[:, voiced] if voiced.sum() >= 2 else mfcc
    lv = logmel[:, voiced] if voiced.sum() >= 2 else logmel
    mskew, mkurt = _skew_kurt(mfcc)
    return np.concatenate([seg, prosody, mv.mean(axis=1), mv.std(axis=1), mskew, mkurt, lv.mean(axis=1)])


def extract_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Compute the fixed-length feature vector of one recording.

    Args:
        y: mono samples, shape ``(n,)``, float in [-1, 1], at ``sr``.
        sr: sample rate of ``y`` in Hz; must be :data:`ser_model.audio.SAMPLE_RATE` (16 kHz),
            as produced by :func:`ser_model.audio.load_audio`.

    Returns:
        float32 array of shape ``(N_FEATURES,)`` (989), named by :func:`feature_names`.

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
    pitch, st, voiced, strength = _pitch(P, fdb)
    duration = np.array([(stop - start) * HOP_LENGTH / SAMPLE_RATE])
    extra = _contour_and_prosody(P, freqs, logmel, mfcc, fdb, st, voiced, strength)
    out = np.concatenate([stats, pitch, duration, extra]).astype(np.float32)
    if not np.isfinite(out).all():  # defensive: would poison the scaler
        raise AudioError("feature extraction produced non-finite values")
    return out
