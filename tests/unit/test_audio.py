import numpy as np
import pytest
import soundfile as sf

from ser_model.audio import SAMPLE_RATE, AudioError, load_audio, probe_audio
from tests.conftest import make_bad_inputs, tone, write


@pytest.mark.parametrize(
    "sr,channels,subtype,fmt",
    [
        (48000, 1, "PCM_16", "WAV"),
        (44100, 2, "PCM_16", "WAV"),
        (96000, 1, "PCM_24", "WAV"),
        (22050, 1, "FLOAT", "WAV"),
        (8000, 1, "PCM_16", "FLAC"),
        (48000, 2, "VORBIS", "OGG"),
        (44100, 1, "MPEG_LAYER_III", "MP3"),
    ],
)
def test_any_format_becomes_mono_16k(tmp_path, sr, channels, subtype, fmt):
    y = tone(freq=200, seconds=1.0, sr=sr)
    data = np.stack([y] * channels, axis=1) if channels > 1 else y
    p = write(tmp_path / f"x.{fmt.lower()}", data, sr, subtype=subtype, format=fmt)
    out, info = load_audio(p)
    assert info.sample_rate == sr and info.channels == channels
    assert out.ndim == 1 and out.dtype == np.float32
    # length follows the rate change (MP3 adds encoder padding, allow 0.1 s)
    assert abs(out.size - SAMPLE_RATE) <= 0.1 * SAMPLE_RATE
    # the 200 Hz tone survives resampling: strongest bin of the spectrum near 200 Hz
    spec = np.abs(np.fft.rfft(out[2000:14000]))
    peak_hz = np.argmax(spec) * SAMPLE_RATE / 12000
    assert abs(peak_hz - 200) < 5


def test_stereo_is_averaged(tmp_path):
    left = tone(seconds=1.0)
    p = write(tmp_path / "st.wav", np.stack([left, -left], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="silent"):  # L + R cancel: the mono mix is silence
        load_audio(p)


@pytest.mark.parametrize(
    "name,reason",
    [
        ("empty.wav", "empty file"),
        ("text.wav", "not a readable audio file"),
        ("truncated.wav", "no audio samples"),
        ("short_20ms.wav", "too short"),
        ("silence.wav", "silent"),
        ("nan.wav", "NaN"),
        ("random.flac", "not a readable audio file"),
    ],
)
def test_bad_input_reasons(tmp_path, name, reason):
    make_bad_inputs(tmp_path)
    with pytest.raises(AudioError, match=reason) as e:
        load_audio(tmp_path / name)
    assert "\n" not in str(e.value)


def test_too_long_is_refused(tmp_path):
    p = write(tmp_path / "long.wav", tone(seconds=3.0), 16000)
    with pytest.raises(AudioError, match="too long"):
        load_audio(p, max_duration_s=2.0)


def test_missing_and_folder(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        probe_audio(tmp_path / "nope.wav")
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(AudioError, match="not a regular file"):
        probe_audio(tmp_path / "x.wav")


def test_probe_reads_header(tmp_path):
    p = write(tmp_path / "a.flac", tone(seconds=2.0, sr=48000), 48000)
    info = probe_audio(p)
    assert info.format == "FLAC" and info.sample_rate == 48000
    assert info.duration_s == pytest.approx(2.0, abs=1e-3)
    assert sf.info(str(p)).frames == info.frames
