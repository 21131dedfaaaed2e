"""``submit --channels split`` on real stereo calls built from RAVDESS utterances (tmp dirs, real SQLite).

Calls are laid out by :func:`ser_model.callsim.build_call` with known turns: each segment written for
a channel is checked against the turns of that channel's party, so a segment caused by the other
party's bleed, or a turn left uncovered, fails the test.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ser_model.audio import load_audio
from ser_model.callsim import Turn, build_call, telephone
from ser_model.segment import BLEED_MARGIN_DB, ChannelGate
from ser_model.speakers_from import channel_speaker_keys, split_channel_specs
from tests.conftest import RAVDESS, needs_corpus, tone, write
from tests.unit.test_cli import no_traceback, run, sql


def _utterances(actors: list[int], per_actor: int) -> list[tuple[int, np.ndarray, str]]:
    """Alternating turns: utterance k of every actor in turn, party = position of the actor."""
    files = {a: sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac"))[5::9][:per_actor] for a in actors}
    out = []
    for k in range(per_actor):
        for party, a in enumerate(actors):
            out.append((party, load_audio(files[a][k])[0], str(files[a][k])))
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _segments(db: Path, batch: int, path: Path) -> dict[int | None, list[tuple[float, float]]]:
    out: dict[int | None, list[tuple[float, float]]] = {}
    for r in sql(
        db,
        "SELECT s.channel, s.start_s, s.end_s, r.channel AS rch FROM segments s JOIN results r ON r.id = s.result_id"
        " WHERE r.batch_id = ? AND r.path = ? ORDER BY s.channel, s.idx",
        batch,
        str(path),
    ):
        assert r["channel"] == r["rch"]  # a segment carries its row's channel
        out.setdefault(r["channel"], []).append((r["start_s"], r["end_s"]))
    return out


def _check_turns(segs: dict[int | None, list[tuple[float, float]]], turns: list[Turn]) -> None:
    """Every turn covered on its own channel; no segment lies mostly outside its channel's turns."""
    for t in turns:
        covered = sum(_overlap(a, b, t.speech_start_s, t.speech_end_s) for a, b in segs.get(t.party, []))
        assert covered >= 0.5 * (t.speech_end_s - t.speech_start_s), f"turn {t.index} of party {t.party} not covered"
    for ch, spans in segs.items():
        own = [t for t in turns if t.party == ch]
        for a, b in spans:
            inside = sum(_overlap(a, b, t.start_s, t.end_s) for t in own)
            assert inside >= 0.5 * (b - a), f"segment {a:.2f}-{b:.2f} s on channel {ch} is not its party's speech"


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> dict[str, object]:
    if not RAVDESS.is_dir():
        pytest.skip(f"corpus not found at {RAVDESS}")
    d = tmp_path_factory.mktemp("calls")
    rng = np.random.default_rng(7)
    utts = _utterances([3, 4], 5)
    call, turns = build_call(utts, overlap_prob=0.4, bleed_db=-22.0, rng=rng)
    out: dict[str, object] = {"dir": d, "turns": turns}
    write(d / "split" / "call.wav", call, 16000, subtype="PCM_16")
    tel, sr = telephone(call)
    write(d / "split" / "call_tel.wav", tel, sr, subtype="ULAW")
    silent = call.copy()
    silent[:, 1] = 0.0
    write(d / "split" / "silent_ch1.wav", silent, 16000, subtype="PCM_16")
    agent_only, agent_turns = build_call([u for u in utts if u[0] == 0], bleed_db=-25.0, rng=rng)
    write(d / "split" / "bleed_only.wav", agent_only, 16000, subtype="PCM_16")
    out["agent_turns"] = agent_turns
    three, three_turns = build_call(_utterances([5, 6, 7], 3), n_parties=3, bleed_db=(-30.0, -20.0), rng=rng)
    write(d / "split" / "three.wav", three, 16000, subtype="PCM_16")
    out["three_turns"] = three_turns
    short, short_turns = build_call(utts[:2], bleed_db=-25.0, rng=rng)
    assert short.shape[0] / 16000 < 10.0
    write(d / "split" / "short.wav", short, 16000, subtype="PCM_16")
    out["short_turns"] = short_turns
    write(d / "split" / "mono.wav", call.mean(axis=1), 16000, subtype="PCM_16")
    db = d / "ser.db"
    p = run(["submit", str(d / "split"), "--channels", "split", "--channel-names", "agent,customer", "-q"], db)
    no_traceback(p)
    assert p.returncode == 3, p.stderr  # the silent and the bleed-only channel failed
    p = run(["submit", str(d / "split" / "call.wav"), str(d / "split" / "mono.wav"), "-q"], db)  # mix
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    out["db"] = db
    return out


