import os

import pytest

from ser_model.speakers_from import parse_speaker_spec
from tests.conftest import RAVDESS, needs_corpus
from tests.unit.test_cli import no_traceback, rows, run


def test_corpus_specs():
    assert parse_speaker_spec("ravdess")("/x/Actor_07/03-01-05-02-01-02-07.wav") == "ravdess:07"
    assert parse_speaker_spec("RAVDESS")("/x/notravdess.wav") is None
    assert parse_speaker_spec("tess")("/x/YAF_dog_ps.wav") == "tess:YAF"
    assert parse_speaker_spec("tess")("/x/03-01-05-02-01-02-07.wav") is None


def test_parent_spec(tmp_path):
    f = tmp_path / "agent_17" / "call.wav"
    assert parse_speaker_spec("parent")(str(f)) == "agent_17"
    assert parse_speaker_spec("parent")(os.path.join("rel", "spk", "a.wav")) == "spk"


def test_regex_spec():
    assert parse_speaker_spec(r"regex:spk(\d+)")("/data/spk17_take2.wav") == "17"
    assert parse_speaker_spec(r"regex:(?P<speaker>[A-Z]{3})_(\d+)")("/d/ABC_12.wav") == "ABC"
    assert parse_speaker_spec(r"regex:[A-Z]{3}")("/d/x_ABC.wav") == "ABC"
    assert parse_speaker_spec(r"regex:spk(\d+)")("/data/none.wav") is None


@pytest.mark.parametrize("spec", ["actor", "regex:", "regex:(unclosed", ""])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        parse_speaker_spec(spec)


@needs_corpus
def test_speaker_adaptive_batch_and_fallback_below_min_files(tmp_path):
    """A speaker with >= 8 files is normalised by their own statistics; one with 5 falls back to global."""
    rec = tmp_path / "rec"
    big, small = rec / "actor05", rec / "actor06"
    big.mkdir(parents=True)
    small.mkdir()
    for f in sorted((RAVDESS / "Actor_05").glob("*.flac"))[:24]:
        (big / f.name).symlink_to(f)
    for f in sorted((RAVDESS / "Actor_06").glob("*.flac"))[:5]:
        (small / f.name).symlink_to(f)
    db = tmp_path / "ser.db"
    p = run(["submit", str(rec), "--speaker-from", "parent"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stdout + p.stderr
    got = rows(db)
    assert len(got) == 29 and {r["status"] for r in got} == {"done"}
    modes = {r["speaker"]: {x["analysis_mode"] for x in got if x["speaker"] == r["speaker"]} for r in got}
    assert modes == {"actor05": {"speaker-adaptive"}, "actor06": {"global"}}
    # the global fallback gives exactly the labels of a batch without speaker information
    p2 = run(["submit", str(small)], db)
    assert p2.returncode == 0
    plain = {r["path"]: (r["emotion"], r["confidence"]) for r in rows(db, 2)}
    fallback = {r["path"]: (r["emotion"], r["confidence"]) for r in got if r["speaker"] == "actor06"}
    assert {p: e for p, (e, _) in plain.items()} == {p: e for p, (e, _) in fallback.items()}
    # the fallback classifies the speaker's files in one batch, the plain run one file at a time: the
    # float32 matrix products round differently (about 1e-7), so confidences agree to 1e-6, not bit for bit
    for path, (_, conf) in plain.items():
        assert fallback[path][1] == pytest.approx(conf, abs=1e-6)
    bad = run(["submit", str(rec), "--speaker-from", "nonsense"], db)
    assert bad.returncode == 2 and "--speaker-from" in bad.stderr
