"""The speech encoder (Whisper tiny.en via CTranslate2, packaged) and the accurate feature set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ser_model.audio import AudioError, load_audio
from ser_model.encoder import (
    EncoderError,
    WhisperEncoder,
    default_encoder_dir,
    encoder_sha256,
    get_encoder,
    log_mel,
)
from ser_model.features import N_FEATURES, extract_features
from ser_model.featureset import (
    ACCURATE,
    ACCURATE_V1,
    ENCODER_MIN_SECONDS,
    ENCODER_TRIM_MARGIN_S,
    FAST,
    KNOWN_VERSIONS,
    extract,
    n_features,
)
from tests.conftest import RAVDESS, needs_corpus, tone


def test_packaged_encoder_loads_and_embeds_a_signal():
    enc = get_encoder()
    assert enc is get_encoder()  # one per process
    assert enc.dim == 768  # Whisper tiny: d_model 384, mean + std
    e = enc.embed(tone(seconds=1.5))
    assert e.shape == (768,) and e.dtype == np.float32 and np.isfinite(e).all()
    assert e[384:].min() >= 0  # the second half is a standard deviation
    info = enc.info.to_dict()
    assert info["sha256"] == encoder_sha256(default_encoder_dir()) and "tiny.en" in info["name"]


def test_wrong_checksum_is_refused_and_names_the_setting():
    with pytest.raises(EncoderError, match="SER_ENCODER_DIR"):
        get_encoder(expected_sha256="0" * 64)


def test_missing_or_broken_encoder_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="no readable encoder model"):
        WhisperEncoder(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    shutil.copy(default_encoder_dir() / "config.json", broken / "config.json")
    with pytest.raises(EncoderError, match="cannot load"):
        WhisperEncoder(broken)


def test_encoder_dir_setting_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_ENCODER_DIR", str(tmp_path / "mine"))
    assert default_encoder_dir() == tmp_path / "mine"


def test_mel_filters_are_librosas_whisper_filters():
    import librosa

    from ser_model.encoder import _mel_filters

    np.testing.assert_allclose(
        _mel_filters(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), rtol=1e-5, atol=1e-7
    )


def test_log_mel_is_whisper_shaped_and_clamped():
    y = tone(seconds=2.0)
    m = log_mel(y)
    assert m.shape == (80, 200)  # 10-ms hop, last frame dropped
    assert m.max() - m.min() <= 2.0 + 1e-6  # 8 decades / 4


def test_long_input_is_encoded_in_30s_windows():
    enc = get_encoder()
    y = np.tile(tone(seconds=1.0), 35)  # 35 s > one 30-s window
    e = enc.embed(y)
    assert e.shape == (768,) and np.isfinite(e).all()


def test_accurate_features_extend_the_fast_ones():
    y = tone(seconds=1.5)
    acc = extract(y, ACCURATE, get_encoder())
    assert acc.shape == (n_features(ACCURATE, 768),) == (N_FEATURES + 768,)
    np.testing.assert_array_equal(acc[:N_FEATURES], extract_features(y))
    np.testing.assert_array_equal(extract(y, FAST), extract_features(y))
    with pytest.raises(ValueError, match="needs an encoder"):
        extract(y, ACCURATE)
    with pytest.raises(ValueError, match="unknown feature version"):
        extract(y, "ser-feat-0")


def test_short_input_is_zero_padded_to_the_minimum_and_the_padding_pooled():
    enc = get_encoder()
    y = tone(seconds=2.0)
    padded = enc.embed(y, min_seconds=4.0)
    by_hand = enc.embed(np.concatenate([y, np.zeros(2 * 16000, np.float32)]))
    np.testing.assert_allclose(padded, by_hand, rtol=1e-6, atol=1e-6)
    assert np.linalg.norm(padded - enc.embed(y)) > 0.1 * np.linalg.norm(padded)  # padding changes the embedding
    long = tone(seconds=5.0)  # longer than the minimum: left as it is
    np.testing.assert_array_equal(enc.embed(long, min_seconds=4.0), enc.embed(long))
    assert ENCODER_MIN_SECONDS[ACCURATE] == 4.0 and ENCODER_MIN_SECONDS[ACCURATE_V1] == 0.0


def test_encoder_hears_the_speech_whatever_silence_surrounds_it():
    """The same utterance with 0.2 s or 1.5 s of silence before and after (a VAD segment against a
    corpus file) gives the same encoder input in the current set, up to the noise floor's samples
    (the floor is added over each recording's own length); the earlier whole-recording set
    (whisper-1) moves 0.5 of the embedding's norm."""
    rng = np.random.default_rng(0)
    speech = tone(seconds=1.5) * (1 + 0.3 * np.sin(np.linspace(0, 20, 24000, dtype=np.float32)))
    quiet = lambda s: (1e-4 * rng.standard_normal(int(s * 16000))).astype(np.float32)  # noqa: E731
    tight = np.concatenate([quiet(0.2), speech, quiet(0.2)])
    loose = np.concatenate([quiet(1.5), speech, quiet(1.5)])
    enc = get_encoder()
    a, b = extract(tight, ACCURATE, enc), extract(loose, ACCURATE, enc)
    v1a, v1b = extract(tight, ACCURATE_V1, enc), extract(loose, ACCURATE_V1, enc)

    def moved(x: np.ndarray, z: np.ndarray) -> float:
        return float(np.linalg.norm(x[N_FEATURES:] - z[N_FEATURES:]) / np.linalg.norm(x[N_FEATURES:]))

    assert moved(a, b) < 0.15  # measured 0.08
    assert moved(v1a, v1b) > 3 * moved(a, b)  # measured 0.51
    assert ENCODER_TRIM_MARGIN_S < 0.2


def test_earlier_accurate_bundles_keep_their_whole_recording_features():
    y = tone(seconds=1.5)
    v1, v2 = extract(y, ACCURATE_V1, get_encoder()), extract(y, ACCURATE, get_encoder())
    assert ACCURATE_V1 in KNOWN_VERSIONS and ACCURATE != ACCURATE_V1
    np.testing.assert_array_equal(v1[:N_FEATURES], v2[:N_FEATURES])
    np.testing.assert_array_equal(v1[N_FEATURES:], get_encoder().embed(_level_normalised(y)))
    assert not np.allclose(v1[N_FEATURES:], v2[N_FEATURES:])


def _level_normalised(y: np.ndarray) -> np.ndarray:
    from ser_model.features import _noise_floor
    from ser_model.level import normalise_level

    z = normalise_level(np.asarray(y, np.float32), 16000)
    return z + _noise_floor(z.shape[0])


def test_accurate_features_keep_the_gain_invariance():
    y = tone(seconds=1.5)
    a = extract(y, ACCURATE, get_encoder())
    b = extract(0.1 * y, ACCURATE, get_encoder())
    np.testing.assert_allclose(a[:N_FEATURES], b[:N_FEATURES], rtol=1e-3, atol=1e-3)
    # the encoder runs int8 with dynamic activation scales: float rounding moves a few quanta, no more
    ea, eb = a[N_FEATURES:], b[N_FEATURES:]
    assert np.linalg.norm(ea - eb) < 0.02 * np.linalg.norm(ea)


def test_too_little_sound_is_an_audio_error():
    y = np.zeros(16000, np.float32)
    y[8000:8400] = tone(seconds=0.025)
    with pytest.raises(AudioError):
        extract(y, ACCURATE, get_encoder())


@needs_corpus
def test_embeddings_of_real_speech_separate_speakers_less_than_noise():
    """Two utterances of one actor are closer in the encoder space than speech and white noise."""
    enc = get_encoder()
    a = enc.embed(load_audio(RAVDESS / "Actor_01" / "03-01-01-01-01-01-01.flac")[0])
    b = enc.embed(load_audio(RAVDESS / "Actor_01" / "03-01-01-01-02-01-01.flac")[0])
    noise = enc.embed(np.random.default_rng(0).standard_normal(60000).astype(np.float32) * 0.05)
    assert np.linalg.norm(a - b) < np.linalg.norm(a - noise)
