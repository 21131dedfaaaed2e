"""Multi-corpus training: the nEMO loader, the corpus balance, parallel fits equal to serial ones, the
epoch budget, and `train --cv none|quick` (issues "Many voices, many languages" and "Retraining in minutes")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ser_model.datasets import DatasetError, load_dataset, load_sources, parse_sources
from ser_model.labels import LabelParseError, parse_nemo_name
from ser_model.training import (
    MODE_BATCH,
    MODE_GLOBAL,
    MODE_SPEAKER,
    PCA_COMPONENTS,
    REFERENCE_ROWS,
    SAMPLE_PASSES,
    FeatureTable,
    batch_groups,
    check_cross_validation,
    copy_weights,
    cross_validate,
    cross_validate_batch,
    fit_pipelines,
    parallel_calls,
    pipeline_for,
    pipeline_rows,
    shared_fit_pool,
    train_bundle,
    training_params,
)
from tests.conftest import REPO, needs_corpus, tone, write
from tests.unit.test_cli import no_traceback, run

NEMO = REPO.parent / "shared" / "data" / "nemo"


def test_nemo_names_map_onto_the_ravdess_emotions():
    lab = parse_nemo_name("/x/EB0_anger_12.flac")
    assert (lab.emotion, lab.speaker, lab.extra["sentence"]) == ("angry", "nemo:EB0", "12")
    assert parse_nemo_name("KS0_happiness_19.wav").emotion == "happy"
    assert parse_nemo_name("MP0_sadness_45.flac").emotion == "sad"
    assert parse_nemo_name("WR0_fear_3.flac").emotion == "fearful"
    assert parse_nemo_name("WR0_surprised_3.flac").emotion == "surprised"
    for bad in ("EB0_boredom_1.flac", "OAF_back_angry.flac", "03-01-05-01-02-01-07.flac"):
        with pytest.raises(LabelParseError):
            parse_nemo_name(bad)


@pytest.mark.skipif(not NEMO.is_dir(), reason="nEMO not in ../shared/data")
def test_the_shared_nemo_folder_loads_with_nine_speakers_and_six_labels():
    files = load_dataset([NEMO], "nemo")
    assert len(files) == 1120
    assert {f.label for f in files} == {"neutral", "happy", "sad", "angry", "fearful", "surprised"}
    assert len({f.speaker for f in files}) == 9 and all(f.speaker.startswith("nemo:") for f in files)


def test_a_file_that_is_not_an_nemo_name_is_a_dataset_error(tmp_path):
    write(tmp_path / "EB0_anger_1.wav", tone(seconds=0.5), 16000)
    write(tmp_path / "not_a_name.wav", tone(seconds=0.5), 16000)
    with pytest.raises(DatasetError, match="nEMO"):
        load_dataset([tmp_path], "nemo")


def test_corpus_balance_gives_every_corpus_the_same_total_weight(tmp_path):
    from worker.training import corpus_balance_weights

    for i in range(6):
        write(tmp_path / "tess" / "OAF_x" / f"OAF_w{i}_angry.wav", tone(seconds=0.3), 16000)
        write(tmp_path / "tess" / "OAF_y" / f"OAF_w{i}_sad.wav", tone(seconds=0.3), 16000)
    for i in range(2):
        write(tmp_path / "nemo" / f"EB0_anger_{i}.wav", tone(seconds=0.3), 16000)
        write(tmp_path / "nemo" / f"IC0_sadness_{i}.wav", tone(seconds=0.3), 16000)
    write(tmp_path / "mine" / "calm" / "a.wav", tone(seconds=0.3), 16000)
    sources = parse_sources(
        [f"tess:{tmp_path / 'tess'}", f"nemo:{tmp_path / 'nemo'}", f"folders:{tmp_path / 'mine'}"], "ravdess"
    )
    files, source_of = load_sources(sources)
    paths = [str(f.path) for f in files]
    w = corpus_balance_weights(paths, source_of)
    by_src: dict[str, float] = {}
    for p, wi in zip(paths, w, strict=True):
        by_src[source_of[p].split(":", 1)[0]] = by_src.get(source_of[p].split(":", 1)[0], 0.0) + wi
    assert by_src["tess"] == pytest.approx(by_src["nemo"]) == pytest.approx(8.0)  # 16 corpus files / 2 corpora
    assert by_src["folders"] == 1.0  # a user's own files are not re-weighted
    corpus_w = [wi for p, wi in zip(paths, w, strict=True) if not source_of[p].startswith("folders")]
    assert np.mean(corpus_w) == pytest.approx(1.0)


def _table(n_per: int = 12, seed: int = 0, order: tuple[str, str, str] = ("calm", "angry", "sad")) -> FeatureTable:
    """Rows of 5 speakers of 3 corpora; the k-th label of ``order`` shifts every feature by 1.5 k."""
    rng = np.random.default_rng(seed)
    labels, speakers, paths, rows = [], [], [], []
    for s, spk in enumerate(["ravdess:01", "ravdess:02", "nemo:EB0", "nemo:IC0", "tess:OAF"]):
        for k in range(n_per):
            lab = order[k % 3]
            rows.append(rng.normal(size=12) + 1.5 * (k % 3) + 0.3 * s)
            labels.append(lab)
            speakers.append(spk)
            paths.append(f"/d/{spk}/{k}.wav")
    return FeatureTable(np.asarray(rows, np.float32), labels, speakers, paths, [], "fp")


def test_parallel_fits_give_the_same_models_and_bundle_as_serial_fits():
    table = _table()
    labels = ["calm", "angry", "sad"]
    params = {"hidden_layer_sizes": (16,), "max_iter": 40}
    jobs = [(table.X[i::2], np.arange(len(table.labels))[i::2] % 3, None) for i in range(2)]
    serial = fit_pipelines(params, jobs, n_jobs=1)
    parallel = fit_pipelines(params, jobs, n_jobs=2)
    for a, b in zip(serial, parallel, strict=True):
        for ca, cb in zip(a.named_steps["mlp"].coefs_, b.named_steps["mlp"].coefs_, strict=True):
            np.testing.assert_array_equal(ca, cb)
    cv1 = cross_validate(table, labels=labels, n_splits=5, params=params, n_jobs=1)
    cv2 = cross_validate(table, labels=labels, n_splits=5, params=params, n_jobs=2)
    np.testing.assert_array_equal(cv1["proba"], cv2["proba"])
    b1 = train_bundle(table, labels=labels, cv_report=cv1, params=params, n_jobs=1, batch_normalised=True)
    b2 = train_bundle(table, labels=labels, cv_report=cv2, params=params, n_jobs=2, batch_normalised=True)
    _assert_same_weights(b1, b2)


def _assert_same_weights(b1, b2) -> None:
    """Every pipeline of two bundles has the same weights, bit for bit."""
    assert b1.weights.keys() == b2.weights.keys()
    for mode in b1.weights:
        w1, w2 = b1.weights[mode], b2.weights[mode]
        assert (w1 is None) == (w2 is None)
        if w1 is not None:
            for ca, cb in zip(w1.coefs, w2.coefs, strict=True):
                np.testing.assert_array_equal(ca, cb)


def _pid() -> int:
    import os

    return os.getpid()


def test_every_call_inside_a_shared_pool_runs_in_its_processes_from_any_thread():
    import os
    from concurrent.futures import ThreadPoolExecutor

    with shared_fit_pool(2), ThreadPoolExecutor(3) as threads:
        runs = [threads.submit(parallel_calls, [(_pid, ())] * 4, n_jobs=2) for _ in range(3)]
        pids = {p for r in runs for p in r.result()}
        assert os.getpid() not in pids and 1 <= len(pids) <= 2  # the pool's two processes, not one pool per call
        assert parallel_calls([(_pid, ())], n_jobs=1) == [os.getpid()]  # -j 1 still runs where it is called
    assert os.getpid() not in set(parallel_calls([(_pid, ())] * 2, n_jobs=2))  # after the block: a pool per call


def test_stages_fitted_at_once_in_one_pool_give_the_bundle_of_stages_fitted_one_after_the_other():
    """`train` runs its cross-validations and final fits in threads sharing one pool (the final fits
    waiting for the reports as futures); the bundle, its calibration and the reports are those of the
    stages run in turn."""
    from concurrent.futures import ThreadPoolExecutor

    table = _table()
    aug = FeatureTable(table.X + 0.2, table.labels, table.speakers, [p + "#cond0:noise" for p in table.paths], [], "c")
    labels = ["calm", "angry", "sad"]
    kw = {"labels": labels, "n_splits": 5, "params": {"hidden_layer_sizes": (16,), "max_iter": 40}, "augmented": aug}
    final = {"by_corpus": True, "held_out_calibration": True, "batch_normalised": True, **kw}
    final.pop("n_splits")
    cv1 = cross_validate(table, n_jobs=1, **kw)
    bcv1 = cross_validate_batch(table, n_jobs=1, by_corpus=True, **kw)
    b1 = train_bundle(table, cv_report=cv1, batch_cv_report=bcv1, n_jobs=1, **final)
    with ThreadPoolExecutor(4) as threads, shared_fit_pool(2):
        cv_f = threads.submit(cross_validate, table, n_jobs=2, **kw)
        bcv_f = threads.submit(cross_validate_batch, table, n_jobs=2, by_corpus=True, **kw)
        b2 = threads.submit(train_bundle, table, cv_report=cv_f, batch_cv_report=bcv_f, n_jobs=2, **final).result()
    np.testing.assert_array_equal(cv1["proba"], cv_f.result()["proba"])
    np.testing.assert_array_equal(bcv1["proba"], bcv_f.result()["proba"])
    assert b1.trust.keys() == b2.trust.keys()
    _assert_same_weights(b1, b2)
    assert json.dumps(b1.meta["metrics"]["trust"], sort_keys=True, default=str) == json.dumps(
        b2.meta["metrics"]["trust"], sort_keys=True, default=str
    )


def test_a_cross_validation_that_cannot_run_is_refused_before_any_fit():
    table = _table(n_per=3)
    check_cross_validation(table)  # known speakers: grouped folds
    table.speakers[:] = [None] * len(table.speakers)
    check_cross_validation(table)  # unknown speakers, 3 files of each label: stratified folds
    one_each = table.subset(np.asarray([i < 3 for i in range(len(table.labels))]))
    with pytest.raises(ValueError, match="at least 2 examples per label"):
        check_cross_validation(one_each)


def test_the_epoch_budget_keeps_the_rows_seen_in_one_fit():
    def epochs(n):
        return training_params(n)["max_iter"]

    assert epochs(1200) == 300  # small sets: the most epochs
    assert epochs(3600) == 200  # RAVDESS with two degraded copies
    assert epochs(5120) == 141  # the three shared corpora, clean
    seen = [n * epochs(n) for n in (2400, 4800, 7200, 15360)]
    assert all(abs(s - SAMPLE_PASSES) <= 15360 / 2 for s in seen)  # the same rows seen, whatever the set
    assert epochs(100 * REFERENCE_ROWS) == 30  # a floor: never a handful of epochs
    assert training_params(15360)["n_components"] == PCA_COMPONENTS
    with pytest.raises(ValueError, match="no training rows"):
        training_params(0)


def test_a_pca_keeps_no_more_components_than_the_training_matrix_has():
    def steps(n_rows, n_features, k):
        pipe = pipeline_for({"n_components": k, "max_iter": 5}, n_rows, n_features)
        return {name: getattr(step, "n_components", None) for name, step in pipe.steps}

    assert steps(5000, 1757, 512) == {"scaler": None, "pca": 512, "mlp": None}
    assert steps(40, 1757, 512) == {"scaler": None, "pca": 40, "mlp": None}  # fewer rows than components
    assert "pca" not in steps(5000, 300, 512)  # every feature kept: no projection
    assert "pca" not in steps(5000, 1757, None)


def test_batch_groups_keep_each_corpus_and_channel_apart():
    paths = ["/a.wav", "/b.wav#cond0:telephone", "/c.wav", "/c.wav#cond1:noise"]
    speakers = ["ravdess:01", "ravdess:01", "nemo:EB0", "nemo:EB0"]
    assert batch_groups(paths, speakers, False) == ["clean", "telephone", "clean", "noise"]
    assert batch_groups(paths, speakers, True) == ["ravdess/clean", "ravdess/telephone", "nemo/clean", "nemo/noise"]


def test_a_copy_weighs_what_its_file_weighs():
    table = _table(n_per=3)
    w = np.linspace(0.5, 2.0, len(table.labels))
    aug = FeatureTable(
        table.X[:2],
        table.labels[:2],
        table.speakers[:2],
        [table.paths[1] + "#cond0:noise", "/elsewhere.wav#cond0:noise"],
        [],
        "x",
    )
    np.testing.assert_array_equal(copy_weights(w, table, aug), [w[1], 1.0])
    assert copy_weights(None, table, aug) is None


def test_pipeline_rows_are_the_rows_each_pipeline_of_a_bundle_trains_on():
    table = _table(n_per=6)
    labels = ["angry", "calm", "sad"]
    w = np.linspace(0.5, 2.0, len(table.labels))
    aug = FeatureTable(table.X[:4] + 0.1, table.labels[:4], table.speakers[:4],
                       [p + "#cond0:noise" for p in table.paths[:4]], [], "x")  # fmt: skip
    rows, stats = pipeline_rows(table, aug, labels, w, batch_normalised=True, by_corpus=True, min_speaker_files=6)
    assert list(rows) == [MODE_GLOBAL, MODE_SPEAKER, MODE_BATCH]
    X, y, wg = rows[MODE_GLOBAL]
    assert X.shape == (len(table.labels) + 4, 12) and len(y) == len(wg) == X.shape[0]
    np.testing.assert_array_equal(wg[-4:], w[:4])  # a copy weighs what its file weighs
    # speaker-adaptive: each speaker's rows (copies too) z-normalised by the statistics of its clean files
    Zs, ys, ws = rows[MODE_SPEAKER]
    assert set(stats) == set(table.speakers) and Zs.shape == X.shape
    first = Zs[:6]  # ravdess:01's clean rows
    np.testing.assert_allclose(first.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(Zs[-4:], (aug.X - table.X[:6].mean(0)) / table.X[:6].std(0), rtol=1e-3, atol=1e-3)
    # batch-normalised: every corpus and kind of channel its own group, the global weights
    Xb, yb, wb = rows[MODE_BATCH]
    nemo = np.asarray([str(s).startswith("nemo") for s in table.speakers])
    np.testing.assert_allclose(Xb[: len(nemo)][nemo].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_array_equal(wb, wg)
    # too few files a speaker: no speaker-adaptive rows; without weights no weights
    rows, stats = pipeline_rows(table, None, labels, None, min_speaker_files=7)
    assert list(rows) == [MODE_GLOBAL] and stats == {} and rows[MODE_GLOBAL][2] is None


def _write_corpus(root, n_actors: int = 3) -> None:
    """Tiny RAVDESS-named corpus of tones (three labels, distinct pitch per label)."""
    for actor in range(1, n_actors + 1):
        for emo, f0 in (("02", 140.0), ("05", 320.0), ("04", 200.0)):
            for rep in (1, 2):
                name = f"03-01-{emo}-01-01-0{rep}-{actor:02d}.wav"
                write(root / f"Actor_{actor:02d}" / name, tone(freq=f0 + 7 * actor + rep, seconds=1.0), 16000)


@pytest.mark.parametrize("cv", ["none", "quick"])
def test_train_cv_none_and_quick_register_a_model_that_labels_files(tmp_path, cv):
    data = tmp_path / "data"
    _write_corpus(data)
    db = tmp_path / "ser.db"
    rep = tmp_path / "rep"
    t = run(
        ["train", str(data), "--features", "fast", "--conditions", "0", "--folds", "3", "--cv", cv,
         "--report", str(rep), "--output", str(tmp_path / "m.npz"), "--activate"],
        db,
    )  # fmt: skip
    no_traceback(t)
    assert t.returncode == 0, t.stdout + t.stderr
    metrics = json.loads((rep / "metrics.json").read_text())
    if cv == "none":
        assert "no metrics" in t.stderr and "wa" not in metrics
        assert not (rep / "confusion_matrix.png").exists()
    else:
        assert "skipped" in t.stderr and 0.0 <= metrics["wa"] <= 1.0 and "speaker-independent" in metrics["protocol"]
    p = run(["submit", str(data / "Actor_01"), "-q"], db)
    assert p.returncode == 0, p.stderr
    out = run(["results", "--format", "json"], db)
    rows = json.loads(out.stdout)
    assert len(rows) == 6 and all(r["status"] == "done" and r["emotion"] in ("calm", "angry", "sad") for r in rows)


@needs_corpus
def test_external_babble_folder_must_hold_audio(tmp_path):
    data = tmp_path / "data"
    _write_corpus(data, 2)
    (tmp_path / "empty").mkdir()
    t = run(["train", str(data), "--features", "fast", "--conditions", "1", "--babble", str(tmp_path / "empty"),
             "--cv", "none", "--no-register", "--output", str(tmp_path / "m.npz")], tmp_path / "ser.db")  # fmt: skip
    no_traceback(t)
    assert t.returncode == 2 and "no audio files" in t.stderr


def test_the_dimension_head_is_trained_stored_and_orders_activated_above_calm():
    """A bundle trained with the head (logistic output) keeps it through its bytes; the head puts rows of
    an activated category (angry) above rows of a calm one on arousal, and a negative one below on valence."""
    from ser_model.dimensions import CATEGORY_POSITIONS
    from ser_model.model import bundle_from_bytes, bundle_to_bytes, sha256_bytes

    table = _table(
        n_per=24, order=("calm", "sad", "angry")
    )  # sides apart along one line: a linear head cannot pick out a middle class
    labels = ["calm", "angry", "sad"]
    b = train_bundle(table, labels=labels, params={"hidden_layer_sizes": (16,), "max_iter": 60}, dimension_head=True)
    assert b.dimension_head is not None and b.meta["dimensions"]["source"].startswith("mean of the trained")
    assert b.dimension_head.output == "logistic" and "speaker-adaptive" in b.dimension_heads
    data = bundle_to_bytes(b)
    again = bundle_from_bytes(data, sha256_bytes(data))
    assert set(again.dimension_heads) == set(b.dimension_heads)
    X = table.X
    d1 = b.dimensions(X, b.predict_proba(X))
    d2 = again.dimensions(X, again.predict_proba(X))
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    spk = list(table.speakers)
    p1, m1 = b.predict_proba_speakers(X, spk)
    p2, m2 = again.predict_proba_speakers(X, spk)
    assert "speaker-adaptive" in m1
    np.testing.assert_allclose(b.dimensions(X, p1, m1, spk), again.dimensions(X, p2, m2, spk), atol=1e-6)
    lab = np.asarray(table.labels)
    assert d1.shape == (len(lab), 2) and ((d1 >= 0) & (d1 <= 1)).all()
    assert d1[lab == "angry", 0].mean() > d1[lab == "calm", 0].mean() + 0.1
    assert d1[lab == "sad", 1].mean() < d1[lab == "calm", 1].mean() - 0.1
    assert CATEGORY_POSITIONS["angry"][0] > 0.5 > CATEGORY_POSITIONS["calm"][0]
    plain = train_bundle(table, labels=labels, params={"hidden_layer_sizes": (16,), "max_iter": 60})
    assert plain.dimension_head is None and "weighted" in plain.meta["dimensions"]["source"]


def test_held_out_corpus_predictions_never_train_on_the_corpus_they_predict(monkeypatch):
    """One fit per corpus; each corpus' rows (clean and copies) are predicted by a model whose training
    rows hold none of that corpus, and only rows whose label that model knows are kept."""
    import ser_model.training as tr

    table = _table(n_per=9)
    aug = table.subset(np.ones(len(table.labels), bool))
    aug = FeatureTable(aug.X + 0.1, aug.labels, aug.speakers, [p + "#cond0:noise" for p in aug.paths], [], "c")
    seen: list[np.ndarray] = []
    real = tr.fit_pipelines

    def spy(params, jobs, **kw):
        seen.extend(X for X, _, _ in jobs)
        return real(params, jobs, **kw)

    monkeypatch.setattr(tr, "fit_pipelines", spy)
    out = tr.held_out_corpus_predictions(
        table, aug, labels=["calm", "angry", "sad"], params={"hidden_layer_sizes": (8,), "max_iter": 20}
    )
    assert len(seen) == 3  # ravdess, nemo, tess
    kinds = set(out["kind"])
    assert kinds == {"corpus:ravdess", "corpus:nemo", "corpus:tess"}
    for X, kind in zip(
        seen, sorted(kinds, key=lambda k: ["corpus:nemo", "corpus:ravdess", "corpus:tess"].index(k)), strict=True
    ):
        c = kind.split(":")[1]
        own = table.X[[sp.startswith(c) for sp in table.speakers]]
        assert not any((X == row).all(axis=1).any() for row in own)  # the corpus' clean rows are not in training
    assert out["proba"].shape == (2 * len(table.labels), 3) and np.isfinite(out["ood_scores"]).all()
    single = _table(n_per=6)
    single.speakers[:] = ["ravdess:01"] * len(single.speakers)
    assert len(tr.held_out_corpus_predictions(single, None, labels=["calm", "angry", "sad"])["y"]) == 0


def test_corpus_balance_by_speakers_counts_voices_not_files():
    """Under the speakers rule a corpus of two voices and many files weighs two voices' worth."""
    from worker.training import corpus_balance_weights

    paths = [f"/t/{i}" for i in range(8)] + [f"/r/{i}" for i in range(4)]
    source_of = {p: ("tess:/t" if p.startswith("/t") else "ravdess:/r") for p in paths}
    speakers = ["tess:OAF"] * 4 + ["tess:YAF"] * 4 + ["ravdess:01", "ravdess:02", "ravdess:03", "ravdess:04"]
    w = corpus_balance_weights(paths, source_of, speakers)
    tess, rav = w[:8].sum(), w[8:].sum()
    assert tess / rav == pytest.approx(2 / 4)  # 2 TESS voices against 4 RAVDESS actors
    assert w.sum() == pytest.approx(len(paths))  # the weights still average 1