def _rows(db: Path, batch: int) -> dict[tuple[str, int | None], sqlite3.Row]:
    return {(Path(r["path"]).name, r["channel"]): r for r in sql(db, "SELECT * FROM results WHERE batch_id = ?", batch)}


@needs_corpus
def test_two_party_call_rows_and_segments_per_channel(calls):
    db, d = calls["db"], calls["dir"]
    rows = _rows(db, 1)
    for name in ("call.wav", "call_tel.wav"):
        assert (name, None) not in rows  # the pending row became the channels' rows
        for ch, role in ((0, "agent"), (1, "customer")):
            r = rows[(name, ch)]
            assert (r["status"], r["role"], r["analysis_mode"], r["channels"]) == ("done", role, "segments", 2)
            assert r["n_segments"] >= 4
        _check_turns(_segments(db, 1, d / "split" / name), calls["turns"])


@needs_corpus
def test_silent_and_bleed_only_channels_fail_with_the_reason(calls):
    rows = _rows(calls["db"], 1)
    assert rows[("silent_ch1.wav", 0)]["status"] == "done"
    r = rows[("silent_ch1.wav", 1)]
    assert r["status"] == "failed" and r["error"].startswith("silent channel 1")
    assert rows[("bleed_only.wav", 0)]["status"] == "done"
    r = rows[("bleed_only.wav", 1)]
    assert r["status"] == "failed" and "no speech of its own on channel 1" in r["error"]
    assert r["role"] == "customer" and r["emotion"] is None
    _check_turns(_segments(calls["db"], 1, calls["dir"] / "split" / "bleed_only.wav"), calls["agent_turns"])


@needs_corpus
def test_three_channels(calls):
    rows = _rows(calls["db"], 1)
    assert [rows[("three.wav", c)]["role"] for c in range(3)] == ["agent", "customer", None]
    assert all(rows[("three.wav", c)]["status"] == "done" for c in range(3))
    _check_turns(_segments(calls["db"], 1, calls["dir"] / "split" / "three.wav"), calls["three_turns"])


@needs_corpus
def test_short_call_channels_classified_whole(calls):
    rows = _rows(calls["db"], 1)
    for c in (0, 1):
        r = rows[("short.wav", c)]
        assert (r["status"], r["analysis_mode"], r["n_segments"]) == ("done", "utterance", None)


@needs_corpus
def test_mono_file_and_mix_batch_are_as_before(calls):
    split, mix = _rows(calls["db"], 1), _rows(calls["db"], 2)
    assert set(mix) == {("call.wav", None), ("mono.wav", None)}  # --channels mix: one row per file
    r, m = split[("mono.wav", None)], mix[("mono.wav", None)]  # a mono file under split: one mixed row
    assert r["role"] is None and (r["emotion"], r["confidence"]) == (m["emotion"], m["confidence"])
    assert set(_segments(calls["db"], 2, calls["dir"] / "split" / "call.wav")) == {None}
    opts = json.loads(sql(calls["db"], "SELECT options FROM batches WHERE id = 2")[0]["options"])
    assert "channels" not in opts  # a mix batch records what it recorded before


