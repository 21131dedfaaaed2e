"""Copies through held-out kinds of channel for calibration (ser_model.training.held_out_channel_predictions)."""

from __future__ import annotations

import numpy as np

from ser_model.training import FeatureTable, channel_kinds, held_out_channel_predictions

LABELS = ["angry", "calm", "sad"]
FAMILIES = ["noise", "babble", "reverb+noise", "telephone", "reverb"]


def _tables(n_speakers: int = 6, per_speaker: int = 6) -> tuple[FeatureTable, FeatureTable]:
    """Clean rows and two copies per row; column 0 is a row id (clean i: i; copy j: 1000 + j)."""
    rng = np.random.default_rng(0)
    labels = [LABELS[i % 3] for i in range(n_speakers * per_speaker)]
    speakers = [f"s{i // per_speaker}" for i in range(len(labels))]
    X = rng.standard_normal((len(labels), 6)).astype(np.float32)
    X[:, 1] += np.array([LABELS.index(v) for v in labels]) * 2.0  # learnable
    X[:, 0] = np.arange(len(labels))
    paths = [f"/d/{s}/{i}.wav" for i, s in enumerate(speakers)]
    clean = FeatureTable(X, labels, speakers, paths, [], "fp")
    cX, cl, cs, cp = [], [], [], []
    for c in range(2):
        for i in range(len(labels)):
            x = X[i].copy()
            x[0] = 1000 + len(cX)
            cX.append(x)
            cl.append(labels[i])
            cs.append(speakers[i])
            cp.append(f"{paths[i]}#cond{c}:{FAMILIES[(i + c) % len(FAMILIES)]}")
    return clean, FeatureTable(np.asarray(cX, np.float32), cl, cs, cp, [], "fp2")


def test_channel_kinds_split_a_family_into_its_steps():
    assert channel_kinds(["/a.wav", "/a.wav#cond0:reverb+babble", "/b.wav#cond1:noise"]) == [
        frozenset(),
        frozenset({"reverb", "babble"}),
        frozenset({"noise"}),
    ]


def test_held_out_kind_is_never_in_the_training_part_and_neither_is_a_test_speaker(monkeypatch):
    import ser_model.training as tr

    clean, copies = _tables()
    kinds_of = dict(zip(1000 + np.arange(len(copies.labels)), channel_kinds(copies.paths), strict=True))
    speaker_of = {
        **dict(enumerate(clean.speakers)),
        **dict(zip(1000 + np.arange(len(copies.labels)), copies.speakers, strict=True)),
    }
    fits: list[np.ndarray] = []
    real = tr.fit_weighted

    def spy(pipeline, X, y, sample_weight=None):
        fits.append(np.asarray(X[:, 0], dtype=int))
        return real(pipeline, X, y, sample_weight)

    monkeypatch.setattr(tr, "fit_weighted", spy)
    params = {"hidden_layer_sizes": (8,), "max_iter": 50}
    out = held_out_channel_predictions(clean, copies, labels=LABELS, n_splits=3, params=params)
    kinds = sorted({"noise", "babble", "reverb", "telephone"})
    assert len(fits) == 3 * len(kinds)  # one model per fold and kind
    # every copy is predicted once per kind of its channel, with its own label
    want = sum(len(k) for k in channel_kinds(copies.paths))
    assert out["proba"].shape == (want, 3) and out["ood_scores"].shape == out["y"].shape == (want,)
    assert sorted(set(out["kind"])) == kinds
    np.testing.assert_allclose(out["proba"].sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(np.isfinite(out["ood_scores"]))
    for rows in fits:
        copy_rows = rows[rows >= 1000]
        present = set().union(*(kinds_of[r] for r in copy_rows))
        missing = set(kinds) - present
        assert len(missing) == 1  # exactly the held-out kind is absent ...
        (kind,) = missing
        assert not any(kind in kinds_of[r] for r in copy_rows)
        train_speakers = {speaker_of[r] for r in rows}
        assert len(train_speakers) == 4  # ... and the fold's 2 test speakers are absent (6 speakers, 3 folds)
    # the copies predicted for a kind are all the copies with that kind
    for kind in kinds:
        assert int(np.sum(out["kind"] == kind)) == sum(kind in k for k in channel_kinds(copies.paths))


def test_no_held_out_rows_without_speakers_or_condition_copies():
    clean, copies = _tables()
    anon = FeatureTable(clean.X, clean.labels, [None] * len(clean.labels), clean.paths, [], "fp")
    assert len(held_out_channel_predictions(anon, copies, labels=LABELS)["y"]) == 0
    plain = FeatureTable(
        copies.X, copies.labels, copies.speakers, [p.split("#")[0] + "#noise" for p in copies.paths], [], "x"
    )
    assert len(held_out_channel_predictions(clean, plain, labels=LABELS)["y"]) == 0


def test_fit_trust_fits_the_global_temperature_on_held_out_channels_too():
    from ser_model.training import cross_validate, fit_trust

    clean, copies = _tables()
    params = {"hidden_layer_sizes": (8,), "max_iter": 50}
    cv = cross_validate(clean, labels=LABELS, n_splits=3, params=params, augmented=copies)
    held = held_out_channel_predictions(clean, copies, labels=LABELS, n_splits=3, params=params)
    _, plain = fit_trust(clean, LABELS, cv, augmented=copies)
    trust, summary = fit_trust(clean, LABELS, cv, augmented=copies, held_out=held)
    cal = summary["calibration"]["global"]
    assert cal["n_held_out_channel"] == len(held["y"]) > 0
    assert plain["calibration"]["global"]["n_held_out_channel"] == 0
    # the threshold and reliability stay those of the out-of-fold files
    assert cal["n"] == plain["calibration"]["global"]["n"] == len(clean.labels) + len(copies.labels)
    t = trust["temperature"]["global"]
    all_scores = np.concatenate([cv["ood_scores"], cv["aug_ood_scores"], held["ood_scores"]])
    assert t["ref"] < t.get("s_max", np.inf) <= all_scores.max() + 1e-12 or t["growth"] == 0.0
