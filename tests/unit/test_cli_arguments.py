"""Arguments that are wrong say so (usage error, exit 2) instead of meaning something else."""

from __future__ import annotations

import shutil

import pytest

from ser_model.labels import EMOTIONS
from tests.unit.test_cli import EXAMPLES, no_traceback, rows, run, sql

ONE = EXAMPLES / "03-01-01-01-01-01-01.wav"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A database with one labelled batch (two example files)."""
    db = tmp_path_factory.mktemp("labelled") / "ser.db"
    p = run(["submit", "-q", str(ONE), str(EXAMPLES / "03-01-05-02-01-01-01.wav")], db)
    assert p.returncode == 0, p.stdout + p.stderr
    return db


def test_an_unknown_emotion_is_a_usage_error_listing_the_models_labels(labelled):
    p = run(["results", "--emotion", "bogus"], labelled)
    no_traceback(p)
    assert p.returncode == 2, p.stdout + p.stderr
    msg = " ".join(p.stderr.split())
    assert "--emotion" in msg and "'bogus'" in msg and ", ".join(EMOTIONS) in msg
    assert p.stdout == ""  # no empty table
    angry = run(["results", "--emotion", "ANGRY", "--format", "csv"], labelled)  # a label, in any case
    assert angry.returncode == 0 and angry.stdout.count("angry") >= 1, angry.stderr
    seg = run(["results", "--segments", "--emotion", "bogus"], labelled)
    assert seg.returncode == 2 and "'bogus'" in seg.stderr


def test_an_unknown_emotion_on_a_fresh_database_lists_the_active_models_labels(tmp_path):
    p = run(["results", "--emotion", "joy"], tmp_path / "ser.db")
    assert p.returncode == 2 and ", ".join(EMOTIONS) in " ".join(p.stderr.split()), p.stderr


def test_an_unknown_status_is_a_usage_error_listing_the_statuses(labelled):
    p = run(["results", "--status", "finished"], labelled)
    no_traceback(p)
    assert p.returncode == 2 and "'pending', 'done', 'failed'" in p.stderr, p.stderr


def test_an_empty_model_is_an_error_not_the_default(tmp_path):
    db = tmp_path / "ser.db"
    p = run(["submit", "-q", "--model", "", str(ONE)], db)
    no_traceback(p)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--model is empty" in p.stderr
    assert not db.exists() or sql(db, "SELECT count(*) AS n FROM batches")[0]["n"] == 0
    p = run(["submit", "-q", "--speaker-from", " ", str(ONE)], db)
    assert p.returncode == 2 and "--speaker-from is empty" in p.stderr, p.stderr


@pytest.mark.parametrize(
    "spec",
    ["agent=parent;agent=file", "agent=parent;0=file", "1=file;customer=parent"],
    ids=["name", "name+index", "index+name"],
)
def test_a_channel_given_twice_in_speaker_from_is_a_usage_error(tmp_path, spec):
    p = run(
        ["submit", "-q", "--channels", "split", "--channel-names", "agent,customer", "--speaker-from", spec, str(ONE)],
        tmp_path / "ser.db",
    )
    no_traceback(p)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--speaker-from" in p.stderr and "twice" in p.stderr


def test_a_file_named_explicitly_is_always_tried_and_a_non_audio_one_fails_with_the_reason(tmp_path):
    """The decision (README, "Using it"): a named file gets a row whatever its extension; a walk skips non-audio."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("meeting notes, not a recording\n" * 10)
    shutil.copy(ONE, folder / "take1.dat")  # a recording under another extension
    db = tmp_path / "ser.db"
    p = run(["submit", "-q", str(folder / "notes.txt"), str(folder / "take1.dat")], db)
    no_traceback(p)
    assert p.returncode == 3, p.stdout + p.stderr  # some failed
    got = {r["path"].rsplit("/", 1)[1]: r for r in rows(db)}
    assert got["take1.dat"]["status"] == "done"
    assert got["notes.txt"]["status"] == "failed"
    assert got["notes.txt"]["error"].startswith("not a readable audio file: .txt is not an audio extension")
    walked = run(["submit", "-q", str(folder)], db)  # the same folder walked: nothing audio-named in it
    assert walked.returncode == 2 and "2 non-audio file(s) ignored" in walked.stderr, walked.stderr
