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