@needs_corpus
def test_exports_and_status_carry_the_channel(calls):
    p = run(["results", "--batch", "1", "--format", "csv"], calls["db"])
    recs = list(csv.DictReader(io.StringIO(p.stdout)))
    got = {(Path(r["path"]).name, r["channel"], r["role"]) for r in recs}
    assert ("call.wav", "1", "customer") in got and ("mono.wav", "", "") in got
    p = run(["results", "--batch", "1", "--segments", "--format", "json"], calls["db"])
    assert {r["channel"] for r in json.loads(p.stdout)} == {0, 1, 2, None}
    png = calls["dir"] / "ch1.png"
    call = str(calls["dir"] / "split" / "call.wav")
    p = run(["plot", call, "--channel", "1", "-o", str(png)], calls["db"])
    assert p.returncode == 0 and png.stat().st_size > 0, p.stderr
    assert run(["plot", call, "--channel", "3", "-o", str(png)], calls["db"]).returncode == 2
    doc = json.loads(run(["status", "1", "--format", "json"], calls["db"]).stdout)
    assert doc["channels"] == "split"
    by = {(r["channel"], r["role"]): r for r in doc["by_channel"]}
    assert by[(1, "customer")]["failed"] == 2 and by[(None, None)]["done"] == 1


@needs_corpus
def test_a_chunk_run_again_leaves_the_same_rows(calls, tmp_path):
    from tests.unit.test_cli import copy_db
    from worker.engine.analyse import AnalysisPlan, analyse_path
    from worker.engine.rows import batch_options, store_rows
    from worker.storage.registry import load_model

    db = copy_db(calls["db"], tmp_path)
    url = f"sqlite:///{db}"
    before = sql(db, "SELECT id, path, channel, emotion FROM results WHERE batch_id = 1 ORDER BY id")
    n_seg = sql(db, "SELECT count(*) AS n FROM segments")[0]["n"]
    path = str(calls["dir"] / "split" / "call.wav")
    plan = AnalysisPlan.of(batch_options(1, url=url))
    store_rows(1, analyse_path(path, load_model(url=url), plan), url=url)  # what a redelivered chunk writes
    after = sql(db, "SELECT id, path, channel, emotion FROM results WHERE batch_id = 1 ORDER BY id")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert sql(db, "SELECT count(*) AS n FROM segments")[0]["n"] == n_seg


def test_channel_gate_rejects_bleed_and_keeps_overlap():
    a = tone(220.0, 2.0)
    b = tone(330.0, 2.0)
    silence = np.zeros_like(a)
    for other_db, expect_own in ((-25.0, False), (-20.0, False), (0.0, True), (-(BLEED_MARGIN_DB - 2), True)):
        block = np.stack([a, np.float32(10 ** (other_db / 20)) * b if expect_own else silence], axis=1)
        if not expect_own:  # channel 1 holds only channel 0's bleed
            block[:, 1] = np.float32(10 ** (other_db / 20)) * a
        g = ChannelGate(1, 2)
        db1, own1 = g.push(block)
        db2, own2 = g.finish()
        own = np.concatenate([own1, own2])
        assert own[5:-5].mean() == (1.0 if expect_own else 0.0), other_db
    with pytest.raises(ValueError, match="out of range"):
        ChannelGate(2, 2)


def test_speaker_keys_per_channel():
    assert split_channel_specs("agent=parent;customer=file") == {"agent": "parent", "customer": "file"}
    assert split_channel_specs("regex:(?P<speaker>a=b)") is None
    keys = channel_speaker_keys("agent=parent;customer=file", ["agent", "customer"])
    assert keys("/calls/ag7/c1.wav", 0, "agent") == "agent:ag7"
    assert keys("/calls/ag7/c1.wav", 1, "customer") == "customer:/calls/ag7/c1.wav"
    assert keys("/calls/ag7/m.wav", None, None) == "ag7"  # a mono file: channel 0's spec, unprefixed
    one = channel_speaker_keys("parent")
    assert one("/calls/ag7/c1.wav", 0, None) != one("/calls/ag7/c1.wav", 1, None)
    with pytest.raises(ValueError, match="not a channel name"):
        channel_speaker_keys("boss=parent", ["agent", "customer"])


