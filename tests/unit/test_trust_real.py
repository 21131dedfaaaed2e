"""The default model's trust flags and batch warnings on real corpora, through `ser-batch submit` (embedded).

LibriSpeech is speech unlike every corpus the default model trained on (read audiobook sentences, no
acted emotion, other microphones): such a batch must get the out-of-domain warning, and its
out-of-domain share must be far above the one of RAVDESS recordings. Recordings of held-out gain (a
quiet copy) keep their labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import LIBRISPEECH, RAVDESS, TESS, needs_corpus
from tests.unit.test_cli import no_traceback, rows, run

pytestmark = [needs_corpus, pytest.mark.skipif(not TESS.is_dir(), reason="TESS not found")]


def _link(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        os.symlink(f, folder / f.name)
    return folder


@pytest.mark.skipif(not LIBRISPEECH.is_dir(), reason=f"corpus not found at {LIBRISPEECH}")
def test_a_batch_of_read_audiobook_speech_is_flagged_out_of_domain_and_warned(tmp_path):
    files = [sorted(d.rglob("*.flac"))[0] for d in sorted(LIBRISPEECH.iterdir()) if d.is_dir()]  # one per reader
    assert len(files) == 28
    folder = _link(files, tmp_path / "libri")
    db = tmp_path / "t.db"
    p = run(["submit", str(folder), "--segment", "none"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    r = rows(db)
    share = np.mean([bool(x["out_of_domain"]) for x in r])
    assert share > 0.3, share
    assert "unlike the training data" in p.stdout  # the summary shows the warning
    st = run(["status", "--format", "json"], db)
    warnings = json.loads(st.stdout)["warnings"]
    assert "out_of_domain" in {w["code"] for w in warnings}
    # calibrated confidence on an unfamiliar corpus is lower than the raw softmax would say (~0.75 there)
    assert np.mean([x["confidence"] for x in r]) < 0.65


def test_ravdess_recordings_are_in_domain_and_not_warned(tmp_path):
    files = [f for a in (3, 11, 18) for f in sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac"))[::5]]
    folder = _link(files, tmp_path / "rav")
    db = tmp_path / "r.db"
    p = run(["submit", str(folder)], db)
    assert p.returncode == 0, p.stderr
    r = rows(db)
    assert np.mean([bool(x["out_of_domain"]) for x in r]) < 0.15
    st = json.loads(run(["status", "--format", "json"], db).stdout)
    assert "out_of_domain" not in {w["code"] for w in st["warnings"]}


def test_a_quieter_copy_of_a_batch_keeps_its_labels(tmp_path):
    """The same recordings 10 dB quieter (16-bit, as a lower microphone gain would record them)."""
    src = [f for a in (20, 9) for f in sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac"))[::6]]
    loud, quiet = tmp_path / "loud", tmp_path / "quiet"
    loud.mkdir()
    quiet.mkdir()
    for f in src:
        y, sr = sf.read(f, dtype="float32")
        sf.write(loud / f"{f.stem}.wav", y, sr, subtype="PCM_16")
        sf.write(quiet / f"{f.stem}.wav", y * 10 ** (-10 / 20), sr, subtype="PCM_16")
    db = tmp_path / "g.db"
    assert run(["submit", str(loud)], db).returncode == 0
    assert run(["submit", str(quiet)], db).returncode == 0
    a = {Path(x["path"]).name: x["emotion"] for x in rows(db, 1)}
    b = {Path(x["path"]).name: x["emotion"] for x in rows(db, 2)}
    assert a.keys() == b.keys() and len(a) == len(src)
    agree = np.mean([a[k] == b[k] for k in a])
    assert agree >= 0.9, agree
