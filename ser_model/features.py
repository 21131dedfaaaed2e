"""Utterance-level acoustic features, all derived from one STFT of the 16 kHz signal.

Pipeline for one recording ``y`` (mono, 16 kHz, from :func:`ser_model.audio.load_audio`):

0. Level normalisation (``ser-feat-3``): ``y`` is scaled to an active speech level of -26 dBFS
   (:func:`ser_model.level.normalise_level`, ITU-R BS.1770-4 gating), so no feature depends on the
   recording's gain: the dB-valued features (log-mel, MFCC 0, ``rms_db``, ...) are levels relative
   to the file's own active speech level. After the speech span is found (step 2, on the signal
   itself), a fixed white-noise floor at
   :data:`NOISE_FLOOR_DBFS` (-55 dBFS, 29 dB below the speech level; seeded Gaussian noise, the same
   samples for every file) is added. Without it, the quietest parts of a studio recording (breaths,
   high bands of soft frames) carry a microphone- and gain-specific noise floor: the same file at
   -20 dB, stored in 16 bits, has its quantisation noise 20 dB higher relative to the speech, which
   moves MFCCs of quiet frames and flips labels. With the floor, everything more than about 29 dB
   below the speech level reads the same in every recording (a fixed, known signal-to-noise ratio,
   the "noise flooring" of robust ASR front ends). The level was chosen on RAVDESS grouped CV:
   -60 / -55 dBFS gave WA 0.548 / 0.547 and label agreement at -20 dB (16-bit) 0.864 / 0.905
   (``benchmarks/results/robustness.md``).

1. One STFT: Hann window of 512 samples (32 ms), hop 160 samples (10 ms), FFT size 1024
   (zero-padded, so that the autocorrelation below has no circular aliasing for lags up to 32 ms).
2. Trim leading/trailing silence in the frame domain: keep the span of frames whose energy is within
   :data:`TRIM_TOP_DB` dB of the loudest frame (the rule of ``librosa.effects.trim``, applied to the
   STFT frames instead of a second framing). The frame RMS comes from the time-domain frames, so the
   span is found before the FFT and only the kept frames are transformed (the same frames, so the
   same values as transforming all and trimming afterwards).

   Implementation note (speed): every librosa feature below is computed by a direct numpy/scipy
   equivalent of librosa's definition (same filter banks, same Savitzky-Golay filters, same
   contrast sub-bands), and percentiles come from one sort. ``ser-feat-3`` has the definitions of
   ``ser-feat-2`` and differs from it only by float rounding: the STFT is scipy's float32 FFT
   (about 8x faster than numpy's, which rounds differently), the autocorrelation a DCT-I, the
   roll-off a two-step search, the mel filter bank a sparse product. Of the values of 200 16-kHz
   RAVDESS files 99.99 % stay within ``rtol=1e-4, atol=1e-5`` of ``ser-feat-2`` (99.7 % of 255
   files resampled from 48 kHz); the largest differences are in spectral-contrast valleys (the mean of
   a sub-band's quietest 2 % of bins, where the two FFTs' rounding is a large part of the value), up
   to 0.14 of the feature's spread over files (``tests/unit/test_features.py``,
   ``benchmarks/results/throughput.md``). Accuracy on RAVDESS is unchanged
   (``benchmarks/compare_features.py``).
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

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.sparse

from ser_model.audio import SAMPLE_RATE, AudioError
from ser_model.level import normalise_level

FEATURE_VERSION = "ser-feat-3"
"""Identifier of the feature definition; stored in every model bundle."""

NOISE_FLOOR_DBFS = -55.0
"""Level (dBFS RMS) of the fixed white-noise floor added after level normalisation (module doc, step 0)."""

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


_FLOOR_SEED = 20261122
_FLOOR_TABLE_S = 10  # seconds of stored floor noise, tiled for longer signals


@lru_cache(maxsize=4)
def _floor_table(level_dbfs: float) -> np.ndarray:
    """Fixed Gaussian white noise of :data:`_FLOOR_TABLE_S` seconds at ``level_dbfs`` RMS (seeded: deterministic)."""
    rng = np.random.default_rng(_FLOOR_SEED)
    noise = rng.standard_normal(_FLOOR_TABLE_S * SAMPLE_RATE)
    return (noise / np.sqrt(np.mean(noise**2)) * 10.0 ** (level_dbfs / 20.0)).astype(np.float32)


def _noise_floor(n: int) -> np.ndarray:
    """The first ``n`` samples of the fixed noise floor at :data:`NOISE_FLOOR_DBFS`, shape ``(n,)`` float32."""
    table = _floor_table(NOISE_FLOOR_DBFS)
    if n <= table.shape[0]:
        return table[:n]
    return np.resize(table, n)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (``librosa.hz_to_mel(htk=False)``): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    mels = f / f_sp
    log_t = f >= 1000.0
    mels[log_t] = 1000.0 / f_sp + np.log(f[log_t] / 1000.0) / (np.log(6.4) / 27.0)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel` (``librosa.mel_to_hz(htk=False)``)."""
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    log_t = mels >= 1000.0 / f_sp
    freqs[log_t] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_t] - 1000.0 / f_sp))
    return freqs


