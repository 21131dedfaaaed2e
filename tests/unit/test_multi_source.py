"""Training on several sources at once: KIND:PATH parsing, weights, per-file groups, per-source metrics."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ser_model.datasets import (
    DatasetError,
    LabelledFile,
    Source,
    group_unknown_speakers,
    load_sources,
    parse_sources,
    parse_weights,
)
from ser_model.labels import parse_tess_name
from tests.conftest import RAVDESS, TESS, needs_corpus, tone, write
from tests.unit.test_cli import no_traceback, run


def test_parse_sources_kind_prefix_and_default_kind():
    got = parse_sources(["ravdess:/data/ravdess", "csv:tolabel.csv", "plain/dir", "my:odd/path"], "tess")
    assert got == [
        Source("ravdess", "/data/ravdess"),
        Source("csv", "tolabel.csv"),
        Source("tess", "plain/dir"),
        Source("tess", "my:odd/path"),  # not a known kind: part of the path
    ]
    assert got[1].name == "csv:tolabel.csv"
    with pytest.raises(DatasetError, match="empty path"):
        parse_sources(["csv:"], "ravdess")


def test_parse_weights():
    srcs = [Source("ravdess", "/r"), Source("csv", "a.csv")]
    assert parse_weights(["csv=3", "ravdess:/r=0.5"], srcs) == {"csv": 3.0, "ravdess:/r": 0.5}
    for bad in ("csv", "csv=0", "csv=-1", "csv=x", "=2", "csv=inf"):
        with pytest.raises(DatasetError, match="--weight"):
            parse_weights([bad], srcs)
    with pytest.raises(DatasetError, match="no training source 'tess'"):
        parse_weights(["tess=2"], srcs)


def test_load_sources_mixes_kinds_dedupes_and_groups_unknown_speakers(tmp_path):
    folders = tmp_path / "folders"
    for lab in ("happy", "sad"):
        write(folders / lab / f"{lab}1.wav", tone(seconds=0.5), 16000)
    m = tmp_path / "mine.csv"
    m.write_text(f"path,label,speaker\n{folders / 'happy' / 'happy1.wav'},angry,\nx.wav,calm,spk1\n")
    files, source_of = load_sources([Source("folders", str(folders)), Source("csv", str(m))])
    by_name = {Path(f.path).name: f for f in files}
    assert set(by_name) == {"happy1.wav", "sad1.wav", "x.wav"}
    assert by_name["happy1.wav"].label == "angry"  # the later source's label wins for a file in both
    assert source_of[str(by_name["happy1.wav"].path)] == f"csv:{m}"
    assert source_of[str(by_name["sad1.wav"].path)] == f"folders:{folders}"
    grouped, n = group_unknown_speakers(files)
    assert n == 2 and all(f.speaker for f in grouped)
    assert {f.speaker for f in grouped if Path(f.path).name != "x.wav"} == {
        f"file:{f.path}" for f in files if Path(f.path).name != "x.wav"
    }
    same, n0 = group_unknown_speakers([LabelledFile(Path("a"), "x", None)])
    assert n0 == 0 and same[0].speaker is None  # nobody has a speaker: stratified folds as before


def test_fit_weighted_weights_change_the_fit_and_match_repetition():
    from ser_model.model import build_pipeline
    from ser_model.training import fit_weighted

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (40, 5)), rng.normal(0.6, 1, (40, 5))]).astype(np.float32)
    y = np.repeat([0, 1], 40)
    probe = np.full((1, 5), 0.3, dtype=np.float32)  # between the classes
    params = {"hidden_layer_sizes": (8,), "alpha": 1.0, "max_iter": 200}
    plain = fit_weighted(build_pipeline(**params), X, y).predict_proba(probe)[0, 1]
    w = np.where(y == 1, 5.0, 1.0)
    heavy = fit_weighted(build_pipeline(**params), X, y, w).predict_proba(probe)[0, 1]
    assert heavy > plain + 0.05  # class 1 weighted 5x pulls the undecided point towards it
    same = fit_weighted(build_pipeline(**params), X, y, np.ones(len(y))).predict_proba(probe)[0, 1]
    assert same == pytest.approx(plain)


def test_weights_never_reach_test_folds():
    """A row's out-of-fold prediction does not depend on its own weight (it is a test row then)."""
    from ser_model.training import FeatureTable, cross_validate

    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (60, 6)).astype(np.float32)
    labels = ["a", "b"] * 30
    X[1::2] += 0.8
    spk = [f"s{i % 6}" for i in range(60)]
    t = FeatureTable(X, labels, spk, [f"f{i}" for i in range(60)], [], "fp")
    p = {"hidden_layer_sizes": (8,), "max_iter": 100}
    w = np.ones(60)
    base = cross_validate(t, labels=["a", "b"], n_splits=3, params=p, sample_weight=w)
    folds = base["per_fold_wa"]
    w2 = w.copy()
    w2[[i for i in range(60) if spk[i] == "s0"]] = 50.0
    heavy = cross_validate(t, labels=["a", "b"], n_splits=3, params=p, sample_weight=w2)
    # rows of s0 are test rows in exactly one fold; that fold's model never saw their weight
    from sklearn.model_selection import GroupKFold

    splits = list(GroupKFold(n_splits=3).split(X, labels, groups=spk))
    k = next(i for i, (_, te) in enumerate(splits) if 0 in te)
    assert heavy["per_fold_wa"][k] == folds[k]
    others = [i for i in range(3) if i != k]
    assert any(heavy["per_fold_wa"][i] != folds[i] for i in others) or heavy["predictions"] != base["predictions"]


