"""Recording conditions for multi-condition training and the conditions benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_model import degrade as d
from ser_model.datasets import LabelledFile
from ser_model.level import active_level_db
from ser_model.training import babble_groups, condition_table, extract_table
from tests.conftest import TESS, needs_corpus, tone, write


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy[: clean.size] - clean
    return 10 * np.log10(10 ** (active_level_db(clean) / 10) / np.mean(noise.astype(np.float64) ** 2))


@pytest.mark.parametrize("colour", list(d.NOISE_COLOURS))
@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_coloured_noise_lands_at_the_requested_snr(colour, snr):
    y = tone(seconds=2.0)
    out = d.apply(y, d.Condition("x", (d.Step("noise", {"colour": colour, "snr_db": snr}),)), np.random.default_rng(1))
    assert abs(_snr_db(y, out) - snr) < 0.5


def test_noise_colours_have_their_spectral_slopes():
    rng = np.random.default_rng(0)
    slopes = {}
    for colour in d.NOISE_COLOURS:
        w = d.coloured_noise(1 << 16, colour, rng)
        p = np.abs(np.fft.rfft(w)) ** 2
        f = np.fft.rfftfreq(w.size, 1 / 16000)
        band = (f > 100) & (f < 4000)
        slopes[colour] = np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0]
    assert abs(slopes["white"]) < 1.0
    assert abs(slopes["pink"] + 10) < 1.5  # -10 dB per decade
    assert abs(slopes["brown"] + 20) < 1.5


def test_conditions_are_deterministic_per_seed():
    y = tone(seconds=1.5)
    voices = [tone(freq=180, seconds=1.0), tone(freq=300, seconds=0.7)]
    for cond in d.TEST_CONDITIONS:
        a = d.apply(y, cond, np.random.default_rng(5), babble=voices)
        b = d.apply(y, cond, np.random.default_rng(5), babble=voices)
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all() and a.size >= y.size
    r1 = d.random_condition(np.random.default_rng(3))
    assert r1 == d.random_condition(np.random.default_rng(3))


def test_telephone_removes_everything_above_4_khz():
    y = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    for codec in d.TELEPHONE_CODECS:
        out = d.telephone(y, codec)
        p = np.abs(np.fft.rfft(out)) ** 2
        f = np.fft.rfftfreq(out.size, 1 / 16000)
        assert p[f > 4200].sum() < 1e-3 * p[(f > 300) & (f < 3400)].sum()


def test_rooms_reach_their_reverberation_time():
    for rt in (0.3, 0.6, 0.9):
        rir, realised = d.room_for_rt60(rt)
        assert abs(realised - rt) < 0.25 * rt + 0.1
        assert abs(np.sum(rir.astype(np.float64) ** 2) - 1) < 1e-4
    bank = d.room_bank(d.TRAIN_ROOM_SEED, 4)
    assert len(bank) == 4 and all(np.isfinite(r[0]).all() for r in bank)


def test_babble_without_voices_is_an_error_and_unknown_steps_are_refused():
    y = tone(seconds=1.0)
    with pytest.raises(ValueError, match="other speaker"):
        d.apply(y, d.Condition("b", (d.Step("babble", {"snr_db": 5.0}),)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown condition step"):
        d.apply(y, d.Condition("z", (d.Step("zap", {}),)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="colour"):
        d.coloured_noise(10, "purple", np.random.default_rng(0))


def test_lossy_codecs_round_trip_to_the_same_length():
    y = tone(seconds=1.2)
    for codec in d.LOSSY_CODECS:
        out = d.lossy_codec(y, codec, 0.9)
        assert out.shape == y.shape and np.isfinite(out).all()
        assert not np.allclose(out, y, atol=1e-3)


def test_babble_groups_follow_the_cross_validation_folds():
    speakers = [f"a{i // 10}" for i in range(100)]  # 10 speakers x 10 files
    groups = babble_groups(speakers, n_splits=5)
    for s in set(speakers):  # one speaker, one group
        assert len({g for g, sp in zip(groups, speakers, strict=True) if sp == s}) == 1
    assert sorted(set(groups)) == [0, 1, 2, 3, 4]
    assert babble_groups([None, None]) == [-1, -2]


def test_condition_copies_never_hear_a_test_speaker(tmp_path, monkeypatch):
    """Every babble voice of a copy comes from the copy's own fold group, never from its own speaker."""
    import ser_model.training as tr

    files = []
    for spk in range(6):
        for k in range(3):
            p = write(tmp_path / f"s{spk}" / f"{k}.wav", tone(freq=120 + 30 * spk + 5 * k, seconds=1.0), 16000)
            files.append(LabelledFile(p, ["calm", "sad", "angry"][k], f"s{spk}"))
    table = extract_table(files, n_jobs=1)
    seen: list[tuple[str, list[str]]] = []
    real = tr._condition_features_of

    def spy(path, seed, babble_paths, fv, cache_file=None):
        seen.append((path, list(babble_paths)))
        return real(path, seed, babble_paths, fv, cache_file)

    monkeypatch.setattr(tr, "_condition_features_of", spy)
    copies = condition_table(table, 2, seed=3, n_splits=3, n_jobs=1)
    groups = dict(zip(table.speakers, babble_groups(table.speakers, 3), strict=True))
    assert len(seen) == 2 * len(files)
    for path, pool in seen:
        own = path.split("/")[-2]
        assert pool and all(p.split("/")[-2] != own for p in pool)
        assert {groups[p.split("/")[-2]] for p in pool} == {groups[own]}
    assert len(copies.labels) == 2 * len(files) and copies.X.shape[1] == table.X.shape[1]
    assert all("#cond" in p for p in copies.paths)
    again = condition_table(table, 2, seed=3, n_splits=3, n_jobs=1)
    np.testing.assert_array_equal(copies.X, again.X)  # seeded: the same copies


