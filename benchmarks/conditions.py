"""Conditions benchmark (issue 18): labels on unseen speakers under the channels users record through.

Usage (from the repository root; feature matrices are cached, so a second run only re-trains)::

    python benchmarks/conditions.py --ravdess ../shared/data/ravdess --tess ../shared/data/tess

Writes ``benchmarks/results/conditions.md`` and ``conditions.json``.

Protocol:

- **Held-out RAVDESS speakers**: 5-fold GroupKFold by actor over actors 1-20. Every fold trains the
  two models as ``ser-batch train`` does -- *fast*: hand-crafted features (``ser-feat-3``), clean files
  only, as the packaged fast model; *accurate*: hand-crafted + Whisper encoder (``ser-feat-3+whisper-2``),
  each training file plus 3 degraded copies (``--copies``) (:func:`ser_model.training.condition_table`: babble only
  from the fold's training speakers, rooms from the training room bank) -- and labels the fold's four
  unseen actors clean and through each of :data:`ser_model.degrade.TEST_CONDITIONS`.
- **Test conditions unseen in training**: noise drawn with other seeds; babble mixed from TESS
  voices (another corpus, never in training); rooms simulated with other geometries
  (:func:`ser_model.degrade.room_for_rt60`); telephone and codec settings are fixed values.
- **Three ways to label**, each with its own pipeline trained for it: *global* (each file alone);
  *speaker-adaptive* (each test actor's files z-normalised by that actor's statistics, as
  ``--speaker-from``); *batch-normalised* (all files of the condition's batch -- the fold's four
  actors, 240 files -- z-normalised by the batch's own statistics; the pipeline is trained on groups
  normalised the same way: the clean training files as one group, the degraded copies grouped by
  their kind of channel).
- **Reported** per condition: WA; agreement with the label the same mode gives the clean file;
  mean confidence after temperature scaling (one temperature per model and mode, fitted on the *clean*
  out-of-fold predictions only, so degraded conditions test the calibration); ECE (15 bins);
  |confidence - WA|; the share of the most frequent label.
- **The packaged model's own confidence** (``--bundle``, default ``ser_model/models/default.npz``): its
  distance-aware temperature per mode (:class:`ser_model.trust.DistanceTemperature`, a function of the
  out-of-domain score) and its out-of-domain and low-confidence thresholds, as the worker applies
  them -- on held-out RAVDESS actors to the fold models' raw probabilities with each file scored by
  its fold's detector (fitted on the fold's clean and degraded training rows, as ``ser-batch train``
  does), on TESS by the bundle itself. Reported: WA, mean confidence, |confidence - WA|, ECE and
  the flagged shares.
- **TESS** (a corpus never in training; 1 file in ``--tess-every``): models trained on all of actors
  1-20 the same way, TESS labelled clean and under each condition (babble from RAVDESS actors 1-20 is
  not used here: the babble voices are other TESS files of the *other* speaker).

Corpora: RAVDESS (Livingstone & Russo 2018, CC BY-NC-SA 4.0), TESS (Pichora-Fuller & Dupuis 2020,
CC BY-NC-ND 4.0); see ../shared/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.model_selection import GroupKFold  # noqa: E402

from ser_model.audio import AudioError, load_audio  # noqa: E402
from ser_model.datasets import load_dataset  # noqa: E402
from ser_model.degrade import TEST_CONDITIONS, Condition, apply  # noqa: E402
from ser_model.features import N_FEATURES  # noqa: E402
from ser_model.featureset import ACCURATE, extract  # noqa: E402
from ser_model.labels import EMOTIONS  # noqa: E402
from ser_model.model import build_pipeline, load_bundle  # noqa: E402
from ser_model.speaker import (  # noqa: E402
    MODE_BATCH,
    MODE_GLOBAL,
    MODE_SPEAKER,
    speaker_normalise,  # noqa: E402
)
from ser_model.training import (  # noqa: E402
    FeatureTable,
    condition_table,
    encode_labels,
    extract_table,
    feature_cache_namespace,
)
from ser_model.trust import (  # noqa: E402
    DistanceTemperature,
    apply_temperature,
    expected_calibration_error,
    fit_ood,
    fit_temperature,
)

MODES = ("global", "speaker-adaptive", "batch-normalised")
MODELS = ("fast", "accurate")
CLEAN = Condition("clean", ())


def _init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    warnings.filterwarnings("ignore")


def _degraded_features(args: tuple[str, int, tuple[str, ...]]) -> np.ndarray:
    """Accurate feature vector of one file through test condition ``ci`` (NaN row when it fails)."""
    from ser_model.encoder import get_encoder

    path, ci, voices = args
    cond = TEST_CONDITIONS[ci]
    try:
        rng = np.random.default_rng([777, int(hashlib.sha256(path.encode()).hexdigest()[:8], 16), ci])
        y, _ = load_audio(path)
        babble = [load_audio(v)[0] for v in voices] if any(s.kind == "babble" for s in cond.steps) else []
        return extract(apply(y, cond, rng, babble=babble), ACCURATE, get_encoder())
    except AudioError:
        return np.full(N_FEATURES + get_encoder().dim, np.nan, np.float32)


def condition_matrix(paths: list[str], ci: int, voice_pool: list[str], cache: Path, tag: str, jobs: int) -> np.ndarray:
    """Features ``(n, 1757)`` of ``paths`` through ``TEST_CONDITIONS[ci]``, cached in ``cache``."""
    name = TEST_CONDITIONS[ci].name
    # keyed by the feature cache namespace (version *and* the extractor's source), not the version
    # string alone: a changed encoder input under the same version name once reused stale matrices
    key = hashlib.sha256(("\n".join(paths) + name + tag + feature_cache_namespace(ACCURATE)).encode()).hexdigest()[:16]
    f = cache / f"{tag}-{name}-{key}.npy"
    if f.exists():
        return np.load(f)
    rng = np.random.default_rng([ci, 99])
    args = [(p, ci, tuple(rng.choice(voice_pool, size=5, replace=False))) for p in paths]
    with ProcessPoolExecutor(jobs, initializer=_init) as ex:
        X = np.stack(list(ex.map(_degraded_features, args, chunksize=16)))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, X)
    return X


def _copies_code_digest() -> str:
    """12 hex digits over what makes the training copies: the source of :mod:`ser_model.degrade`, of
    the copy-making functions of :mod:`ser_model.training` and the feature cache namespace. Cached copies made by other code (an
    earlier seeding, other condition draws) are then never reused: copies once seeded by path, kept
    under a key of the training files alone, trained a benchmark model whose TESS WA was 0.29
    against 0.41 for the packaged model trained on the content-seeded copies."""
    import inspect

    import ser_model.degrade
    import ser_model.training as tr

    h = hashlib.sha256(tr.feature_cache_namespace(ACCURATE).encode())
    h.update(Path(ser_model.degrade.__file__ or "").read_bytes())
    for fn in (tr.condition_table, tr._condition_features_of, tr.babble_groups, tr._content_digest):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:12]


def degraded_copies(
    table: FeatureTable, copies: int, *, cache_dir: str, n_jobs: int, seed: int = 0, n_splits: int = 5
) -> tuple[FeatureTable, bool]:
    """``condition_table(table, copies, seed=seed, n_splits=n_splits)``, cached in ``cache_dir`` under a key of the
    training files (their fingerprint), the copy count and :func:`_copies_code_digest`; this benchmark's training
    copies and ``benchmarks/accuracy.py``'s (seed 0, 5 folds) share one file.

    Returns:
        The copies and whether they came from the cache.
    """
    key = f"copies-{table.fingerprint[:16]}-{copies}-{_copies_code_digest()}"
    if (seed, n_splits) != (0, 5):
        key += f"-seed{seed}-k{n_splits}"
    f = Path(cache_dir) / f"{key}.npz"
    if f.exists():
        d = np.load(f, allow_pickle=False)
        labels, speakers, paths = ([str(v) for v in d[k]] for k in ("labels", "speakers", "paths"))
        known = set(table.paths)
        if not all(p.rsplit("#", 1)[0] in known for p in paths):  # cached by a run that spelled the paths otherwise
            by_name = {os.path.basename(p): p for p in table.paths}
            if len(by_name) != len(table.paths):
                raise SystemExit(f"{f}: copies of other paths, and file names are not unique; delete it to remake")
            paths = [by_name[os.path.basename(p.rsplit("#", 1)[0])] + "#" + p.rsplit("#", 1)[1] for p in paths]
        return FeatureTable(d["X"], labels, speakers, paths, [], key, table.feature_version), True
    ct = condition_table(table, copies, seed=seed, n_splits=n_splits, n_jobs=n_jobs)
    f.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        f,
        X=ct.X,
        paths=np.array(ct.paths),
        labels=np.array(ct.labels),
        speakers=np.array([str(s) for s in ct.speakers]),
    )
    return ct, False


def _family(path: str) -> str:
    return path.rsplit("#", 1)[1].split(":", 1)[1] if "#cond" in path else "clean"


def fit_models(args: tuple) -> dict[str, Any]:
    """The three pipelines of one model (global, speaker-adaptive, batch-normalised).

    ``args`` = ``(X, y, speakers, copies X or None, copies y, copies' speakers, copies' channel kinds)``.
    """
    from ser_model.speaker import apply_speaker_stats, speaker_statistics

    X, y, spk, Xc, yc, cspk, cfam = args
    _init()
    Xg = X if Xc is None else np.vstack([X, Xc])
    yg = y if yc is None else np.concatenate([y, yc])
    out = {"global": build_pipeline().fit(Xg, yg)}
    Zs, ys = speaker_normalise(X, spk, min_files=8)[0], y
    if Xc is not None:
        Zc, ad = apply_speaker_stats(Xc, cspk, speaker_statistics(X, spk, min_files=8))
        Zs, ys = np.vstack([Zs, Zc[ad]]), np.concatenate([y, yc[ad]])
    out["speaker-adaptive"] = build_pipeline().fit(Zs, ys)
    keys = ["clean"] * len(y) + (list(cfam) if Xc is not None else [])
    out["batch-normalised"] = build_pipeline().fit(speaker_normalise(Xg, keys, min_files=2)[0], yg)
    out["ood"] = fit_ood(Xg)  # the fold's out-of-domain detector, fitted on its training rows as cross_validate does
    return out


def predict(models: dict[str, Any], X: np.ndarray, spk: list[str], n_labels: int) -> dict[str, np.ndarray]:
    """Raw probabilities ``(n, n_labels)`` per mode; NaN rows where features failed."""
    ok = np.isfinite(X).all(axis=1)
    out = {}
    for mode in MODES:
        P = np.full((len(X), n_labels), np.nan)
        if ok.any():
            if mode == "global":
                Xin = X[ok]
            elif mode == "speaker-adaptive":
                Xin, _ = speaker_normalise(X[ok], [spk[i] for i in np.flatnonzero(ok)], min_files=2)
            else:
                Xin, _ = speaker_normalise(X[ok], ["batch"] * int(ok.sum()), min_files=2)
            m = models[mode]
            p = np.zeros((int(ok.sum()), n_labels))
            p[:, m.classes_] = m.predict_proba(Xin)
            P[ok] = p
        out[mode] = P
    return out


def summarise(P: np.ndarray, P_clean: np.ndarray, y: np.ndarray, T: float, labels: list[str]) -> dict[str, Any]:
    ok = np.isfinite(P).all(axis=1) & np.isfinite(P_clean).all(axis=1)
    Pc = apply_temperature(P[ok], T)
    pred = Pc.argmax(axis=1)
    wa = float(np.mean(pred == y[ok]))
    conf = float(Pc.max(axis=1).mean())
    top = Counter(pred.tolist()).most_common(1)[0]
    return {
        "n": int(ok.sum()),
        "wa": wa,
        "agreement": float(np.mean(pred == P_clean[ok].argmax(axis=1))),
        "mean_confidence": conf,
        "ece": float(expected_calibration_error(Pc, y[ok])),
        "conf_gap": abs(conf - wa),
        "top_label": labels[top[0]],
        "top_share": top[1] / int(ok.sum()),
    }


BUNDLE_MODES = {"global": MODE_GLOBAL, "speaker-adaptive": MODE_SPEAKER, "batch-normalised": MODE_BATCH}


def summarise_packaged(P: np.ndarray, y: np.ndarray, scores: np.ndarray, bundle: Any, mode: str) -> dict[str, Any]:
    """WA, mean confidence, |confidence - WA|, ECE and flag shares of calibrated probabilities ``P``
    (the packaged bundle's confidence path), ``scores`` the out-of-domain scores of the rows."""
    ok = np.isfinite(P).all(axis=1)
    P, yy, sc = P[ok], y[ok], scores[ok]
    wa = float(np.mean(P.argmax(axis=1) == yy))
    conf = float(P.max(axis=1).mean())
    low_thr = float(bundle.trust["low_confidence_threshold"].get(BUNDLE_MODES[mode], 0.0))
    return {
        "n": int(ok.sum()),
        "wa": wa,
        "mean_confidence": conf,
        "conf_gap": abs(conf - wa),
        "ece": float(expected_calibration_error(P, yy)),
        "out_of_domain_share": float(np.mean(sc > float(bundle.trust["ood"]["threshold"]))),
        "low_confidence_share": float(np.mean(P.max(axis=1) < low_thr)),
    }


def bundle_calibrate(P: np.ndarray, scores: np.ndarray, bundle: Any, mode: str) -> np.ndarray:
    """Raw probabilities ``P`` ``(n, k)`` through the bundle's temperature of ``mode`` at ``scores``
    (NaN rows stay NaN), as :meth:`ser_model.model.ModelBundle.predict_proba` does."""
    temp = DistanceTemperature.from_dict(bundle.trust["temperature"][BUNDLE_MODES[mode]])
    out = np.full_like(P, np.nan)
    ok = np.isfinite(P).all(axis=1) & np.isfinite(scores)
    if ok.any():
        out[ok] = apply_temperature(P[ok], temp.temperatures(scores[ok], int(ok.sum())))
    return out


def tess_packaged(bundle: Any, X: np.ndarray, speakers: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The packaged bundle's own calibrated probabilities of TESS rows per mode, with its scores."""
    ok = np.isfinite(X).all(axis=1)
    scores = np.full(len(X), np.nan)
    scores[ok] = bundle.ood_scores(X[ok])
    out = {}
    for mode in MODES:
        P = np.full((len(X), len(bundle.labels)), np.nan)
        if mode == "global":
            P[ok] = bundle.predict_proba(X[ok])
        else:
            keys = (
                [speakers[i] for i in np.flatnonzero(ok)] if mode == "speaker-adaptive" else ["batch"] * int(ok.sum())
            )
            P[ok] = bundle.predict_proba_speakers(X[ok], keys, mode=BUNDLE_MODES[mode], min_files=2)[0]
        out[mode] = (P, scores)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ravdess", default="../shared/data/ravdess")
    ap.add_argument("--tess", default="../shared/data/tess")
    ap.add_argument("--tess-every", type=int, default=7, help="use 1 TESS file in N (default 7: 400 files)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ser-batch/bench-conditions"))
    ap.add_argument("--feature-cache", default=os.path.expanduser("~/.cache/ser-batch/features"))
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--copies", type=int, default=3, help="degraded copies per training file (the packaged default: 3)")
    ap.add_argument("--out", default="benchmarks/results/conditions")
    ap.add_argument(
        "--bundle",
        default="ser_model/models/default.npz",
        help="packaged accurate model whose own confidence path (distance-aware temperature, "
        "out-of-domain detector, thresholds) is measured",
    )
    a = ap.parse_args()
    t0 = time.time()
    cache = Path(a.cache)
    labels = list(EMOTIONS)
    files = load_dataset([a.ravdess], "ravdess")
    table = extract_table(files, n_jobs=a.jobs, cache_dir=a.feature_cache, feature_version=ACCURATE)
    y = encode_labels(table.labels, labels)
    spk = [str(s) for s in table.speakers]
    n = len(y)
    print(f"RAVDESS: {n} files, accurate features in {time.time() - t0:.0f} s", flush=True)
    ct, _ = degraded_copies(table, a.copies, cache_dir=str(cache), n_jobs=a.jobs)
    cX, cpaths, clabels, cspk = ct.X, ct.paths, ct.labels, [str(s) for s in ct.speakers]
    cy = encode_labels(clabels, labels)
    cfam = [_family(p) for p in cpaths]
    print(f"training copies: {len(cy)} ({time.time() - t0:.0f} s)", flush=True)

    tess_files = load_dataset([a.tess], "tess")[:: a.tess_every]
    tess_all = [str(f.path) for f in load_dataset([a.tess], "tess")]
    ttable = extract_table(tess_files, n_jobs=a.jobs, cache_dir=a.feature_cache, feature_version=ACCURATE)
    ty = encode_labels(ttable.labels, labels)
    tspk = [str(s) for s in ttable.speakers]
    print(f"TESS: {len(ty)} files ({time.time() - t0:.0f} s)", flush=True)

    conds = [CLEAN, *TEST_CONDITIONS]
    Xr: dict[str, np.ndarray] = {"clean": table.X}
    Xt: dict[str, np.ndarray] = {"clean": ttable.X}
    for ci, c in enumerate(TEST_CONDITIONS):
        Xr[c.name] = condition_matrix(table.paths, ci, tess_all, cache, "ravdess", a.jobs)
        # TESS babble: voices of the other TESS files (either speaker; never the file itself)
        t_pool = [p for p in tess_all if p not in set(ttable.paths)]
        Xt[c.name] = condition_matrix(ttable.paths, ci, t_pool, cache, f"tess{a.tess_every}", a.jobs)
        print(f"  {c.name}: features ({time.time() - t0:.0f} s)", flush=True)

    splits = list(GroupKFold(5).split(table.X, y, groups=spk))
    jobs = []
    for tr, _te in splits:
        trs = set(np.asarray(spk)[tr])
        use = np.array([s in trs for s in cspk])
        for model in MODELS:
            d = N_FEATURES if model == "fast" else cX.shape[1]
            if model == "fast":
                jobs.append((table.X[tr, :d], y[tr], [spk[i] for i in tr], None, None, [], []))
            else:
                jobs.append(
                    (
                        table.X[tr],
                        y[tr],
                        [spk[i] for i in tr],
                        cX[use],
                        cy[use],
                        [s for s, u in zip(cspk, use, strict=True) if u],
                        [f for f, u in zip(cfam, use, strict=True) if u],
                    )
                )
    jobs.append((table.X[:, :N_FEATURES], y, spk, None, None, [], []))
    jobs.append((table.X, y, spk, cX, cy, cspk, cfam))
    with ProcessPoolExecutor(a.jobs, initializer=_init) as ex:
        fitted = list(ex.map(fit_models, jobs))
    print(f"models fitted ({time.time() - t0:.0f} s)", flush=True)

    # out-of-fold probabilities per model, mode, condition
    oof = {m: {mode: {c.name: np.full((n, len(labels)), np.nan) for c in conds} for mode in MODES} for m in MODELS}
    for k, (_tr, te) in enumerate(splits):
        for mi, model in enumerate(MODELS):
            models = fitted[2 * k + mi]
            d = N_FEATURES if model == "fast" else cX.shape[1]
            for c in conds:
                P = predict(models, Xr[c.name][te, :d], [spk[i] for i in te], len(labels))
                for mode in MODES:
                    oof[model][mode][c.name][te] = P[mode]
    temps = {m: {mode: fit_temperature(oof[m][mode]["clean"], y) for mode in MODES} for m in MODELS}
    res: dict[str, Any] = {"ravdess": {}, "tess": {}, "temperatures": temps}
    for m in MODELS:
        for mode in MODES:
            for c in conds:
                res["ravdess"].setdefault(c.name, {}).setdefault(m, {})[mode] = summarise(
                    oof[m][mode][c.name], oof[m][mode]["clean"], y, temps[m][mode], labels
                )
    full = {"fast": fitted[-2], "accurate": fitted[-1]}
    for m in MODELS:
        d = N_FEATURES if m == "fast" else cX.shape[1]
        Pclean = predict(full[m], Xt["clean"][:, :d], tspk, len(labels))
        for c in conds:
            P = predict(full[m], Xt[c.name][:, :d], tspk, len(labels))
            for mode in MODES:
                res["tess"].setdefault(c.name, {}).setdefault(m, {})[mode] = summarise(
                    P[mode], Pclean[mode], ty, temps[m][mode], labels
                )
    # the packaged model's own confidence path: its temperature model (a function of the out-of-domain
    # score) on the fold models' raw probabilities, scored by each fold's detector; TESS by the bundle itself
    bundle = load_bundle(a.bundle)
    pk: dict[str, Any] = {"bundle": a.bundle, "trust": bundle.trust["temperature"], "ravdess": {}, "tess": {}}
    for c in conds:
        sc = np.full(n, np.nan)
        for k, (_tr, te) in enumerate(splits):
            Xc = Xr[c.name][te]
            ok = np.isfinite(Xc).all(axis=1)
            sc[te[ok]] = fitted[2 * k + 1]["ood"].score(Xc[ok])
        for mode in MODES:
            P = bundle_calibrate(oof["accurate"][mode][c.name], sc, bundle, mode)
            pk["ravdess"].setdefault(c.name, {})[mode] = summarise_packaged(P, y, sc, bundle, mode)
        for mode, (P, tsc) in tess_packaged(bundle, Xt[c.name], tspk).items():
            pk["tess"].setdefault(c.name, {})[mode] = summarise_packaged(P, ty, tsc, bundle, mode)
    res["packaged"] = pk
    res["conditions"] = {c.name: c.describe() for c in conds}
    res["seconds"] = time.time() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(res, indent=1) + "\n")
    Path(str(out) + ".md").write_text(render(res, a) + "\n")
    print(f"wrote {out}.md ({res['seconds']:.0f} s)")