def test_usage_errors(tmp_path):
    write(tmp_path / "a.wav", np.stack([tone(), tone()], axis=1), 16000)
    db = tmp_path / "ser.db"
    p = run(["submit", str(tmp_path / "a.wav"), "--channel-names", "agent,customer"], db)
    assert p.returncode == 2 and "--channel-names needs --channels split" in p.stderr
    p = run(["submit", str(tmp_path / "a.wav"), "--channels", "split", "--channel-names", "a,,b"], db)
    assert p.returncode == 2 and "empty name" in p.stderr
    p = run(["submit", str(tmp_path / "a.wav"), "--speaker-from", "agent=parent;customer=file"], db)
    assert p.returncode == 2 and "needs --channels split" in p.stderr
    no_traceback(p)


@needs_corpus
def test_rescore_diff_labels_export_and_webhook_event_per_channel(calls, tmp_path):
    from sqlalchemy.orm import Session

    from tests.unit.test_cli import copy_db
    from worker.engine.notify import build_event
    from worker.storage.db import get_engine

    db = copy_db(calls["db"], tmp_path)
    p = run(["rescore", "1", "-q"], db)
    no_traceback(p)
    new = int(p.stdout.split()[-1])
    assert sql(db, "SELECT n_files FROM batches WHERE id = ?", new)[0]["n_files"] == 7  # files, not rows
    a, b = _rows(db, 1), _rows(db, new)
    assert set(a) == set(b)  # the rescore is split again: the same (file, channel) rows
    assert all(a[k]["emotion"] == b[k]["emotion"] for k in a)
    sql(  # every labelled channel-1 row of the new batch gets another label than it had
        db,
        "UPDATE results SET emotion = CASE WHEN emotion = 'fearful' THEN 'calm' ELSE 'fearful' END"
        " WHERE batch_id = ? AND channel = 1 AND status = 'done'",
        new,
    )
    d = json.loads(run(["diff", "1", str(new), "--format", "json"], db).stdout)
    assert d["summary"]["compared"] == len(a) and d["summary"]["only_a"] == 0
    changed = {(Path(r["path"]).name, r["channel"]) for r in d["changed"]}
    assert ("call.wav", 1) in changed and ("call.wav", 0) not in changed
    out = tmp_path / "tolabel.csv"
    run(["labels", "export", "1", "-n", "100", "-o", str(out)], db)
    manifest = list(csv.DictReader(out.open()))
    assert {(Path(r["path"]).name, r["channel"], r["role"]) for r in manifest} >= {
        ("call.wav", "0", "agent"),
        ("call.wav", "1", "customer"),
        ("mono.wav", "", ""),
    }
    from ser_model.datasets import DatasetError, load_dataset

    for r in manifest:
        r["label"] = "angry"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(manifest[0]))
        w.writeheader()
        w.writerows(manifest)
    with pytest.raises(DatasetError, match="one channel of a file is not supported"):
        load_dataset([out], "csv")
    with Session(get_engine(f"sqlite:///{db}")) as s:
        ev = build_event(s, 1)
        assert "channels" not in build_event(s, 2)  # a mix batch's event is unchanged
    by = {(r["channel"], r["role"]): r for r in ev["by_channel"]}
    assert ev["channels"] == "split" and by[(1, "customer")]["failed"] == 2
    assert sum(by[(0, "agent")]["emotions"].values()) == by[(0, "agent")]["done"]


@needs_corpus
def test_python_api_split(calls):
    from ser_batch import predict_files

    path = calls["dir"] / "split" / "bleed_only.wav"
    preds = predict_files([path], channels="split", channel_names=["agent", "customer"])
    assert [(p.channel, p.role, p.status) for p in preds] == [(0, "agent", "done"), (1, "customer", "failed")]
    assert "no speech of its own" in (preds[1].error or "")
    (mixed,) = predict_files([path])
    assert mixed.channel is None and mixed.ok
    with pytest.raises(ValueError, match="channels must be"):
        predict_files([path], channels="stereo")