def test_external_babble_voices_are_the_only_babble_and_copies_are_cached_by_what_decides_them(tmp_path, monkeypatch):
    """With babble_files (LibriSpeech voices), every copy's babble pool is those files and nothing of
    the training data; the copies are cached: a second run computes nothing, adding a file computes
    only that file's copies, and another seed or another babble set recomputes."""
    import ser_model.training as tr

    files = []
    for spk in range(4):
        for k in range(2):
            p = write(tmp_path / f"s{spk}" / f"{k}.wav", tone(freq=150 + 30 * spk + 7 * k, seconds=1.0), 16000)
            files.append(LabelledFile(p, ["calm", "angry"][k], f"s{spk}"))
    voices = [
        str(write(tmp_path / "voices" / f"v{i}.wav", tone(freq=300 + 40 * i, seconds=1.5), 16000)) for i in range(4)
    ]
    table = extract_table(files, n_jobs=1)
    cache = tmp_path / "cache"
    computed: list[tuple[str, list[str]]] = []
    real = tr._condition_features_of

    def spy(path, seed, babble_paths, fv, cache_file=None):
        if cache_file is None or not Path(cache_file).exists():
            computed.append((path, list(babble_paths)))
        return real(path, seed, babble_paths, fv, cache_file)

    monkeypatch.setattr(tr, "_condition_features_of", spy)
    first = condition_table(table, 2, seed=1, n_splits=2, n_jobs=1, babble_files=voices, cache_dir=cache)
    assert len(computed) == 2 * len(files)
    assert all(pool == sorted(voices) for _, pool in computed)
    computed.clear()
    again = condition_table(table, 2, seed=1, n_splits=2, n_jobs=1, babble_files=voices, cache_dir=cache)
    assert computed == []  # all from the cache
    np.testing.assert_array_equal(first.X, again.X)
    assert first.paths == again.paths  # the condition family travels with the cached copy
    extra = LabelledFile(write(tmp_path / "s9" / "0.wav", tone(freq=444, seconds=1.0), 16000), "calm", "s9")
    bigger = extract_table([*files, extra], n_jobs=1)
    condition_table(bigger, 2, seed=1, n_splits=2, n_jobs=1, babble_files=voices, cache_dir=cache)
    assert sorted({p for p, _ in computed}) == [str(extra.path)]  # only the new file's two copies
    computed.clear()
    condition_table(table, 2, seed=2, n_splits=2, n_jobs=1, babble_files=voices, cache_dir=cache)
    assert len(computed) == 2 * len(files)  # another seed: other copies
    computed.clear()
    condition_table(table, 1, seed=1, n_splits=2, n_jobs=1, babble_files=voices[:3], cache_dir=cache)
    assert len(computed) == len(files)  # another babble set: other copies


@needs_corpus
def test_degraded_real_file_keeps_its_clean_label_more_often_with_the_accurate_model():
    """Real speech the models never heard (TESS, both speakers) through noise, a phone line and a room."""
    from ser_model.model import DEFAULT_MODEL_PATH, FAST_MODEL_PATH, load_bundle

    acc, fast = load_bundle(DEFAULT_MODEL_PATH), load_bundle(FAST_MODEL_PATH)
    from ser_model.audio import load_audio

    paths = sorted(TESS.rglob("*.flac"))[::140]  # 20 files across speakers and emotions
    conds = [c for c in d.TEST_CONDITIONS if c.name in ("pink-10dB", "telephone-ulaw", "reverb-0.6s")]
    agree = {"accurate": 0, "fast": 0}
    for p in paths:
        y = load_audio(p)[0]
        for c in conds:
            yd = d.apply(y, c, np.random.default_rng(0))
            for name, b in (("accurate", acc), ("fast", fast)):
                clean = b.predict_proba(b.extract(y)[None])[0].argmax()
                agree[name] += int(b.predict_proba(b.extract(yd)[None])[0].argmax() == clean)
    assert agree["accurate"] > agree["fast"]
