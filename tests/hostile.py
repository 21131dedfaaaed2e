"""The hostile-input zoo: every kind of file a batch can meet, generated with soundfile in a tmp dir.

Used by ``tests/unit/test_hostile_inputs.py`` (embedded mode, through the real CLI) and by
``tests/integration/test_faults.py`` (the same files through real Celery workers), so both modes are
held to the same expectations, which follow README's table "What any input becomes".
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# Names a shell or an SQL string would choke on; they must be stored exactly as given.
MARKER = "PWNED_MARKER"
"""File a command substitution in a file name would create if any name were ever run by a shell."""


@dataclass(frozen=True)
class Expect:
    """What one input must become.

    Attributes:
        status: ``"done"`` or ``"failed"``.
        reason: for failed rows, a substring the one-line ``error`` must contain.
    """

    status: str
    reason: str | None = None


def _signal(seconds: float, sr: int, *, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like signal: 180 Hz harmonics with a slow amplitude envelope, shape (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.25 / k * np.sin(2 * np.pi * 180.0 * k * t) for k in range(1, 6))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    return (y + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def hostile_names() -> list[str]:
    """File names with non-ASCII letters, quotes, commas, spaces, shell and SQL metacharacters.

    A shell running the third name would create :data:`MARKER` in its working directory.
    """
    return [
        'Ünïcødé "quoted", with commas.wav',
        "日本語 録音, it's fine.flac",
        f"$(touch {MARKER}) `touch {MARKER}`; echo x | cat.wav",
        "O'Brien'; DROP TABLE results; --.wav",
        "tab\tand\nnewline.wav",
    ]


def make_hostile_inputs(folder: Path, *, long_noise_s: float = 600.0) -> dict[str, Expect]:
    """Write the hostile-input zoo into ``folder``.

    Args:
        folder: created if missing; gets one entry per case (plus a non-audio ``notes.txt``).
        long_noise_s: length (seconds) of the long white-noise recording (10 minutes by default).

    Returns:
        ``{name relative to folder: Expect}`` for every audio-named *file* a walk of ``folder`` must
        submit. The folder named ``x.wav`` is walked like any folder (its inner file is listed as
        ``x.wav/inner.wav``) and has no row of its own.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ex: dict[str, Expect] = {}

    def put(name: str, data: np.ndarray, sr: int, expect: Expect, **kw: object) -> None:
        sf.write(str(folder / name), data, sr, **kw)
        ex[name] = expect

    (folder / "empty.wav").write_bytes(b"")
    ex["empty.wav"] = Expect("failed", "empty file (0 bytes)")
    (folder / "text.wav").write_text("this is not audio\n" * 20)
    ex["text.wav"] = Expect("failed", "not a readable audio file")
    (folder / "random.flac").write_bytes(np.random.default_rng(1).bytes(8192))
    ex["random.flac"] = Expect("failed", "not a readable audio file")
    whole = folder / "whole.wav"
    sf.write(str(whole), _signal(2.0, 16000), 16000, subtype="PCM_16")
    data = whole.read_bytes()
    whole.unlink()
    (folder / "header_only.wav").write_bytes(data[:44])
    ex["header_only.wav"] = Expect("failed", "no audio samples (header-only or truncated file)")
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])  # header says 2 s, 1 s present
    ex["truncated.wav"] = Expect("done")
    (folder / "x.wav").mkdir()  # a folder with an audio name: walked, no row of its own
    put("x.wav/inner.wav", _signal(1.0, 16000, seed=2), 16000, Expect("done"))
    os.symlink(folder / "loop.wav", folder / "loop.wav")  # a link to itself: ELOOP on open
    ex["loop.wav"] = Expect("failed", "symlink loop")
    os.symlink(folder / "gone.wav", folder / "dangling.wav")
    ex["dangling.wav"] = Expect("failed", "file not found")
    put("short_20ms.wav", _signal(0.02, 16000), 16000, Expect("failed", "recording too short: 0.020 s"))
    put("silence.wav", np.zeros(32000, np.float32), 16000, Expect("failed", "silent recording"))
    nan = _signal(1.0, 16000)
    nan[100:200] = np.nan
    put("nan.wav", nan, 16000, Expect("failed", "NaN or infinite"), subtype="FLOAT")
    inf = _signal(1.0, 16000)
    inf[5000] = np.inf
    put("inf.wav", inf, 16000, Expect("failed", "NaN or infinite"), subtype="DOUBLE")
    t = np.arange(16000 * 2) / 16000
    square = np.clip(3.0 * np.sign(np.sin(2 * np.pi * 150 * t)), -1.0, 1.0).astype(np.float32)
    put("clipped_square.wav", square, 16000, Expect("done"), subtype="PCM_16")
    stereo = np.stack([_signal(1.5, 44100), _signal(1.5, 44100, seed=3)], axis=1)
    put("stereo_44k1.wav", stereo, 44100, Expect("done"), subtype="PCM_16")
    put("pcm24_96k.wav", _signal(1.2, 96000), 96000, Expect("done"), subtype="PCM_24")
    put("narrowband_8k.flac", _signal(1.5, 8000), 8000, Expect("done"))
    put("vorbis.ogg", _signal(1.5, 22050), 22050, Expect("done"), format="OGG", subtype="VORBIS")
    put("speech.mp3", _signal(1.5, 44100), 44100, Expect("done"), format="MP3", subtype="MPEG_LAYER_III")
    noise = np.random.default_rng(4).uniform(-0.3, 0.3, int(long_noise_s * 8000)).astype(np.float32)
    put("noise_10min.wav", noise, 8000, Expect("done"), subtype="PCM_16")
    for i, name in enumerate(hostile_names()):
        put(name, _signal(1.0 + 0.1 * i, 16000, seed=10 + i), 16000, Expect("done"))
    (folder / "notes.txt").write_text("not audio: ignored and counted")
    return ex