@needs_corpus
def test_report_has_per_channel_timelines_and_shares_per_role(calls):
    from sqlalchemy.orm import Session

    from producer.report import gather, render
    from worker.storage.db import get_engine

    with Session(get_engine(f"sqlite:///{calls['db']}")) as s:
        data = gather(s, 1)
        mixed = gather(s, 2)
    call = next(c for c in data.calls if c["path"].endswith("/three.wav"))
    assert [ch["role"] for ch in call["channels"]] == ["agent", "customer", "channel 2"]
    assert all(ch["segments"] for ch in call["channels"])  # one time axis: segment times of the file
    roles = {g["name"]: g for g in data.roles}
    assert set(roles) == {"agent", "customer", "channel 2"} and roles["customer"]["failed"] == 2
    for g in roles.values():
        assert abs(sum(sh for _, _, sh in g["emotions"]) - 1.0) < 1e-9
    assert not any(t["path"].endswith("/call.wav") for t in data.timelines)  # channels are drawn as calls
    html = render(data)
    assert "Calls: each party on its own channel" in html and html.count("who spoke when in") == len(data.calls)
    assert mixed.calls == [] and mixed.roles == [] and "Calls: each party" not in render(mixed)


@needs_corpus
def test_speaker_adaptive_split_batch_keys_per_channel(tmp_path):
    """One option says "the agent id is the folder, each call's customer is their own speaker"."""
    rng = np.random.default_rng(3)
    utts = _utterances([8, 9], 2)
    for i in range(2):  # two short calls of agent_8 (classified whole: featurised, then by speaker)
        call, _ = build_call(utts[2 * i : 2 * i + 2], bleed_db=-25.0, rng=rng)
        write(tmp_path / "calls" / "agent_8" / f"c{i}.wav", call, 16000, subtype="PCM_16")
    db = tmp_path / "ser.db"
    spec = "agent=parent;customer=file"
    p = run(["submit", str(tmp_path / "calls"), "--channels", "split", "--channel-names", "agent,customer",
             "--speaker-from", spec, "-q"], db)  # fmt: skip
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    got = {(Path(r["path"]).name, r["channel"]): (r["speaker"], r["status"]) for r in sql(db, "SELECT * FROM results")}
    c0, c1 = (str(tmp_path / "calls" / "agent_8" / f"c{i}.wav") for i in range(2))
    assert got == {
        ("c0.wav", 0): ("agent:agent_8", "done"),
        ("c0.wav", 1): (f"customer:{c0}", "done"),
        ("c1.wav", 0): ("agent:agent_8", "done"),
        ("c1.wav", 1): (f"customer:{c1}", "done"),
    }


def test_window_mode_per_channel_keeps_only_windows_with_own_speech(tmp_path):
    from ser_model.segment import iter_segments

    sr = 16000
    y = np.zeros((6 * sr, 2), dtype=np.float32)
    y[1 * sr : 3 * sr, 0] = tone(200.0, 2.0)  # party 0 speaks 1-3 s
    y[1 * sr : 3 * sr, 1] = 0.05 * tone(200.0, 2.0)  # its bleed into channel 1, -26 dB
    y[4 * sr : 5 * sr, 1] = tone(300.0, 1.0)  # party 1 speaks 4-5 s
    path = write(tmp_path / "w.wav", y, sr, subtype="FLOAT")
    spans = {c: [(s.start_s, s.end_s) for s in iter_segments(path, "window:1:1", channel=c)] for c in (0, 1)}
    assert spans[0] == [(1.0, 2.0), (2.0, 3.0)]
    assert spans[1] == [(4.0, 5.0)]
    with pytest.raises(ValueError, match="out of range"):
        list(iter_segments(path, "vad", channel=2))