def test_a_multi_corpus_bundle_is_calibrated_on_the_corpora_each_model_never_heard():
    """With several corpora the global temperature is one temperature fitted on the held-out corpora's
    files (what a deployed model meets); its summary reports how it does on them."""
    table = _table(n_per=15)
    labels = ["calm", "angry", "sad"]
    params = {"hidden_layer_sizes": (16,), "max_iter": 60}
    cv = cross_validate(table, labels=labels, n_splits=5, params=params)
    b = train_bundle(table, labels=labels, cv_report=cv, params=params, by_corpus=True, held_out_calibration=True)
    g = b.meta["metrics"]["trust"]["calibration"]["global"]
    assert "held-out corpora" in g["method"] and b.trust["temperature"]["global"]["growth"] == 0.0
    from ser_model.training import held_out_corpus_predictions
    from ser_model.trust import fit_temperature

    held = held_out_corpus_predictions(table, None, labels=labels, params=params)
    assert b.trust["temperature"]["global"]["t0"] == pytest.approx(fit_temperature(held["proba"], held["y"]))
    h = g["held_out_corpora"]
    assert h["n"] == len(table.labels)  # every file of every corpus, predicted by a model of the others
    assert h["wa"] == pytest.approx(np.mean(held["proba"].argmax(axis=1) == held["y"]))
    one = train_bundle(table, labels=labels, cv_report=cv, params=params, by_corpus=False)
    assert "held_out_corpora" not in one.meta["metrics"]["trust"]["calibration"]["global"]
