import numpy as np
import pytest

from ser_model.audio import AudioError, load_audio
from ser_model.features import N_FEATURES, extract_features, feature_names
from tests.conftest import RAVDESS, RAVDESS_48K, needs_corpus, tone


def test_shape_names_and_determinism():
    y = tone(freq=180, seconds=2.0)
    a = extract_features(y)
    b = extract_features(y.copy())
    assert a.shape == (N_FEATURES,) and a.dtype == np.float32
    assert len(feature_names()) == N_FEATURES == len(set(feature_names()))
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f0", [110.0, 220.0, 330.0])
def test_pitch_feature_tracks_f0(f0):
    x = extract_features(tone(freq=f0, seconds=1.5))
    names = feature_names()
    st = x[names.index("f0_st_p50")]
    assert 100 * 2 ** (st / 12) == pytest.approx(f0, rel=0.03)
    assert x[names.index("voiced_fraction")] > 0.8


def test_silence_is_trimmed():
    y = tone(seconds=1.0)
    padded = np.concatenate([np.zeros(16000, np.float32), y, np.zeros(16000, np.float32)])
    names = feature_names()
    d = extract_features(padded)[names.index("speech_duration_s")]
    assert d == pytest.approx(1.0, abs=0.05)


def test_rejects_wrong_rate_and_too_little_sound():
    with pytest.raises(ValueError, match="16000"):
        extract_features(tone(), sr=48000)
    with pytest.raises(ValueError, match="mono"):
        extract_features(np.zeros((100, 2), np.float32))
    burst = np.zeros(16000, np.float32)
    burst[8000:8400] = tone(seconds=0.025)[:400]
    with pytest.raises(AudioError, match="too little sound"):
        extract_features(burst)


@needs_corpus
def test_48k_original_and_16k_copy_give_near_equal_features():
    """The same RAVDESS recording as the 48 kHz original and the 16 kHz FLAC gives near-equal features."""
    names = sorted(p.name for p in (RAVDESS_48K / "Actor_01").glob("*.wav"))[:5]
    assert names
    for name in names:
        y48, info48 = load_audio(RAVDESS_48K / "Actor_01" / name)
        y16, info16 = load_audio((RAVDESS / "Actor_01" / name).with_suffix(".flac"))
        assert (info48.sample_rate, info16.sample_rate) == (48000, 16000)
        a, b = extract_features(y48), extract_features(y16)
        # standardised difference, relative to the spread of each feature over the feature vector blocks
        assert np.corrcoef(a, b)[0, 1] > 0.9999
        rel = np.abs(a - b) / (np.abs(b) + 1.0)
        assert np.median(rel) < 0.01
        assert np.mean(rel < 0.05) > 0.95


# Values of ser-feat-3 for one real recording (level normalisation and noise floor, issue 11; scipy's
# float32 FFT, issue 14). The extractor must keep them within float32 rounding: a model bundle records
# only FEATURE_VERSION, not the numbers.
PINNED_FILE = "Actor_01/03-01-05-01-01-01-01.flac"
PINNED = {
    "logmel_10_mean": -20.31263542175293,
    "mfcc_01_std": 36.94478225708008,
    "mfcc_d_03_p90": 2.977383852005005,
    "chroma_05_p50": 0.31270891427993774,
    "contrast_00_std": 5.6314167976379395,
    "contrast_06_mean": 18.135406494140625,
    "centroid_mean": 2261.81201171875,
    "bandwidth_p10": 1487.4814453125,
    "rolloff_p90": 6350.0,
    "flatness_mean": 0.09411007165908813,
    "zcr_p50": 0.1164383590221405,
    "rms_db_d_std": 1.6407760381698608,
    "f0_st_p50": 7.449163436889648,
    "voiced_fraction": 0.6702127456665039,
    "speech_duration_s": 1.8799999952316284,
    "seg2_f0_st_mean": 7.979642391204834,
    "hnr_db_mean": 1.7185190916061401,
    "ltas_slope_db_per_oct": -5.180513858795166,
    "mfcc_04_kurtosis": -0.4762079119682312,
    "logmel_40_voiced_mean": -27.96984100341797,
}