def check_rows(rows: Sequence[Mapping[str, object]], folder: Path, expected: Mapping[str, Expect]) -> None:
    """Assert one row per expected file, with the expected status and a one-line, user-facing reason.

    Args:
        rows: result rows (``path``, ``status``, ``error`` at least) of the batch.
        folder: the submitted folder (paths are stored absolute, as walked).
        expected: from :func:`make_hostile_inputs`.

    Raises:
        AssertionError: a file has no row, two rows, or a status/reason that differs from README's table.
    """
    paths = [str(r["path"]) for r in rows]
    assert len(paths) == len(set(paths)), "a file has more than one row"
    want = {os.path.join(str(folder.absolute()), name): e for name, e in expected.items()}
    assert sorted(paths) == sorted(want), set(paths) ^ set(want)
    for r in rows:
        e = want[str(r["path"])]
        err = r["error"]
        assert r["status"] == e.status, (r["path"], err)
        if e.status == "failed":
            assert isinstance(err, str) and err.strip(), r["path"]
            assert "\n" not in err and "Traceback" not in err, (r["path"], err)
            assert not err.startswith("internal error"), (r["path"], err)
            assert e.reason in err, (r["path"], err)
        else:
            assert r["emotion"] and r["error"] is None, (r["path"], err)


def check_csv_roundtrip(text: str, rows: Sequence[Mapping[str, object]]) -> None:
    """Assert that ``ser-batch results --format csv`` output parses back to ``rows`` (paths intact).

    Raises:
        AssertionError: a row is missing, or path/status/emotion/error differ after parsing.
    """
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(parsed) == len(rows)

    def key(r: Mapping[str, object]) -> tuple[str, str, str, str]:
        return (str(r["path"]), str(r["status"]), str(r["emotion"] or ""), str(r["error"] or ""))

    assert sorted(key(r) for r in parsed) == sorted(key(r) for r in rows)
