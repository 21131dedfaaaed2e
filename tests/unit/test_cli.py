"""The `ser-batch` command end to end, as a user runs it (subprocess, real files, real SQLite)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ser_model.labels import parse_ravdess_name
from tests.conftest import RAVDESS, RAVDESS_48K, REPO, make_bad_inputs, needs_corpus

EXAMPLES = REPO / "examples" / "recordings"


def cli(db: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """The ``ser-batch`` command and an environment of its own settings on the SQLite file ``db``."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    e.update({"SER_DATABASE_URL": f"sqlite:///{db}", "SER_WORKERS": "2", "COLUMNS": "200", **env})
    exe = shutil.which("ser-batch") or f"{sys.executable} -m producer.cli"
    return exe.split(), e


def run(args: list[str], db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    exe, e = cli(db, **env)
    return subprocess.run([*exe, *args], capture_output=True, text=True, env=e, timeout=600, cwd=REPO)


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stdout + p.stderr, p.stderr


def copy_db(db: Path, dest: Path) -> Path:
    """A copy of a SQLite database (with its WAL files) as ``dest/ser.db``, for a test to change freely."""
    out = dest / "ser.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", f"{out}{suffix}")
    return out


def sql(db: Path, query: str, *args: object) -> list[sqlite3.Row]:
    """Run one SQL statement on a SQLite database (committed) and return its rows."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        out = con.execute(query, args).fetchall()
        con.commit()
        return out
    finally:
        con.close()


def rows(db: Path, batch_id: int | None = None) -> list[sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    q = "SELECT * FROM results" + (f" WHERE batch_id = {int(batch_id)}" if batch_id else "") + " ORDER BY id"
    out = con.execute(q).fetchall()
    con.close()
    return out


def test_submit_examples_then_results_csv(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["submit", str(EXAMPLES)], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "8 done" in p.stdout and "0 failed" in p.stdout
    r = rows(db)
    assert len(r) == 8 and {x["status"] for x in r} == {"done"}
    for x in r:
        assert x["sample_rate"] == 48000 and x["channels"] == 1 and len(x["sha256"]) == 64
        assert x["model_version"].startswith("default-")
        probs = [x[f"p_{e}"] for e in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert x["confidence"] == pytest.approx(max(probs))
    c = run(["results", "--format", "csv"], db)
    assert c.returncode == 0
    table = list(csv.DictReader(io.StringIO(c.stdout)))
    assert len(table) == 8
    for col in ("batch_id", "path", "status", "emotion", "confidence", "error", "model_version", "duration_s"):
        assert col in table[0]
    assert "p_neutral" in table[0] and "p_surprised" in table[0]
    j = run(["results", "--format", "json", "--emotion", table[0]["emotion"]], db)
    assert j.returncode == 0 and all(x["emotion"] == table[0]["emotion"] for x in json.loads(j.stdout))
    s = run(["status"], db)
    assert s.returncode == 0 and "done" in s.stdout
    b = run(["batches"], db)
    assert b.returncode == 0, b.stderr
    line = next(ln for ln in b.stdout.splitlines() if ln.startswith("│ 1 "))
    cells = [c.strip() for c in line.strip("│").split("│")]
    # id, created, mode, status, files, done, failed, pending, sources
    assert cells[0] == "1" and cells[2:8] == ["embedded", "done", "8", "8", "0", "0"], cells
    assert cells[8] == str(EXAMPLES)
    con = sqlite3.connect(db)  # the batch record as a user queries it
    record = con.execute("SELECT status, n_files, n_done, n_failed, finished_at FROM batches WHERE id = 1").fetchone()
    con.close()
    assert record[:4] == ("done", 8, 8, 0) and record[4] is not None


def test_bad_inputs_each_get_one_row_with_reason(tmp_path):
    folder = tmp_path / "bad"
    expected = make_bad_inputs(folder)
    os.symlink(folder / "loop.wav", folder / "loop.wav")
    expected["loop.wav"] = "failed"
    db = tmp_path / "ser.db"
    p = run(["submit", str(folder)], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "1 non-audio file(s) ignored" in p.stderr
    got = {Path(x["path"]).name: x for x in rows(db)}
    assert set(got) == set(expected)  # exactly one row per audio-named file, notes.txt ignored
    for name, status in expected.items():
        assert got[name]["status"] == status, (name, got[name]["error"])
        if status == "failed":
            err = got[name]["error"]
            assert err and "\n" not in err and "Traceback" not in err
            assert not err.startswith("internal error"), (name, err)
    assert "symlink loop" in got["loop.wav"]["error"]
    c = run(["results", "--status", "failed", "--format", "csv"], db)
    parsed = list(csv.DictReader(io.StringIO(c.stdout)))
    assert len(parsed) == sum(v == "failed" for v in expected.values())


def test_usage_errors_exit_2(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["submit", str(tmp_path / "does-not-exist")], db)
    no_traceback(p)
    assert p.returncode == 2 and "path not found" in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    p = run(["submit", str(empty)], db)
    assert p.returncode == 2 and "no audio files" in p.stderr
    p = run(["results", "--format", "xml"], db)
    assert p.returncode == 2
    p = run(["status", "999"], db)
    assert p.returncode == 2 and "no batch 999" in p.stderr
    p = run(["results", "--format", "csv", "--output", str(tmp_path / "no-such-folder" / "x.csv")], db)
    no_traceback(p)
    assert p.returncode == 2 and "cannot use" in p.stderr and "No such file or directory" in p.stderr


def test_a_bad_option_is_one_error_line_naming_the_help_to_read(tmp_path):
    db = tmp_path / "ser.db"
    cases = {
        ("results", "--status", "bogus"): "'bogus' is not one of 'pending', 'done', 'failed'",
        ("submit", "--bogus"): "No such option: --bogus",
        ("nosuchcmd",): "No such command 'nosuchcmd'",
    }
    for args, said in cases.items():
        p = run(list(args), db)
        no_traceback(p)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], (args, p.stderr)
        assert "Value error" not in lines[0] and "--help`" in lines[0], lines[0]
    p = run(["models"], db)  # a group alone: its help, no empty error line
    assert p.returncode == 2 and "activate" in p.stdout + p.stderr and "error:" not in p.stderr


def test_an_output_under_a_file_is_a_usage_error_for_every_writer(tmp_path):
    """``report``, ``plot`` and ``labels export`` create the output's folder: a file in its way is one line, exit 2."""
    db = tmp_path / "ser.db"
    assert run(["submit", "-q", str(EXAMPLES / "03-01-01-01-01-01-01.wav")], db).returncode == 0
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for cmd in (["report", "1"], ["plot", "1"], ["labels", "export", "1"]):
        for out, why in ((blocker / "x", "a file is in the way"), (blocker / "out" / "x", "Not a directory")):
            p = run([*cmd, "--output", str(out)], db)
            no_traceback(p)
            assert p.returncode == 2, (cmd, p.stderr)
            assert f"cannot use {blocker}" in p.stderr and why in p.stderr, (cmd, p.stderr)
            assert len(p.stderr.strip().splitlines()) <= 2, p.stderr  # labels export prints its count first