# The same values of ser-feat-2, computed by the librosa-based extractor (numpy's FFT) that the
# ser-feat-2 default model was trained with. ser-feat-3 keeps every definition and changes only
# float rounding, so it must stay close to them. The tolerance is the one ser-feat-2 held against
# librosa (rtol=1e-4, atol=1e-5) except for the lowest spectral-contrast band: its valley is the
# quietest bin below 100 Hz, a magnitude near the FFT's rounding floor, and scipy's float32 FFT
# rounds it differently from numpy's (on 200 RAVDESS files contrast_00_std moved by up to 0.107 dB,
# 0.14 of its spread over files; every other value stayed within the ser-feat-2 tolerance on
# 99.99 % of the values). Here it moved by 3e-5 dB: rtol=1e-4 holds for this file, and a looser
# rtol=1e-3 is allowed for contrast_00_* so the check says what the FFT change may do, not more.
PINNED_FEAT2_LIBROSA = {
    "logmel_10_mean": -28.360321044921875,
    "mfcc_01_std": 45.290706634521484,
    "mfcc_d_03_p90": 3.464137554168701,
    "chroma_05_p50": 0.31147927045822144,
    "contrast_00_std": 5.5510759353637695,
    "contrast_06_mean": 30.846832275390625,
    "centroid_mean": 1913.708740234375,
    "bandwidth_p10": 1153.956787109375,
    "rolloff_p90": 5875.0,
    "flatness_mean": 0.042807407677173615,
    "zcr_p50": 0.10371819883584976,
    "rms_db_d_std": 1.75059974193573,
    "f0_st_p50": 7.424361228942871,
    "voiced_fraction": 0.6914893388748169,
    "speech_duration_s": 1.8799999952316284,
    "seg2_f0_st_mean": 7.984096527099609,
    "hnr_db_mean": 1.6675416231155396,
    "ltas_slope_db_per_oct": -5.261237621307373,
    "mfcc_04_kurtosis": -0.617563009262085,
    "logmel_40_voiced_mean": -37.872032165527344,
}


@needs_corpus
def test_pinned_values_of_a_real_recording_are_unchanged():
    y, _ = load_audio(RAVDESS / PINNED_FILE)
    x = extract_features(y)
    names = feature_names()
    got = np.array([x[names.index(k)] for k in PINNED])
    np.testing.assert_allclose(got, np.array(list(PINNED.values())), rtol=1e-4, atol=1e-5)


@needs_corpus
def test_feat3_equals_librosa_based_feat2_up_to_fft_rounding():
    """Steps 1-9 (no level normalisation, no noise floor) equal the librosa-based ser-feat-2 values."""
    from ser_model.features import _features

    y, _ = load_audio(RAVDESS / PINNED_FILE)
    x = _features(y)
    names = feature_names()
    for k, want in PINNED_FEAT2_LIBROSA.items():
        rtol = 1e-3 if k.startswith("contrast_00_") else 1e-4
        assert x[names.index(k)] == pytest.approx(want, rel=rtol, abs=1e-5), k