def render(res: dict[str, Any], a: argparse.Namespace) -> str:
    lines = [
        "# Conditions benchmark: labels under the channels users record through",
        "",
        "Made by `python benchmarks/conditions.py` (protocol in its docstring): RAVDESS actors 1-20 by "
        "GroupKFold (5 folds, each fold's 4 actors unseen), every file clean and through 22 conditions "
        "whose noise, babble voices (TESS) and rooms were not in training; TESS (1 file in "
        f"{a.tess_every}) labelled by models trained on all 20 actors. *fast* = hand-crafted features, "
        "clean training (the packaged fast model's recipe); *accurate* = hand-crafted + Whisper tiny.en "
        f"encoder, multi-condition training ({a.copies} degraded copies per file; the packaged default's recipe). "
        "Confidence is temperature-scaled with one temperature per model and mode fitted on clean "
        "out-of-fold predictions only. `agree` = agreement with the label of the clean file in the same "
        f"mode. {res['seconds'] / 60:.0f} min on 2 cores.",
        "",
    ]
    for corpus, title in (("ravdess", "Held-out RAVDESS actors"), ("tess", "TESS (another corpus)")):
        for mode in MODES:
            lines += [
                f"## {title}, {mode}",
                "",
                "| condition | fast WA | fast agree | fast conf | accurate WA | accurate agree | accurate conf "
                "| accurate ECE | accurate top label |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for cname, by_model in res[corpus].items():
                f, acc = by_model["fast"][mode], by_model["accurate"][mode]
                lines.append(
                    f"| {cname} | {f['wa']:.2f} | {f['agreement']:.2f} | {f['mean_confidence']:.2f} "
                    f"| **{acc['wa']:.2f}** | {acc['agreement']:.2f} | {acc['mean_confidence']:.2f} "
                    f"| {acc['ece']:.3f} | {acc['top_label']} {acc['top_share']:.0%} |"
                )
            lines.append("")
    pk = res["packaged"]
    lines += [
        "## The packaged model's own confidence",
        "",
        f"`{pk['bundle']}` as the worker applies it: its distance-aware temperature of each mode (a function "
        "of the out-of-domain score) and its out-of-domain and low-confidence thresholds. Held-out RAVDESS "
        "actors: the fold models' raw probabilities above, each file scored by its fold's detector (fitted "
        "on the fold's clean and degraded training rows, as in `ser-batch train`); the bundle's temperature "
        "was fitted on out-of-fold predictions of these speakers through the *training* channels, not these "
        "test conditions. TESS: the bundle itself. `gap` = |mean confidence - WA| (target <= 0.10); `OOD` = "
        "share flagged out of domain; `low` = share flagged low-confidence.",
        "",
    ]
    for corpus, title in (("ravdess", "Held-out RAVDESS actors"), ("tess", "TESS (another corpus)")):
        lines += [
            f"### {title}",
            "",
            "| condition | " + " | ".join(f"{m} WA | conf | gap | OOD | low" for m in MODES) + " |",
            "|---|" + "---|---|---|---|---|" * len(MODES),
        ]
        for cname, by_mode in pk[corpus].items():
            cells = []
            for m in MODES:
                r = by_mode[m]
                gap = f"{r['conf_gap']:.2f}" if r["conf_gap"] <= 0.10 else f"**{r['conf_gap']:.2f}**"
                cells.append(
                    f"{r['wa']:.2f} | {r['mean_confidence']:.2f} | {gap} | {r['out_of_domain_share']:.0%} "
                    f"| {r['low_confidence_share']:.0%}"
                )
            lines.append(f"| {cname} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
