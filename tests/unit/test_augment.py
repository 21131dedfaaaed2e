"""Waveform augmentations and their use in grouped cross-validation."""

import numpy as np
import pytest
import soundfile as sf

from ser_model.augment import (
    AUGMENTATIONS,
    add_noise,
    augment,
    parse_augmentations,
    pitch_shift,
    time_shift,
    time_stretch,
)
from ser_model.training import FeatureTable, augment_table, cross_validate, extract_table

SR = 16_000


def _sine(freq=200.0, dur=1.0, amp=0.5):
    t = np.arange(int(dur * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(y):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / SR)[spec.argmax()]


@pytest.mark.parametrize("snr", [10.0, 25.0])
def test_noise_has_the_requested_snr(snr):
    y = _sine()
    out = add_noise(y, snr, np.random.default_rng(0))
    noise = out.astype(np.float64) - y
    measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise**2))
    assert out.shape == y.shape and out.dtype == np.float32
    assert abs(measured - snr) < 0.3


def test_noise_leaves_silence_silent():
    assert not add_noise(np.zeros(100, np.float32), 20.0, np.random.default_rng(0)).any()


def test_time_shift_moves_samples_and_pads_with_zeros():
    y = np.arange(1, 11, dtype=np.float32)
    right = time_shift(y, 3 / SR, SR)
    left = time_shift(y, -3 / SR, SR)
    np.testing.assert_array_equal(right, [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(left, [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    assert not time_shift(y, 1.0, SR).any()  # longer than the signal: all zeros


def test_time_stretch_changes_length_not_pitch():
    y = _sine(300.0, 1.0)
    fast = time_stretch(y, 2.0)
    assert abs(len(fast) - len(y) / 2) < 0.02 * len(y)
    assert abs(_peak_hz(fast) - 300.0) < 10.0
    with pytest.raises(ValueError, match="positive"):
        time_stretch(y, 0.0)


def test_pitch_shift_an_octave_doubles_frequency_and_keeps_length():
    y = _sine(200.0, 1.0)
    up = pitch_shift(y, 12.0, SR)
    assert len(up) == len(y)
    assert abs(_peak_hz(up) - 400.0) < 10.0


def test_augment_by_name_and_parse():
    rng = np.random.default_rng(0)
    y = _sine()
    for kind in AUGMENTATIONS:
        out = augment(y, kind, rng)
        assert out.ndim == 1 and np.isfinite(out).all()
        assert not np.array_equal(out[: len(y)], y[: len(out)])  # it changed something
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(y, "reverb", rng)
    assert parse_augmentations("noise, pitch,noise") == ("noise", "pitch")
    assert parse_augmentations(None) == ()
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_augmentations("noise,echo")
    with pytest.raises(ValueError, match="mono"):
        add_noise(np.zeros((2, 10)), 10.0, rng)


def test_augment_table_copies_files_with_their_speaker_and_label(tmp_path):
    from ser_model.datasets import LabelledFile

    files = []
    for i, (freq, lab) in enumerate([(150.0, "calm"), (250.0, "angry"), (350.0, "sad")]):
        p = tmp_path / f"f{i}.wav"
        sf.write(p, _sine(freq, 0.8) + 0.01 * np.random.default_rng(i).standard_normal(int(0.8 * SR)), SR)
        files.append(LabelledFile(p, lab, f"s{i}"))
    t = extract_table(files, n_jobs=1)
    a1 = augment_table(t, ["noise", "shift"], n_jobs=1, seed=3)
    a2 = augment_table(t, ["noise", "shift"], n_jobs=1, seed=3)
    assert a1.X.shape == (6, t.X.shape[1]) and not a1.failed
    assert a1.paths[0] == f"{t.paths[0]}#noise" and a1.paths[3] == f"{t.paths[0]}#shift"
    assert a1.speakers == t.speakers * 2 and a1.labels == t.labels * 2
    np.testing.assert_array_equal(a1.X, a2.X)  # deterministic for a seed
    assert not np.allclose(a1.X[:3], t.X)


def test_cv_never_trains_on_copies_of_test_speakers():
    """Random labels carry no signal; copies of test files would let the MLP memorise them (WA ~ 1)."""
    rng = np.random.default_rng(0)
    n, labels = 120, ["calm", "angry", "sad"]
    X = rng.standard_normal((n, 20)).astype(np.float32)
    lab = [labels[i] for i in rng.integers(0, 3, n)]
    spk = [f"s{i % 6}" for i in range(n)]
    paths = [f"f{i}" for i in range(n)]
    t = FeatureTable(X, lab, spk, paths, [], "fp")
    copies = FeatureTable(X.copy(), lab, spk, [p + "#noise" for p in paths], [], "fp2")
    params = {"hidden_layer_sizes": (64,), "early_stopping": False, "alpha": 1e-4, "max_iter": 400}
    cv = cross_validate(t, labels=labels, n_splits=3, params=params, augmented=copies)
    assert cv["wa"] < 0.6
    # the same copies inside the training part only (a leak on purpose) would be memorised:
    leak = FeatureTable(np.vstack([X, X]), lab * 2, ["x"] * n + spk, paths * 2, [], "fp3")
    assert (
        cross_validate(leak, labels=labels, n_splits=3, params=params, splits=[(np.arange(n), np.arange(n, 2 * n))])[
            "wa"
        ]
        > 0.9
    )
