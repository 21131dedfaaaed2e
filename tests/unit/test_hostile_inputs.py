"""Hostile inputs through the real `ser-batch` CLI in embedded mode (subprocess, real SQLite).

Every audio-named file gets exactly one row; failures carry a one-line reason (never "internal
error" or traceback text); the exit code is 3; nothing reaches the terminal as a traceback; the CSV
export parses back to the stored rows with paths containing commas, quotes, tabs and newlines
intact; file names with shell and SQL metacharacters are stored as given and never executed. The
same zoo runs through real Celery workers in ``tests/integration/test_faults.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import REPO
from tests.hostile import MARKER, check_csv_roundtrip, check_rows, hostile_names, make_hostile_inputs

SECRETS = ("Pg5ecretPw", "R3disSecretPw")


def cli(args: list[str], db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m producer.cli ARGS`` from the checkout (so it uses this checkout's code)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    e.update({"SER_DATABASE_URL": db_url, "SER_WORKERS": "2", "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args], capture_output=True, text=True, env=e, timeout=600, cwd=REPO
    )


def sqlite_rows(db: Path) -> list[dict[str, object]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute("SELECT * FROM results ORDER BY id")]
    con.close()
    return out


def test_hostile_inputs_embedded_one_row_each_with_reasons_and_valid_csv(tmp_path):
    folder = tmp_path / "in"
    expected = make_hostile_inputs(folder)
    db = tmp_path / "ser.db"
    p = cli(["submit", str(folder), "-q"], f"sqlite:///{db}")
    out = p.stdout + p.stderr
    assert "Traceback" not in out, p.stderr
    assert p.returncode == 3, out
    assert f"{len(expected)} audio file(s), 1 non-audio file(s) ignored" in p.stderr
    rows = sqlite_rows(db)
    check_rows(rows, folder, expected)
    assert all(r["batch_id"] == 1 for r in rows)
    # Decoded facts of the format variants: what the container said, before the mono mix and resampling.
    facts = {Path(str(r["path"])).name: (r["sample_rate"], r["channels"]) for r in rows}
    assert facts["stereo_44k1.wav"] == (44100, 2)
    assert facts["pcm24_96k.wav"] == (96000, 1)
    assert facts["narrowband_8k.flac"] == (8000, 1)
    assert facts["vorbis.ogg"] == (22050, 1)
    assert facts["speech.mp3"][0] == 44100
    long = next(r for r in rows if str(r["path"]).endswith("noise_10min.wav"))
    assert long["analysis_mode"] == "segments" and long["n_segments"] >= 1  # streamed, not decoded whole
    # CSV (and JSON) exports parse back to the same rows, odd paths intact.
    c = cli(["results", "--format", "csv"], f"sqlite:///{db}")
    assert c.returncode == 0, c.stderr
    check_csv_roundtrip(c.stdout, rows)
    j = cli(["results", "--format", "json", "--status", "failed"], f"sqlite:///{db}")
    assert j.returncode == 0
    assert sorted(r["path"] for r in json.loads(j.stdout)) == sorted(
        str(r["path"]) for r in rows if r["status"] == "failed"
    )
    # Names are data: stored byte for byte, never run by a shell nor spliced into SQL.
    stored = {str(r["path"]) for r in rows}
    for name in hostile_names():
        assert str(folder / name) in stored
    assert not (REPO / MARKER).exists() and not list(tmp_path.rglob(MARKER))
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM results").fetchone()[0] == len(expected)  # the table survived
    con.close()


def test_duration_limit_guards_whole_file_decoding_only(tmp_path):
    """SER_MAX_DURATION_S refuses files decoded whole; segmented (streamed) recordings are not limited."""
    folder = tmp_path / "long"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sf.write(str(folder / "twelve_s.wav"), rng.uniform(-0.3, 0.3, 12 * 8000).astype(np.float32), 8000)
    db = f"sqlite:///{tmp_path / 'ser.db'}"
    p = cli(["submit", str(folder), "-q", "--segment", "none"], db, SER_MAX_DURATION_S="5")
    assert p.returncode == 3, p.stdout + p.stderr
    p = cli(["submit", str(folder), "-q"], db, SER_MAX_DURATION_S="5")  # default: VAD segments
    assert p.returncode == 0, p.stdout + p.stderr
    rows = sqlite_rows(tmp_path / "ser.db")
    assert [r["status"] for r in rows] == ["failed", "done"]
    assert str(rows[0]["error"]).startswith("recording too long: 12.0 s > limit of 5 s")
    assert rows[1]["analysis_mode"] == "segments"


def test_passwords_in_urls_never_reach_the_terminal(tmp_path):
    db_url = f"postgresql+psycopg://ser:{SECRETS[0]}@127.0.0.1:1/ser"  # nothing listens on port 1
    broker = f"redis://:{SECRETS[1]}@127.0.0.1:1/0"
    p = cli(["config"], db_url, SER_BROKER_URL=broker)
    assert p.returncode == 0, p.stderr
    assert "***" in p.stdout
    for cmd in (["status"], ["db", "upgrade"], ["results"]):
        q = cli(cmd, db_url, SER_BROKER_URL=broker)
        out = q.stdout + q.stderr
        assert q.returncode == 1 and "Traceback" not in out, out
        assert "error:" in q.stderr
        for secret in SECRETS:
            assert secret not in p.stdout + p.stderr + out, (cmd, out)
    # The broker URL in the message of an unreachable broker at submit time.
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(8000, np.float32), 16000)
    q = cli(["submit", str(wav)], f"sqlite:///{tmp_path / 'ser.db'}", SER_BROKER_URL=broker)
    assert q.returncode == 1 and "cannot reach the broker redis://:***@127.0.0.1:1/0" in " ".join(q.stderr.split())
    assert SECRETS[1] not in q.stdout + q.stderr