@needs_corpus
@pytest.mark.slow
def test_train_ravdess_plus_labelled_csv_reports_per_source_metrics(tmp_path):
    """The labelling loop end to end: submit 'own' recordings (TESS here), export the least-sure ones,
    label them, train together with RAVDESS, and read the accuracy on the own files."""
    if not TESS.is_dir():
        pytest.skip(f"TESS not found at {TESS}")
    own = tmp_path / "own"
    for spk in ("OAF", "YAF"):
        for emo in ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad"):
            d = own / f"{spk}_{emo}"
            d.mkdir(parents=True)
            for f in sorted((TESS / f"{spk}_{emo}").glob("*.flac"))[:3]:
                (d / f.name).symlink_to(f)
    ravdess = tmp_path / "ravdess"
    for actor in ("Actor_10", "Actor_11", "Actor_12"):  # symlinked files (training does not follow folder links)
        (ravdess / actor).mkdir(parents=True)
        for f in (RAVDESS / actor).glob("*.flac"):
            (ravdess / actor / f.name).symlink_to(f)
    db = tmp_path / "ser.db"
    p = run(["submit", str(own), "--speaker-from", "tess", "-q"], db)
    assert p.returncode == 0, p.stderr
    manifest = tmp_path / "tolabel.csv"
    assert run(["labels", "export", "1", "--count", "30", "-o", str(manifest)], db).returncode == 0
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and all(r["speaker"] in ("tess:OAF", "tess:YAF") for r in rows)
    for r in rows:  # the person labelling: here the true label from the TESS name
        r["label"] = parse_tess_name(r["path"]).emotion
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rep = tmp_path / "rep"
    t = run(
        [
            "train",
            f"ravdess:{ravdess}",
            f"csv:{manifest}",
            "--weight",
            "csv=3",
            "--no-register",
            "--output",
            str(tmp_path / "m.npz"),
            "--report",
            str(rep),
            "--folds",
            "5",
            "--features",  # per-source metrics do not depend on the feature set: the fast one keeps this short
            "fast",
            "--conditions",
            "0",
        ],
        db,
    )
    no_traceback(t)
    assert t.returncode == 0, t.stdout + t.stderr
    table = t.stdout[t.stdout.index("per source") :]
    assert re.search(r"│ csv:\S+tolabel\.csv\s*│\s*30\s*│\s*3\s*│\s*known\s*│", table), table
    assert re.search(r"│ ravdess:\S+ravdess\s*│\s*180\s*│\s*1\s*│\s*known\s*│", table), table
    metrics = json.loads((rep / "metrics.json").read_text())
    ps = metrics["per_source"]
    assert ps[f"csv:{manifest}"]["n"] == 30 and ps[f"csv:{manifest}"]["weight"] == 3.0
    assert ps[f"ravdess:{ravdess}"]["n"] == 180
    assert metrics["n"] == 210 and "speaker-independent" in metrics["protocol"]
    for m in ps.values():
        assert 0.0 <= m["wa"] <= 1.0 and sum(map(sum, m["confusion"])) == m["n"]
    # the per-source numbers are the pooled out-of-fold predictions split by source
    total_correct = sum(sum(m["confusion"][i][i] for i in range(len(m["labels"]))) for m in ps.values())
    assert total_correct == round(metrics["wa"] * 210)
    assert os.path.exists(tmp_path / "m.npz")
    print(t.stdout)