def _mel_filterbank(freqs: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``(n_mels, bins)`` over 0-8 kHz, as ``librosa.filters.mel``."""
    edges = np.array([0.0, SAMPLE_RATE / 2])
    lo, hi = _hz_to_mel(edges)
    mel_f = _mel_to_hz(np.linspace(lo, hi, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, freqs)
    weights = np.zeros((n_mels, freqs.shape[0]), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def _chroma_filterbank() -> np.ndarray:
    """Chroma filters ``(12, bins)``, A440 tuning, as ``librosa.filters.chroma`` (Ellis' chromagram weights).

    Gaussian bumps over the pitch class of every FFT bin, columns L2-normalised, weighted by a
    Gaussian over octaves centred at octave 5 (2 octaves wide), rows starting at C.
    """
    n_chroma = 12
    frequencies = np.linspace(0, SAMPLE_RATE, N_FFT, endpoint=False)[1:]
    frqbins = n_chroma * np.log2(frequencies / (440.0 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    n_chroma2 = np.round(float(n_chroma) / 2)
    D = np.remainder(D + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2
    wts = np.exp(-0.5 * (2 * D / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    length = np.sum(np.abs(wts) ** 2, axis=0, keepdims=True) ** (1.0 / 2)
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    wts = wts / length
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2.0) ** 2)), (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, : 1 + N_FFT // 2], dtype=np.float32)


def _hann() -> np.ndarray:
    """Periodic ("DFT-even") Hann window of :data:`WIN_LENGTH` samples, float32 (``scipy.signal.get_window``)."""
    fac = np.linspace(-np.pi, np.pi, WIN_LENGTH + 1)
    w = np.zeros(WIN_LENGTH + 1)
    w += 0.5 * np.cos(0 * fac)
    w += 0.5 * np.cos(1 * fac)
    return w[:-1].astype(np.float32)


def _savgol_deriv(order: int) -> np.ndarray:
    """9-tap Savitzky-Golay derivative filter of ``librosa.feature.delta(width=9, order=order)``.

    The least-squares polynomial of degree ``order`` over 9 frames, differentiated ``order`` times at
    the centre (``scipy.signal.savgol_coeffs(9, order, deriv=order)``), as convolution coefficients.
    """
    k = np.arange(-4, 5, dtype=np.float64)
    if order == 1:
        return -k / np.sum(k**2)  # slope; reversed for convolution
    k2 = k**2 - np.mean(k**2)
    return 2.0 * k2 / np.sum(k2**2)  # 2 x the quadratic coefficient (symmetric)


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Filter banks, window, bin frequencies and fixed filter/regression weights, built once per process.

    Built with numpy alone, operation for operation as librosa 0.11 builds them (the unit tests check
    them against librosa), so a worker process never imports librosa or ``scipy.signal`` (about
    1.5 s of start-up with numba's cache loads).
    """
    freqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)  # librosa.fft_frequencies
    mel_fb = _mel_filterbank(freqs)
    chroma_fb = _chroma_filterbank()
    window = _hann()
    # spectral contrast bands, exactly as librosa.feature.spectral_contrast builds them
    octa = np.zeros(CONTRAST_BANDS + 2)
    octa[1:] = CONTRAST_FMIN * (2.0 ** np.arange(0, CONTRAST_BANDS + 1))
    bands: list[tuple[int, int, int]] = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:], strict=True)):
        band = np.logical_and(freqs >= f_low, freqs <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == CONTRAST_BANDS:
            band[idx[-1] + 1 :] = True
        n_q = int(np.maximum(np.rint(0.02 * np.sum(band)), 1))  # librosa's default quantile 0.02
        sel = np.flatnonzero(band)  # contiguous run of bins
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        if k < CONTRAST_BANDS:
            hi -= 1  # librosa drops the top bin of every band but the last
        bands.append((lo, hi, n_q))
    sg1, sg2 = _savgol_deriv(1), _savgol_deriv(2)  # librosa.feature.delta, width 9
    # DCT-II (orthonormal) as a matrix: MFCC = dct_mat @ logmel (scipy.fft.dct(..., axis=0, norm="ortho"))
    dct_mat = scipy.fft.dct(np.eye(N_MELS), type=2, norm="ortho", axis=0)[:N_MFCC].astype(np.float32)
    moments = np.stack([np.ones_like(freqs), freqs, freqs**2], axis=1)  # (bins, 3) for centroid/bandwidth
    m = (freqs > 0) & (freqs < 5000.0)
    x = np.log2(freqs[m])
    ltas_x = (x - x.mean()) / np.sum((x - x.mean()) ** 2)  # least-squares slope weights over log2 frequency
    return _Tables(
        mel_fb=mel_fb,
        mel_sparse=scipy.sparse.csr_array(mel_fb),
        chroma_fb=chroma_fb,
        window=window,
        freqs=freqs,
        bands=tuple(bands),
        sg1=sg1,
        sg2=sg2,
        dct_mat=dct_mat,
        moments=moments,
        ltas_mask=m,
        ltas_x=ltas_x,
        alpha_lo=_bin_range(freqs, 50.0, 1000.0),
        alpha_hi=_bin_range(freqs, 1000.0, 5000.0),
        hamm_lo=_bin_range(freqs, 0.0, 2000.0),
        hamm_hi=_bin_range(freqs, 2000.0, 5000.0),
    )


class _Tables(NamedTuple):
    mel_fb: np.ndarray  # (N_MELS, bins) float32
    mel_sparse: scipy.sparse.csr_array  # the same, sparse (about 2 non-zero weights per bin)
    chroma_fb: np.ndarray  # (12, bins) float32
    window: np.ndarray  # (WIN_LENGTH,) float32 periodic Hann
    freqs: np.ndarray  # (bins,) Hz
    bands: tuple[tuple[int, int, int], ...]  # contrast sub-band bin ranges [lo, hi) and quantile counts
    sg1: np.ndarray  # (9,) first-derivative Savitzky-Golay coefficients
    sg2: np.ndarray  # (9,) second-derivative Savitzky-Golay coefficients
    dct_mat: np.ndarray  # (N_MFCC, N_MELS) float32 orthonormal DCT-II rows
    moments: np.ndarray  # (bins, 3): 1, f, f^2
    ltas_mask: np.ndarray  # (bins,) bool, 0 < f < 5 kHz
    ltas_x: np.ndarray  # slope weights over log2(f) of the masked bins
    alpha_lo: slice  # bins of 50-1000 Hz (alpha ratio, eGeMAPS)
    alpha_hi: slice  # 1-5 kHz
    hamm_lo: slice  # 0-2 kHz (Hammarberg index)
    hamm_hi: slice  # 2-5 kHz


def _bin_range(freqs: np.ndarray, lo: float, hi: float) -> slice:
    """The FFT bins with ``lo <= f < hi`` (Hz) as a slice (they are contiguous)."""
    idx = np.flatnonzero((freqs >= lo) & (freqs < hi))
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _frames(y: np.ndarray) -> np.ndarray:
    """Centred, zero-padded time frames ``(T, WIN_LENGTH)`` as a read-only strided view (no copy)."""
    pad = WIN_LENGTH // 2
    yp = np.zeros(y.shape[0] + 2 * pad, dtype=np.float32)
    yp[pad : pad + y.shape[0]] = y
    n_frames = 1 + (yp.shape[0] - WIN_LENGTH) // HOP_LENGTH  # librosa.util.frame
    step = yp.strides[0]
    return np.lib.stride_tricks.as_strided(
        yp, shape=(n_frames, WIN_LENGTH), strides=(HOP_LENGTH * step, step), writeable=False
    )


def _frame_db(y: np.ndarray, n_frames: int) -> np.ndarray:
    """RMS level (dBFS) of every frame of :func:`_frames`, shape ``(T,)``.

    A frame (512 samples, hop 160) is 16 consecutive blocks of 32 samples starting at block ``5 t``,
    so block sums of the squared signal give every frame energy without re-reading overlapping samples.
    """
    pad = WIN_LENGTH // 2
    blk = 32  # gcd(HOP_LENGTH, WIN_LENGTH, pad): the padding is a whole number of blocks
    n = y.shape[0] + 2 * pad
    n_blocks = -(-n // blk)
    bs = np.zeros(n_blocks)  # block energies of the zero-padded signal
    full = y.shape[0] // blk
    yb = y[: full * blk].reshape(full, blk)
    bs[pad // blk : pad // blk + full] = np.einsum("ij,ij->i", yb, yb)  # float32 sums of 32 squares
    if y.shape[0] > full * blk:
        tail = y[full * blk :].astype(np.float64)
        bs[pad // blk + full] = np.dot(tail, tail)
    per, step = WIN_LENGTH // blk, HOP_LENGTH // blk
    energy = np.lib.stride_tricks.sliding_window_view(bs, per)[::step][:n_frames].sum(axis=1)
    rms = np.sqrt(energy / WIN_LENGTH)
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def _trim_span(frame_db: np.ndarray) -> tuple[int, int]:
    """First and one-past-last frame within :data:`TRIM_TOP_DB` of the loudest frame."""
    keep = np.flatnonzero(frame_db >= frame_db.max() - TRIM_TOP_DB)
    return int(keep[0]), int(keep[-1]) + 1


def speech_span(y: np.ndarray) -> tuple[int, int]:
    """Sample span ``[start, stop)`` of the speech in ``y``: the frames the features keep (step 1).

    The first to the last frame within :data:`TRIM_TOP_DB` (40 dB) of the loudest frame, the rule of
    ``librosa.effects.trim(y, top_db=40, frame_length=512, hop_length=160)``, in samples: ``start``
    is the first kept frame's hop position, ``stop`` the last kept frame's end of hop, clipped to
    ``len(y)``.

    Args:
        y: mono float32 samples ``(n,)`` at 16 kHz, ``n >= 1``.

    Returns:
        ``(start, stop)``, ``0 <= start < stop <= n``.
    """
    start, stop = _trim_span(_frame_db(y, 1 + y.shape[0] // HOP_LENGTH))
    return start * HOP_LENGTH, min(y.shape[0], stop * HOP_LENGTH)


def _percentiles(xs: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(x, q, axis=-1)`` (method "linear") from ``xs``, ``x`` already sorted along the last axis.

    Returns:
        shape ``(len(q), *xs.shape[:-1])``.
    """
    n = xs.shape[-1]
    out = []
    for p in q:
        v = (n - 1) * p / 100.0
        lo = int(np.floor(v))
        hi = min(lo + 1, n - 1)
        g = v - lo
        a, b = xs[..., lo], xs[..., hi]
        out.append(a + (b - a) * g if g else a)  # numpy's lerp (exact at g = 0)
    return np.stack(out)


def _pct(xs: np.ndarray, p: float) -> float:
    """``np.percentile(x, p)`` (method "linear") of a sorted 1-D ``xs``, as a Python float."""
    v = (xs.shape[0] - 1) * p / 100.0
    lo = int(v)
    a = float(xs[lo])
    g = v - lo
    return a + (float(xs[min(lo + 1, xs.shape[0] - 1)]) - a) * g if g else a


def _functionals(x: np.ndarray) -> np.ndarray:
    """Mean, std, p10, p50, p90 of every row of ``x`` (shape ``(d, T)``) -> ``(5, d)`` float64.

    Mean and standard deviation accumulate in float64 whatever the dtype of ``x``; the percentiles
    come from one sort of the whole block in ``x``'s own dtype (the LLD block is float32: a sort only
    selects values, and numpy's SIMD sort of float32 is about twice as fast as of float64).
    """
    return np.vstack(
        [
            x.mean(axis=1, dtype=np.float64),
            x.std(axis=1, dtype=np.float64),
            _percentiles(np.sort(x, axis=1), (10.0, 50.0, 90.0)),
        ]
    )


def _slope(t: np.ndarray, v: np.ndarray) -> float:
    """Least-squares slope of ``v`` over ``t`` (``np.polyfit(t, v, 1)[0]``)."""
    tc = t - t.mean()
    return float(np.dot(tc, v - v.mean()) / np.dot(tc, tc))


_LAG_MIN = SAMPLE_RATE // int(F0_MAX)  # 32 samples: 500 Hz
_LAG_MAX = min(-(-SAMPLE_RATE // int(F0_MIN)), WIN_LENGTH // 2)  # 256 samples (62.5 Hz; 60 Hz would need 267)


def _pitch(power_t: np.ndarray, frame_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Autocorrelation F0 (see module doc, step 5) from the power STFT ``(T, bins)``.

    Only frames within :data:`VOICED_ENERGY_DB` of the loudest can be voiced, so only they are
    transformed. The autocorrelation of a frame is the inverse DFT of its power spectrum
    (Wiener-Khinchin); for a real, even spectrum that is a DCT-I of the one-sided power spectrum
    (``scipy.fft.dct(type=1)`` = ``N_FFT * scipy.fft.irfft(power, N_FFT)`` at lags 0-512), which
    skips the complex input of ``irfft``. The scale cancels in the normalisation by lag 0.

    Returns:
        ``(features (9,), f0 in semitones re 100 Hz (T,), voiced mask (T,), voicing strength (T,))``;
        F0 and strength are 0 in frames too quiet to be voiced.
    """
    lag_min, lag_max = _LAG_MIN, _LAG_MAX
    n = power_t.shape[0]
    cand = np.flatnonzero(frame_db >= frame_db.max() - VOICED_ENERGY_DB)  # never empty: the loudest frame
    ac = scipy.fft.dct(power_t[cand], type=1, axis=1)  # (n_cand, lags 0..N_FFT/2), float32
    r0 = ac[:, 0]
    ok = r0 > 0
    r = ac[:, lag_min : lag_max + 1] / np.where(ok, r0, 1.0)[:, None]
    np.clip(r, -1.0, 1.0, out=r)
    n_lags = r.shape[1]
    best = np.argmax(r, axis=1)
    i = np.arange(r.shape[0])
    b = r[i, best]
    # parabolic interpolation of the peak lag
    a = r[i, np.maximum(best - 1, 0)]
    c = r[i, np.minimum(best + 1, n_lags - 1)]
    denom = a - 2 * b + c
    big = np.abs(denom) > 1e-9
    shift = np.where(big, 0.5 * (a - c) / np.where(big, denom, 1.0), 0.0)
    lag = (best + lag_min) + np.clip(shift, -0.5, 0.5)
    strength = np.zeros(n, dtype=r.dtype)
    strength[cand] = b
    st_all = np.zeros(n)
    st_all[cand] = 12.0 * np.log2((SAMPLE_RATE / 100.0) / lag)
    voiced = np.zeros(n, dtype=bool)
    voiced[cand] = ok & (b >= VOICING_THRESHOLD)
    out = np.zeros(len(_PITCH), dtype=np.float64)
    vidx = np.flatnonzero(voiced)
    n_voiced = vidx.shape[0]
    out[7] = n_voiced / n
    out[8] = float(strength[vidx].mean()) if n_voiced else 0.0
    if n_voiced >= 2:
        st = st_all[vidx]
        sts = np.sort(st)
        p10, p50, p90 = _pct(sts, 10.0), _pct(sts, 50.0), _pct(sts, 90.0)
        slope = _slope(vidx * (HOP_LENGTH / SAMPLE_RATE), st)
        out[:7] = [st.mean(), st.std(), p10, p50, p90, p90 - p10, slope]
    return out, st_all, voiced, strength


def _skew_kurt(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness and excess kurtosis of every row of ``x`` ``(d, T)`` (0 for constant rows)."""
    c = x - x.mean(axis=1, keepdims=True)
    c2 = c * c
    m2 = np.mean(c2, axis=1)
    ok = m2 > 1e-12
    m2s = np.where(ok, m2, 1.0)
    skew = np.where(ok, np.mean(c2 * c, axis=1) / m2s**1.5, 0.0)
    kurt = np.where(ok, np.mean(c2 * c2, axis=1) / (m2s * m2s) - 3.0, 0.0)
    return skew, kurt


def _contour_and_prosody(
    tab: _Tables,
    power_t: np.ndarray,
    logmel: np.ndarray,
    mf: np.ndarray,
    st: np.ndarray,
    voiced: np.ndarray,
    strength: np.ndarray,
) -> np.ndarray:
    """Features of module doc steps 7-9 from the trimmed frames.

    Args:
        tab: :func:`_tables`.
        power_t: power spectrogram ``(T, bins)``.
        logmel: log-mel ``(N_MELS, T)`` (dB).
        mf: ``(N_MFCC + 1, T)`` float64, the MFCC rows and ``rms_db`` (dBFS) as the last row.
        st, voiced, strength: F0 (semitones re 100 Hz), voiced mask and voicing strength ``(T,)``
            from :func:`_pitch`.
    """
    T = mf.shape[1]
    mfcc, fdb = mf[:N_MFCC], mf[N_MFCC]
    vidx = np.flatnonzero(voiced)
    n_voiced = vidx.shape[0]
    vf = voiced.astype(np.float64)
    stv = st * vf  # F0 of the voiced frames, 0 elsewhere
    f0_fill = float(stv.sum() / n_voiced) if n_voiced else 0.0
    # 7. segment means: contour of timbre, level, voicing and pitch over N_SEGMENTS equal parts, as
    # sums over the parts in one reduceat (T >= MIN_FRAMES, so no part is empty)
    edges = np.array([k * T // N_SEGMENTS for k in range(N_SEGMENTS + 1)])  # = np.linspace(0, T, 5).astype(int)
    rows = np.vstack([mf[:N_SEG_MFCC], fdb, vf, stv])  # (len(_SEG_ITEMS), T), in _SEG_ITEMS order
    sums = np.add.reduceat(rows, edges[:-1], axis=1)  # (items, N_SEGMENTS)
    seg = sums / np.diff(edges)
    nv = sums[N_SEG_MFCC + 1]
    seg[N_SEG_MFCC + 2] = np.where(nv > 0, sums[N_SEG_MFCC + 2] / np.maximum(nv, 1.0), f0_fill)
    # 8. rhythm, pitch dynamics, voice quality, energy dynamics
    vi = np.zeros(T + 2, dtype=np.int8)
    vi[1:-1] = voiced
    d = vi[1:] - vi[:-1]
    runs = (np.flatnonzero(d == -1) - np.flatnonzero(d == 1)) * (HOP_LENGTH / SAMPLE_RATE)
    dur = T * HOP_LENGTH / SAMPLE_RATE
    fdb_max = float(fdb.max())
    pause = float(np.count_nonzero(fdb < fdb_max - VOICED_ENERGY_DB)) / T
    dst = (st[1:] - st[:-1])[voiced[1:] & voiced[:-1]]  # F0 change between consecutive voiced frames
    if dst.size:
        dsts = np.sort(dst)
        f0dyn = [float(np.abs(dst).mean()), float(dst.std()), _pct(dsts, 10.0), _pct(dsts, 90.0)]
    else:
        f0dyn = [0.0, 0.0, 0.0, 0.0]
    r = np.clip(strength[vidx], 1e-3, 0.999) if n_voiced else np.array([1e-3])
    hnr = 10.0 * np.log10(r / (1.0 - r))
    # alpha ratio (band energies) and Hammarberg index (band peaks) of the voiced frames (all frames
    # when fewer than 2 are voiced), in one log10 of a (4, frames) block
    sel = vidx if n_voiced >= 2 else slice(None)
    e = np.vstack(
        [
            power_t[:, tab.alpha_lo].sum(axis=1)[sel],
            power_t[:, tab.alpha_hi].sum(axis=1)[sel],
            power_t[:, tab.hamm_lo].max(axis=1)[sel],
            power_t[:, tab.hamm_hi].max(axis=1)[sel],
        ]
    )
    e = 10.0 * np.log10(e + 1e-10)
    ah = e[0::2] - e[1::2]  # (2, frames): alpha ratio, Hammarberg index (dB)
    ah_mean, ah_std = ah.mean(axis=1), ah.std(axis=1)
    w = vf if n_voiced >= 2 else np.ones(T)
    ltas = 10.0 * np.log10((w / w.sum()).astype(np.float32) @ power_t + 1e-10)  # long-term average spectrum
    slope = float(np.dot(tab.ltas_x, ltas[tab.ltas_mask]))
    fv = fdb[vidx] if n_voiced else fdb
    skew, kurt = _skew_kurt(mf)  # MFCC rows and rms_db
    fdbs = np.sort(fdb)
    prosody = [
        len(runs) / dur,
        runs.mean() if runs.size else 0.0,
        runs.std() if runs.size else 0.0,
        pause,
        *f0dyn,
        hnr.mean(),
        hnr.std(),
        _pct(np.sort(hnr), 90.0),
        ah_mean[0],
        ah_std[0],
        ah_mean[1],
        ah_std[1],
        slope,
        fv.std(),
        _pct(fdbs, 95.0) - _pct(fdbs, 5.0),
        fv.mean() - fdb_max,
        skew[N_MFCC],
        kurt[N_MFCC],
    ]
    # 9. voiced-frame spectra and higher moments of MFCC
    mv = mfcc[:, vidx] if n_voiced >= 2 else mfcc
    lv = logmel[:, vidx] if n_voiced >= 2 else logmel
    return np.concatenate(
        [
            seg.T.ravel(),
            prosody,
            mv.mean(axis=1),
            mv.std(axis=1),
            skew[:N_MFCC],
            kurt[:N_MFCC],
            lv.mean(axis=1, dtype=np.float64),
        ]
    )


def _power_to_db(s: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=top_db)`` (dB)."""
    out = 10.0 * np.log10(np.maximum(s, 1e-10))
    return np.maximum(out, out.max() - top_db)


ROLLOFF_BLOCK = 16  # bins per block of the two-step roll-off search


def _rolloff_bins(mag_t: np.ndarray, roll_percent: float = 0.85) -> np.ndarray:
    """Index of the lowest bin whose cumulative magnitude reaches ``roll_percent`` of the frame total.

    The definition of ``librosa.feature.spectral_rolloff``, found in two vectorised steps instead of
    one sequential cumulative sum over all 513 bins (numpy's float32 cumulative sum is not
    vectorised): sums of blocks of :data:`ROLLOFF_BLOCK` bins locate the block where the cumulative
    sum crosses the threshold, then the cumulative sum over that block's bins locates the bin. The
    block sums are float32 and accumulated in float64, so the bin can differ from librosa's float32
    cumulative sum only where the two roundings fall on either side of the threshold.

    Args:
        mag_t: magnitude spectrogram ``(T, bins)``, non-negative.

    Returns:
        ``(T,)`` bin indices (int).
    """
    n, n_bins = mag_t.shape
    B = ROLLOFF_BLOCK
    blocks = np.add.reduceat(mag_t, np.arange(0, n_bins, B), axis=1)  # (T, blocks) float32
    cb = np.zeros((n, blocks.shape[1] + 1))  # cumulative block sums, 0 before the first block
    np.cumsum(blocks, axis=1, dtype=np.float64, out=cb[:, 1:])
    thr = roll_percent * cb[:, -1:]
    # the cumulative sums do not decrease, so "first index reaching thr" = "count of those below it"
    blk = np.count_nonzero(cb[:, 1:] < thr, axis=1)
    idx = np.minimum(blk[:, None] * B + np.arange(B), n_bins - 1)  # (T, B) bins of that block
    cw = cb[np.arange(n), blk][:, None] + np.cumsum(np.take_along_axis(mag_t, idx, axis=1), axis=1, dtype=np.float64)
    # rounding can leave the in-block sum just short of the threshold the block sum reached: then
    # the block's last bin
    k = np.minimum(np.count_nonzero(cw < thr, axis=1), np.minimum(B - 1, n_bins - 1 - blk * B))
    return blk * B + k


def _spectral_shape(
    tab: _Tables, power_t: np.ndarray, mag_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spectral contrast ``(7, T)``, centroid, bandwidth, roll-off and flatness ``(1, T)`` from ``(T, bins)`` spectra.

    Vectorised equivalents of ``librosa.feature.spectral_contrast`` (``fmin=100``, 6 bands, quantile
    0.02), ``spectral_centroid``, ``spectral_bandwidth`` (p = 2), ``spectral_rolloff`` (85 %) and
    ``spectral_flatness`` (power 2, amin 1e-10) on the magnitude spectrogram; the same definitions,
    equal to librosa's values within float32 rounding.
    """
    n = mag_t.shape[0]
    # contrast: mean of the lowest / highest 2 % of each octave sub-band (Jiang et al. 2002)
    valley = np.empty((CONTRAST_BANDS + 1, n))
    peak = np.empty((CONTRAST_BANDS + 1, n))
    # sub-bands of one bin per side (the 5 lowest, adjacent): min and max of each in one call
    one = [k for k, (_, _, n_q) in enumerate(tab.bands) if n_q == 1]
    starts = [tab.bands[k][0] for k in one]
    low = mag_t[:, : tab.bands[one[-1]][1]]
    valley[one] = np.minimum.reduceat(low, starts, axis=1).T
    peak[one] = np.maximum.reduceat(low, starts, axis=1).T
    for k, (lo, hi, n_q) in enumerate(tab.bands):
        if n_q > 1:
            sub = np.sort(mag_t[:, lo:hi], axis=1)
            valley[k] = sub[:, :n_q].mean(axis=1)
            peak[k] = sub[:, -n_q:].mean(axis=1)
    contrast = _power_to_db(peak) - _power_to_db(valley)
    # centroid and bandwidth from the moments sum(S), sum(f S), sum(f^2 S) of each frame
    mom = mag_t @ tab.moments  # (T, 3), float64
    total = mom[:, 0]
    norm = np.where(total < np.finfo(np.float32).tiny, 1.0, total)
    centroid = mom[:, 1] / norm
    m2 = mom[:, 2] / norm - 2.0 * centroid * (mom[:, 1] / norm) + centroid * centroid * (total / norm)
    bandwidth = np.sqrt(np.maximum(m2, 0.0))
    rolloff = tab.freqs[_rolloff_bins(mag_t)]
    # flatness: geometric over arithmetic mean of the thresholded power spectrum
    s = np.maximum(power_t, 1e-10)
    arith = np.mean(s, axis=1)
    flatness = np.exp(np.mean(np.log(s, out=s), axis=1)) / arith
    return contrast, centroid[None, :], bandwidth[None, :], rolloff[None, :], flatness[None, :]


def _zcr(y: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Zero-crossing rate of frames ``start..stop-1`` of :func:`_frames` (crossings per sample), ``(T,)``.

    Counted as in ``librosa.feature.zero_crossing_rate`` (sign bit changes between neighbouring
    samples of a frame, 511 pairs per 512-sample frame, zero padding counting as positive), from one
    cumulative count over the samples instead of per frame (the frames overlap 3.2 times).
    """
    pad = WIN_LENGTH // 2
    lo = start * HOP_LENGTH  # in the zero-padded signal of _frames
    hi = (stop - 1) * HOP_LENGTH + WIN_LENGTH
    sb = np.zeros(hi - lo, dtype=bool)
    a, b = max(lo, pad), min(hi, pad + y.shape[0])
    if b > a:
        sb[a - lo : b - lo] = np.signbit(y[a - pad : b - pad])
    c = np.zeros(hi - lo, dtype=np.int32)  # c[j]: crossings between samples 0..j of the range
    np.cumsum(sb[1:] != sb[:-1], out=c[1:])
    off = np.arange(stop - start) * HOP_LENGTH
    return (c[off + WIN_LENGTH - 1] - c[off]) / (WIN_LENGTH - 1)


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
    from ser_model.threads import one_blas_thread

    with one_blas_thread():  # the same numbers whoever calls (ser_model.threads)
        y = normalise_level(y)  # step 0: gain invariance (ser_model.level) ...
        return _features(y, _noise_floor(y.shape[0]))  # ... and the fixed noise floor


def _features(y: np.ndarray, floor: np.ndarray | None = None) -> np.ndarray:
    """Steps 1-9 of the module doc on ``y`` (float32 ``(n,)``), adding ``floor`` ``(n,)`` after trimming.

    Without ``floor`` and on an unnormalised signal this is the ``ser-feat-2`` computation (the
    tests compare it with the librosa-based extractor).
    """
    tab = _tables()
    n_all = 1 + y.shape[0] // HOP_LENGTH  # frames of _frames(y)
    # the speech span is found on the signal itself; the noise floor is added after (step 0)
    start, stop = _trim_span(_frame_db(y, n_all))
    if stop - start < MIN_FRAMES:
        raise AudioError(
            f"too little sound: {(stop - start) * HOP_LENGTH / SAMPLE_RATE:.3f} s above the silence threshold"
        )
    if floor is not None:
        y = y + floor
    frames = _frames(y)  # (T_all, WIN) view
    frame_db = _frame_db(y, frames.shape[0])
    # the STFT of the kept frames only: trimming first gives the same frames as trimming the full STFT
    fr = frames[start:stop]
    buf = np.zeros((stop - start, N_FFT), dtype=np.float32)  # zero-padded windowed frames
    np.multiply(fr, tab.window, out=buf[:, :WIN_LENGTH])
    spec = scipy.fft.rfft(buf, axis=1, overwrite_x=True)  # (T, bins) complex64, scipy's float32 FFT
    del buf  # free the big buffers as soon as possible: the next arrays reuse their (cached) memory
    ri = spec.view(np.float32)  # (T, 2 * bins): re, im interleaved
    np.multiply(ri, ri, out=ri)
    power_t = np.add(ri[:, 0::2], ri[:, 1::2])  # (T, bins) float32, |X|^2
    del spec, ri
    P = power_t.T  # (bins, T) view
    fdb = frame_db[start:stop]
    mag_t = np.sqrt(power_t)

    logmel = _power_to_db(tab.mel_sparse @ P)  # librosa.feature.melspectrogram, sparse filter bank
    mf = np.empty((N_MFCC + 1, stop - start))  # MFCC rows + rms_db: deltas, moments and contour in one array
    np.matmul(tab.dct_mat, logmel, out=mf[:N_MFCC])  # librosa.feature.mfcc (DCT-II, orthonormal)
    mf[N_MFCC] = fdb
    mf_d = scipy.ndimage.convolve1d(mf, tab.sg1, axis=-1, mode="nearest")  # librosa.feature.delta
    mfcc_dd = scipy.ndimage.convolve1d(mf[:N_MFCC], tab.sg2, axis=-1, mode="nearest")
    chroma = tab.chroma_fb @ P
    cmax = chroma.max(axis=0)
    chroma /= np.where(cmax < np.finfo(np.float32).tiny, 1.0, cmax)  # librosa.util.normalize(norm=inf)
    contrast, centroid, bandwidth, rolloff, flatness = _spectral_shape(tab, power_t, mag_t)
    zcr = _zcr(y, start, stop)

    lld = np.vstack(
        [
            logmel,
            mf[:N_MFCC],  # mfcc
            mf_d[:N_MFCC],  # mfcc_d
            mfcc_dd,
            chroma,
            contrast,
            centroid,
            bandwidth,
            rolloff,
            flatness,
            zcr,
            mf[N_MFCC],  # rms_db
            mf_d[N_MFCC],  # rms_db_d
        ],
        dtype=np.float32,
    )
    stats = _functionals(lld).ravel()  # stat-major, matches feature_names()
    pitch, st, voiced, strength = _pitch(power_t, fdb)
    duration = np.array([(stop - start) * HOP_LENGTH / SAMPLE_RATE])
    extra = _contour_and_prosody(tab, power_t, logmel, mf, st, voiced, strength)
    out = np.concatenate([stats, pitch, duration, extra]).astype(np.float32)
    if not np.isfinite(out).all():  # defensive: would poison the scaler
        raise AudioError("feature extraction produced non-finite values")
    return out
