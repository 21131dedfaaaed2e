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
from ser_model.featureset import ACCURATE, FAST, extract, n_features
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