def test_paths_that_look_like_console_markup_are_printed_as_they_are(tmp_path):
    """A path such as ``.../[/ok].wav`` (folder ``[``, file ``ok].wav``) is not rich markup: no traceback."""
    folder = tmp_path / "["
    folder.mkdir()
    shutil.copy(EXAMPLES / "03-01-01-01-01-01-01.wav", folder / "ok].wav")
    db = tmp_path / "ser.db"
    p = run(["submit", "-q", str(folder / "ok].wav")], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    p = run(["batches"], db)  # the stored source path goes through a table
    no_traceback(p)
    assert p.returncode == 0 and "[/ok]" in "".join(p.stdout.split())
    p = run(["submit", str(tmp_path / "[red]gone" / "[/x]")], db)
    no_traceback(p)
    assert p.returncode == 2 and "[red]gone" in p.stderr
    out = folder / "r].csv"
    p = run(["results", "--format", "csv", "--output", str(out)], db)
    assert p.returncode == 0 and out.exists() and "[/r].csv" in "".join(p.stderr.split())


def test_bad_config_is_a_clear_error(tmp_path):
    p = run(["config"], tmp_path / "x.db", SER_WORKERS="zero")
    no_traceback(p)
    assert p.returncode == 2 and "SER_WORKERS" in p.stderr


def test_a_heartbeat_not_below_the_lease_is_a_usage_error(tmp_path):
    p = run(["config"], tmp_path / "x.db", SER_HEARTBEAT_S="40", SER_LEASE_S="30")
    no_traceback(p)
    assert p.returncode == 2 and "SER_HEARTBEAT_S" in p.stderr and "SER_LEASE_S" in " ".join(p.stderr.split())


def test_config_redacts_passwords(tmp_path):
    p = run(["config"], tmp_path / "x.db", SER_BROKER_URL="redis://:s3cret@localhost:6379/0")
    assert p.returncode == 0
    assert "s3cret" not in p.stdout and "***" in p.stdout


def test_help_lists_commands(tmp_path):
    p = run(["--help"], tmp_path / "x.db")
    assert p.returncode == 0
    for cmd in ("submit", "results", "status", "batches", "config", "db", "train", "models"):
        assert cmd in p.stdout


def test_db_upgrade_on_fresh_file(tmp_path):
    db = tmp_path / "fresh.db"
    from worker.storage.migrate import head_revision

    p = run(["db", "upgrade"], db)
    assert p.returncode == 0 and f"empty -> {head_revision()}" in p.stdout.replace("\n", "")
    con = sqlite3.connect(db)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


@needs_corpus
def test_48k_originals_are_resampled_and_agree_with_16k_copies(tmp_path):
    """48 kHz WAV originals get the same labels as the 16 kHz FLAC copies the model was trained on."""
    db = tmp_path / "ser.db"
    p48 = run(["submit", str(RAVDESS_48K)], db)
    assert p48.returncode == 0, p48.stdout + p48.stderr
    names = sorted(f.stem for f in (RAVDESS_48K / "Actor_01").glob("*.wav"))
    p16 = run(["submit", *[str(RAVDESS / "Actor_01" / f"{n}.flac") for n in names]], db)
    assert p16.returncode == 0
    lab48 = {Path(x["path"]).stem: x["emotion"] for x in rows(db, 1)}
    lab16 = {Path(x["path"]).stem: x["emotion"] for x in rows(db, 2)}
    assert {x["sample_rate"] for x in rows(db, 1)} == {48000}
    assert len(lab48) == len(names) == 15
    agree = sum(lab48[n] == lab16[n] for n in names)
    assert agree >= 13, (lab48, lab16)
    # and the labels are mostly right (actor 01 was in training, so this checks the resampling path)
    correct = sum(lab48[n] == parse_ravdess_name(n).emotion for n in names)
    assert correct >= 12


@needs_corpus
@pytest.mark.slow
def test_submit_two_ravdess_actors(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["submit", str(RAVDESS / "Actor_03"), str(RAVDESS / "Actor_04")], db)
    no_traceback(p)
    assert p.returncode == 0
    r = rows(db)
    assert len(r) == 120 and all(x["status"] == "done" for x in r)
    assert len({x["path"] for x in r}) == 120


@needs_corpus
def test_long_recording_is_segmented(tmp_path):
    """A 40-s call made of 8 RAVDESS utterances with pauses gets 8 segments, a CSV of them and a timeline."""
    import numpy as np
    import soundfile as sf

    parts = []
    files = sorted((RAVDESS_48K / "Actor_01").glob("*.wav"))[:8]
    for f in files:
        y, sr = sf.read(f, dtype="float32")
        parts += [y, np.zeros(int(1.5 * sr), np.float32)]
    rec = tmp_path / "rec"
    rec.mkdir()
    sf.write(rec / "call.wav", np.concatenate(parts), 48000)
    db = tmp_path / "ser.db"
    p = run(["submit", str(rec)], db)
    no_traceback(p)
    assert p.returncode == 0, p.stdout + p.stderr
    (row,) = rows(db)
    assert row["analysis_mode"] == "segments" and row["n_segments"] == 8
    probs = [row[f"p_{e}"] for e in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")]
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    c = run(["results", "--segments", "--format", "csv"], db)
    segs = list(csv.DictReader(io.StringIO(c.stdout)))
    assert len(segs) == 8
    starts = [float(s["start_s"]) for s in segs]
    assert starts == sorted(starts) and all(float(s["end_s"]) > float(s["start_s"]) for s in segs)
    for col in ("batch_id", "path", "start_s", "end_s", "emotion", "confidence", "p_angry"):
        assert col in segs[0]
    png = tmp_path / "t.png"
    pl = run(["plot", str(rec / "call.wav"), "--output", str(png)], db)
    assert pl.returncode == 0 and png.stat().st_size > 10_000
    # --segment none: one label for the whole file, no segments
    p2 = run(["submit", str(rec), "--segment", "none"], db)
    assert p2.returncode == 0
    r2 = rows(db, 2)[0]
    assert r2["analysis_mode"] == "utterance" and r2["n_segments"] is None
    bad = run(["submit", str(rec), "--segment", "window:0:1"], db)
    assert bad.returncode == 2 and "--segment" in bad.stderr


@needs_corpus
def test_evaluate_names_the_files_it_could_not_read(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for p in sorted((RAVDESS / "Actor_03").glob("*.flac"))[:4]:
        (folder / p.name).symlink_to(p)
    (folder / "03-01-05-01-01-01-03.wav").write_bytes(b"")  # a RAVDESS name, no audio
    db = tmp_path / "ser.db"
    p = run(["evaluate", str(folder), "--model", "fast"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    err = " ".join(p.stderr.split())
    assert "1 file(s) could not be read" in err and "03-01-05-01-01-01-03.wav" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "03-01-05-01-01-01-03.wav").write_bytes(b"not audio")
    p = run(["evaluate", str(bad), "--model", "fast"], db)
    no_traceback(p)
    assert p.returncode == 2 and "could be read" in p.stderr


def test_an_encoder_folder_that_is_not_one_is_refused_before_an_embedded_batch_is_recorded(tmp_path):
    db = tmp_path / "ser.db"
    wav = str(EXAMPLES / "03-01-01-01-01-01-01.wav")
    p = run(["submit", "-q", wav], db, SER_ENCODER_DIR=str(tmp_path / "nowhere"))
    no_traceback(p)
    assert p.returncode == 2 and "SER_ENCODER_DIR: no model.bin in" in p.stderr, p.stderr
    assert not db.exists() or not rows(db, 1)  # no batch recorded
    # commands that label nothing here (and distributed producers, workers) do not need the folder
    assert run(["status"], db, SER_ENCODER_DIR=str(tmp_path / "nowhere")).returncode in (0, 2)
    assert "SER_ENCODER_DIR" not in run(["config"], db, SER_ENCODER_DIR=str(tmp_path / "nowhere")).stderr


def test_a_model_that_cannot_load_leaves_a_batch_to_resume(tmp_path):
    """An encoder folder with another model.bin than the bundle's: a clear error naming the saved
    batch; --resume finishes it."""
    db = tmp_path / "ser.db"
    wav = str(EXAMPLES / "03-01-01-01-01-01-01.wav")
    other = tmp_path / "enc"
    other.mkdir()
    (other / "model.bin").write_bytes(b"another encoder")
    p = run(["submit", "-q", wav], db, SER_ENCODER_DIR=str(other))
    no_traceback(p)
    assert p.returncode == 1 and "--resume 1" in " ".join(p.stderr.split()), p.stderr
    assert [r["status"] for r in rows(db, 1)] == ["pending"]  # recorded, not lost
    p = run(["submit", "-q", "--resume", "1"], db)
    assert p.returncode == 0, p.stderr
    assert [r["status"] for r in rows(db, 1)] == ["done"]


@needs_corpus
def test_ctrl_c_during_an_embedded_batch_exits_and_resume_finishes_it(tmp_path):
    """SIGINT to the producer alone (as `timeout -s INT` sends it) while two processes work: it must
    exit, keep what was written, and `--resume` must finish the batch. (Leaving the pool's `with`
    block used to wait for the queued chunks and, 2 runs in 8 of a 12-file batch of 171-s files,
    for ever on idle processes; this test did not catch that hang in 11 runs of the old code, so it
    guards the interrupt-and-resume path, not that race.)"""
    import signal
    import time

    import numpy as np
    import soundfile as sf

    ys = [sf.read(p, dtype="float32")[0] for p in sorted((RAVDESS / "Actor_04").glob("*.flac"))[:30]]
    y = np.concatenate(ys)
    folder = tmp_path / "long"
    folder.mkdir()
    for i in range(8):
        sf.write(folder / f"long{i}.flac", np.roll(y, i * 16000), 16000)
    db = tmp_path / "ser.db"
    exe, e = cli(db)
    proc = subprocess.Popen(
        [*exe, "submit", "-q", "-j", "2", str(folder)],
        env=e,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - test child only
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until the pool is at work
        try:
            if db.exists() and sql(db, "SELECT count(*) AS n FROM results")[0]["n"] >= 8:
                break  # the walk is recorded: the pool is starting or at work
        except sqlite3.OperationalError:  # tables not made yet, or a write in progress
            pass
        time.sleep(0.05)
    time.sleep(1.0)  # into the pool's start-up and first chunks
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)  # liveness, not speed: a hang never returns
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("submit did not exit after Ctrl-C")
    assert "Traceback" not in err
    if proc.returncode == 130:
        assert "--resume 1" in " ".join(err.split())
    else:  # the batch finished before the signal landed
        assert proc.returncode == 0, err
    p = run(["submit", "-q", "--resume", "1"], db)
    assert p.returncode == 0, p.stderr
    got = rows(db, 1)
    assert len(got) == 8 and {r["status"] for r in got} == {"done"}


def test_models_commands_take_the_packaged_names_as_submit_does(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["models", "activate", "fast"], db)
    assert p.returncode == 0 and "active model: fast-" in p.stdout, p.stderr
    con = sqlite3.connect(db)
    active = con.execute("SELECT version, source FROM models WHERE active").fetchall()
    con.close()
    assert len(active) == 1 and active[0][1] == "package:fast"
    p = run(["models", "show", "default"], db)
    assert p.returncode == 0 and "default-" in p.stdout, p.stderr
    p = run(["models", "export", "fast", str(tmp_path / "fast.npz")], db)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "fast.npz.json").read_text())["version"] == active[0][0]  # not "fast"
    p = run(["models", "activate", "nope"], db)
    no_traceback(p)
    assert p.returncode == 2 and "no model version 'nope'" in p.stderr


def test_a_bad_webhook_url_says_what_is_expected_and_never_repeats_a_token(tmp_path):
    from worker.urls import check_url

    with pytest.raises(ValueError, match="not repeated") as e:
        check_url("notaurl-secret123")
    assert "secret123" not in str(e.value)
    with pytest.raises(ValueError, match=r"'ftp://x\.org/…' is not an http\(s\) URL") as e:
        check_url("ftp://x.org/token-abc")
    assert "token-abc" not in str(e.value)
    assert check_url("https://hooks.example.com/t?k=1") == "https://hooks.example.com/t?k=1"