def test_tables_equal_librosa_filters():
    """The filter banks built without librosa are librosa's, bit for bit (windows, mel, chroma)."""
    import librosa
    import scipy.signal

    from ser_model.features import N_FFT, N_MELS, WIN_LENGTH, _tables

    t = _tables()
    np.testing.assert_array_equal(t.freqs, librosa.fft_frequencies(sr=16000, n_fft=N_FFT))
    mel = librosa.filters.mel(sr=16000, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=8000.0)
    np.testing.assert_array_equal(t.mel_fb, mel.astype(np.float32))
    np.testing.assert_array_equal(t.chroma_fb, librosa.filters.chroma(sr=16000, n_fft=N_FFT, tuning=0.0))
    hann = librosa.filters.get_window("hann", WIN_LENGTH, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(t.window, hann)
    np.testing.assert_allclose(t.sg1, scipy.signal.savgol_coeffs(9, 1, deriv=1), atol=1e-15)
    np.testing.assert_allclose(t.sg2, scipy.signal.savgol_coeffs(9, 2, deriv=2), atol=1e-15)


def _spectrogram(y: np.ndarray) -> np.ndarray:
    """Power spectrogram ``(T, bins)`` float32 with the extractor's framing."""
    import scipy.fft

    from ser_model.features import N_FFT, _frames, _tables

    spec = scipy.fft.rfft(_frames(y) * _tables().window, n=N_FFT, axis=1)
    return spec.real * spec.real + spec.imag * spec.imag


@pytest.mark.parametrize("kind", ["tone", "noise", "gap"])
def test_spectral_shape_equals_librosa(kind):
    """Contrast, centroid, bandwidth, roll-off and flatness equal librosa.feature's on the same spectrogram."""
    import librosa

    from ser_model.features import CONTRAST_BANDS, CONTRAST_FMIN, N_FFT, _spectral_shape, _tables

    rng = np.random.default_rng(1)
    y = {
        "tone": tone(freq=170, seconds=1.0),
        "noise": (0.1 * rng.standard_normal(16000)).astype(np.float32),
        "gap": np.concatenate([tone(seconds=0.5), np.zeros(4000, np.float32), tone(freq=260, seconds=0.5)]),
    }[kind]
    power_t = _spectrogram(y)
    mag_t = np.sqrt(power_t)
    t = _tables()
    contrast, centroid, bandwidth, rolloff, flatness = _spectral_shape(t, power_t, mag_t)
    S = mag_t.T
    ref_contrast = librosa.feature.spectral_contrast(
        S=S, sr=16000, n_fft=N_FFT, fmin=CONTRAST_FMIN, n_bands=CONTRAST_BANDS
    )
    ref_centroid = librosa.feature.spectral_centroid(S=S, freq=t.freqs)
    np.testing.assert_allclose(contrast, ref_contrast, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(centroid, ref_centroid, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        bandwidth, librosa.feature.spectral_bandwidth(S=S, freq=t.freqs, centroid=ref_centroid), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(rolloff, librosa.feature.spectral_rolloff(S=S, freq=t.freqs, roll_percent=0.85))
    np.testing.assert_allclose(flatness, librosa.feature.spectral_flatness(S=S, power=2.0), rtol=1e-5, atol=1e-9)


def test_functionals_and_deltas_equal_numpy_and_librosa():
    import librosa
    import scipy.ndimage

    from ser_model.features import _functionals, _tables

    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 57))
    f = _functionals(x)
    np.testing.assert_allclose(f[2:], np.percentile(x, [10.0, 50.0, 90.0], axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f[:2], np.vstack([x.mean(axis=1), x.std(axis=1)]), rtol=1e-12)
    m = rng.standard_normal((20, 40)).astype(np.float32)
    t = _tables()
    for order, coeffs in ((1, t.sg1), (2, t.sg2)):
        got = scipy.ndimage.convolve1d(m, coeffs, axis=-1, mode="nearest")
        want = librosa.feature.delta(m, width=9, order=order, mode="nearest")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rolloff_two_step_search_equals_cumulative_sum():
    """The block-then-bin roll-off search gives the bin of a full cumulative sum, edge cases included."""
    from ser_model.features import _rolloff_bins

    rng = np.random.default_rng(3)
    mag = (rng.random((40, 513)) ** 4).astype(np.float32)
    mag[0] = 0.0  # silent frame: bin 0, as librosa
    mag[1] = 0.0
    mag[1, 512] = 1.0  # all energy in the Nyquist bin (the last, one-bin block)
    mag[2] = 0.0
    mag[2, [15, 16]] = [17.0, 3.0]  # threshold (0.85 * 20 = 17) reached exactly at a block's last bin
    mag[3] = 0.0
    mag[3, 300] = 1.0  # one peak
    cum = np.cumsum(mag.astype(np.float64), axis=1)
    want = np.argmax(cum >= 0.85 * cum[:, -1:], axis=1)
    np.testing.assert_array_equal(_rolloff_bins(mag), want)
    assert list(_rolloff_bins(mag)[:4]) == [0, 512, 15, 300]


def test_zcr_from_one_cumulative_count_equals_per_frame_count():
    from ser_model.features import WIN_LENGTH, _frames, _zcr

    rng = np.random.default_rng(4)
    y = (0.1 * rng.standard_normal(7000)).astype(np.float32)
    y[1000:1500] = 0.0  # digital silence: no crossings
    y[2000] = -0.0  # negative zero has its sign bit set, as np.signbit says
    signs = np.signbit(_frames(y))
    want = np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / (WIN_LENGTH - 1)
    n = want.shape[0]
    for start, stop in ((0, n), (0, 5), (3, n - 2), (n - 4, n)):
        np.testing.assert_array_equal(_zcr(y, start, stop), want[start:stop])


def test_fast_transforms_equal_their_definitions():
    """DCT-I autocorrelation = irfft of the power spectrum; MFCC matrix = scipy's DCT; sparse mel = dense."""
    import scipy.fft

    from ser_model.features import N_FFT, _tables

    rng = np.random.default_rng(5)
    power = (rng.random((6, N_FFT // 2 + 1)) ** 2).astype(np.float64)
    ac = scipy.fft.irfft(power, n=N_FFT, axis=1)[:, : N_FFT // 2 + 1]
    np.testing.assert_allclose(scipy.fft.dct(power, type=1, axis=1) / N_FFT, ac, rtol=1e-9, atol=1e-12)
    t = _tables()
    logmel = rng.standard_normal((64, 30)).astype(np.float32)
    np.testing.assert_allclose(
        t.dct_mat @ logmel, scipy.fft.dct(logmel, axis=0, type=2, norm="ortho")[:20], rtol=1e-5, atol=1e-5
    )
    p = rng.random((513, 30)).astype(np.float32)
    np.testing.assert_allclose(t.mel_sparse @ p, t.mel_fb @ p, rtol=1e-5, atol=1e-7)


def test_extractor_does_not_import_librosa():
    """The hot path is numpy/scipy: a worker never pays librosa's import and numba cache loads."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from ser_model.features import extract_features; "
        "extract_features((0.1*np.sin(np.arange(16000)/8)).astype(np.float32)); "
        "print('librosa' in sys.modules, 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_prepared_process_reuses_heap_pages_between_files():
    """After ``prepare_process_env`` (glibc thresholds), extracting features faults in no new pages per file.

    With glibc's default, dynamic thresholds a process may return the STFT's buffers to the kernel
    after every file and fault them in again (about 900 page faults per 3.8-s file, depending on the
    heap's history); the fixed thresholds must keep them for files up to the 10-s whole-file limit.
    """
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc-only")
    code = (
        "import resource, sys, numpy as np\n"
        "from worker.settings import prepare_process_env\n"
        "prepare_process_env()\n"
        "from ser_model.features import extract_features\n"
        "rng = np.random.default_rng(0)\n"
        "ys = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (64000, 152000, 9000)]\n"
        "for _ in range(3):\n"
        "    for y in ys: extract_features(y)\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    for y in ys: extract_features(y)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 30)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) < 10  # 4 s, 9.5 s and 0.56 s files in turn: the heap pages of the last file are reused
