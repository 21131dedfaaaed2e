"""Shared fixtures: synthetic audio written with soundfile, an isolated database per test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RAVDESS = SHARED_DATA / "ravdess"
RAVDESS_48K = SHARED_DATA / "ravdess-48k"
TESS = SHARED_DATA / "tess"
LIBRISPEECH = SHARED_DATA / "librispeech"
"""Read audiobook speech (28 readers, no emotion labels): unlike every corpus the packaged models train on."""

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "ser-batch" / "numba"))

needs_corpus = pytest.mark.skipif(not RAVDESS.is_dir(), reason=f"corpus not found at {RAVDESS}")


def tone(
    freq: float = 220.0, seconds: float = 1.0, sr: int = 16000, amp: float = 0.3, harmonics: int = 5
) -> np.ndarray:
    """A harmonic tone with a little noise: voiced-speech-like test signal, shape (n,)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(amp / k * np.sin(2 * np.pi * freq * k * t) for k in range(1, harmonics + 1))
    return (y + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def write(path: Path, data: np.ndarray, sr: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, **kw)
    return path


@pytest.fixture()
def db_url(tmp_path, monkeypatch) -> str:
    """A fresh SQLite database for this test, set as SER_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'ser.db'}"
    monkeypatch.setenv("SER_DATABASE_URL", url)
    from worker.settings import get_settings

    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Write the bad-input zoo into ``folder``; returns {file name: expected status}."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    (folder / "empty.wav").write_bytes(b"")
    expected["empty.wav"] = "failed"
    (folder / "text.wav").write_text("this is not audio\n" * 20)
    expected["text.wav"] = "failed"
    good = write(folder / "full.wav", tone(seconds=2.0), 16000, subtype="PCM_16")
    data = good.read_bytes()
    (folder / "truncated.wav").write_bytes(data[:44])  # header only, declared length larger
    expected["truncated.wav"] = "failed"
    (folder / "truncated_half.wav").write_bytes(data[: len(data) // 2])  # cut mid-stream
    expected["truncated_half.wav"] = "done"  # libsndfile reads what is there: 1 s of sound, labelled
    good.unlink()
    write(folder / "short_20ms.wav", tone(seconds=0.02), 16000)
    expected["short_20ms.wav"] = "failed"
    write(folder / "silence.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    expected["silence.wav"] = "failed"
    nan = tone(seconds=1.0)
    nan[100:200] = np.nan
    write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    expected["nan.wav"] = "failed"
    (folder / "random.flac").write_bytes(np.random.default_rng(1).bytes(4096))
    expected["random.flac"] = "failed"
    write(folder / "ok_tone.wav", tone(seconds=1.5, sr=44100), 44100)
    expected["ok_tone.wav"] = "done"
    (folder / "notes.txt").write_text("ignored: not audio")
    return expected
