"""Robustness benchmark (issue 11): do labels depend on the recording, and does confidence mean what it says?

Usage (from the repository root; features are cached by content, so a second run only re-trains)::

    python benchmarks/robustness.py --ravdess ../shared/data/ravdess --tess ../shared/data/tess \\
        --cache /tmp/sercache

Writes ``benchmarks/results/robustness.md`` and ``robustness.json``. One run measures:

1. **Gain**: label agreement of real RAVDESS files with copies of themselves at another level
   (-20, -10 dB; +6, +10 dB through a peak limiter; +10 dB hard-clipped), every copy requantised to
   16 bits as a recording at that level would be. Each file is labelled by the model of the
   grouped-CV fold in which its speaker was held out (speaker-independent).
2. **Calibration** on out-of-fold predictions (GroupKFold by actor): ECE (15 bins) and mean confidence
   against WA, raw softmax and calibrated, for the global and the speaker-adaptive pipeline; the
   low-confidence threshold and the WA of the accepted files.
3. **Cross-corpus**: a model trained on all of RAVDESS (as the default model) labels all of TESS, and
   one trained on TESS labels RAVDESS (the six emotions both share; TESS has no calm): accuracy, the
   share of the most frequent label, mean confidence raw and calibrated, the out-of-domain share,
   and the batch warnings the whole corpus as one batch would get.
4. **Out-of-domain rate** of in-domain out-of-fold files (RAVDESS speakers the fold never heard).
5. **Accuracy**: grouped-CV WA / UAR / macro-F1, global and speaker-adaptive, against the ``ser-feat-2``
   default model (0.557 / 0.665).
6. **Multi-corpus default?** RAVDESS + TESS against RAVDESS alone: RAVDESS grouped CV (TESS always in
   training) and each TESS speaker held out (cross-speaker, same corpus as the other TESS speaker).

Corpora: RAVDESS (Livingstone & Russo 2018, CC BY-NC-SA 4.0), TESS (Pichora-Fuller & Dupuis 2020,
CC BY-NC-ND 4.0); see ../shared/README.md.
"""

from __future__ import annotations

import argparse
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
from ser_model.features import N_FEATURES, extract_features  # noqa: E402
from ser_model.labels import EMOTIONS  # noqa: E402
from ser_model.metrics import classification_metrics  # noqa: E402
from ser_model.training import FeatureTable, cross_validate, encode_labels, extract_table, train_bundle  # noqa: E402
from ser_model.trust import batch_warnings, expected_calibration_error  # noqa: E402

GAINS: tuple[tuple[str, float, str], ...] = (
    ("-20 dB", -20.0, "none"),
    ("-10 dB", -10.0, "none"),
    ("+6 dB, peak-limited", 6.0, "limit"),
    ("+10 dB, peak-limited", 10.0, "limit"),
    ("+10 dB, hard-clipped", 10.0, "clip"),
)
LIMIT_CEILING = 10 ** (-1 / 20)  # -1 dBFS
BASELINE = {"wa_global": 0.557, "wa_speaker": 0.665, "gain_flip": {"-20 dB": 0.67, "-10 dB": 0.38, "+12 dB": 0.52}}


def peak_limit(x: np.ndarray, ceiling: float = LIMIT_CEILING) -> np.ndarray:
    """A look-ahead brick-wall limiter: gain reduction from a 10-ms max-envelope, smoothed, then a safety clip."""
    import scipy.ndimage

    w = 161  # 10 ms at 16 kHz
    env = scipy.ndimage.maximum_filter1d(np.abs(x), w)
    g = np.minimum(1.0, ceiling / np.maximum(env, 1e-9))
    g = scipy.ndimage.uniform_filter1d(scipy.ndimage.minimum_filter1d(g, w), w)
    return np.clip(x * g, -ceiling, ceiling)


def transform(y: np.ndarray, gain_db: float, mode: str) -> np.ndarray:
    """``y`` at ``gain_db``, limited or clipped as ``mode`` says, requantised to 16-bit PCM."""
    x = y.astype(np.float64) * 10 ** (gain_db / 20)
    if mode == "limit":
        x = peak_limit(x)
    x = np.clip(x, -1.0, 32767 / 32768)
    return (np.round(x * 32768) / 32768).astype(np.float32)


def _gain_features(args: tuple[str, float, str]) -> np.ndarray:
    path, gain_db, mode = args
    try:
        y, _ = load_audio(path)
        return extract_features(transform(y, gain_db, mode))
    except AudioError:
        return np.full(N_FEATURES, np.nan, np.float32)


def gain_table(paths: list[str], gain_db: float, mode: str, cache: Path | None, jobs: int) -> np.ndarray:
    """Features of every file at one gain ``(n, N_FEATURES)`` (NaN rows for files that fail), cached."""
    from ser_model.features import FEATURE_VERSION

    f = cache / FEATURE_VERSION / f"gain_{gain_db:+.0f}_{mode}_{len(paths)}.npy" if cache else None
    if f is not None and f.exists():
        return np.load(f)
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        X = np.vstack(list(ex.map(_gain_features, [(p, gain_db, mode) for p in paths], chunksize=16)))
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, X)
    return X


def concat(a: FeatureTable, b: FeatureTable) -> FeatureTable:
    return FeatureTable(
        np.vstack([a.X, b.X]), a.labels + b.labels, a.speakers + b.speakers, a.paths + b.paths, [], a.fingerprint
    )


def corpus_eval(bundle: Any, test: FeatureTable) -> dict[str, Any]:
    """A bundle on another corpus: accuracy, label collapse, confidence raw/calibrated, OOD share, warnings."""
    known = np.array([lab in bundle.labels for lab in test.labels])
    t = test.subset(known)
    raw = bundle.predict_proba(t.X, calibrated=False)
    cal = bundle.predict_proba(t.X)
    flags = bundle.flags(t.X, cal)
    y = encode_labels(t.labels, bundle.labels)
    pred = cal.argmax(axis=1)
    counts = Counter(np.asarray(bundle.labels)[pred])
    top, n_top = counts.most_common(1)[0]
    rep = classification_metrics(t.labels, list(np.asarray(bundle.labels)[pred]), bundle.labels)
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(pred == y)),
        "uar": rep["uar"],
        "top_label": top,
        "top_label_share": n_top / len(y),
        "mean_conf_raw": float(raw.max(axis=1).mean()),
        "mean_conf_cal": float(cal.max(axis=1).mean()),
        "ece_raw": expected_calibration_error(raw, y),
        "ece_cal": expected_calibration_error(cal, y),
        "ood_share": float(np.mean(flags.out_of_domain)),
        "low_conf_share": float(np.mean(flags.low_confidence)),
        "accuracy_confident": float(np.mean((pred == y)[~flags.low_confidence]))
        if (~flags.low_confidence).any()
        else None,
        "warnings": [
            w["code"]
            for w in batch_warnings(
                n_labelled=len(y),
                n_out_of_domain=int(np.sum(flags.out_of_domain)),
                label_counts=dict(counts),
                train_prior=bundle.trust["train_prior"],
            )
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ravdess", default="../shared/data/ravdess")
    ap.add_argument("--tess", default="../shared/data/tess")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ser-batch/features"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--skip-multi", action="store_true", help="skip the multi-corpus comparison (section 6)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    t0 = time.time()
    cache = Path(args.cache)
    out: dict[str, Any] = {}
    labels = list(EMOTIONS)

    rav = extract_table(load_dataset([args.ravdess], "ravdess"), n_jobs=args.jobs, cache_dir=cache)
    tess = extract_table(load_dataset([args.tess], "tess"), n_jobs=args.jobs, cache_dir=cache)
    print(f"features: RAVDESS {len(rav.labels)}, TESS {len(tess.labels)} ({time.time() - t0:.0f} s)", flush=True)
    splits = list(GroupKFold(n_splits=5).split(rav.X, rav.labels, groups=np.asarray(rav.speakers)))

    # 5. accuracy, and the out-of-fold predictions everything else is fitted on
    cv = cross_validate(rav, labels=labels, splits=splits)
    cv_sa = cross_validate(rav, labels=labels, splits=splits, speaker_adaptive=True)
    bundle = train_bundle(rav, labels=labels, cv_report=cv, speaker_cv_report=cv_sa, name="ravdess8")
    trust = bundle.meta["metrics"]["trust"]
    out["accuracy"] = {
        "global": {k: cv[k] for k in ("wa", "uar", "macro_f1")},
        "speaker_adaptive": {k: cv_sa[k] for k in ("wa", "uar", "macro_f1")},
        "baseline_ser_feat_2": BASELINE,
    }
    out["calibration"] = {
        m: {k: v for k, v in c.items() if not k.startswith("reliability")} for m, c in trust["calibration"].items()
    }
    out["ood_in_domain"] = trust["ood"]
    print(f"CV done ({time.time() - t0:.0f} s): WA {cv['wa']:.3f} / {cv_sa['wa']:.3f}", flush=True)

    # 1. gain: each file labelled by the fold model that never heard its speaker
    from sklearn.base import clone

    from ser_model.model import build_pipeline

    y_idx = encode_labels(rav.labels, labels)
    fold_models = [clone(build_pipeline()).fit(rav.X[tr], y_idx[tr]) for tr, _ in splits]
    base_pred = np.empty(len(y_idx), int)
    for m, (_, te) in zip(fold_models, splits, strict=True):
        base_pred[te] = m.predict(rav.X[te])
    gains = {}
    for name, g, mode in GAINS:
        Xg = gain_table(rav.paths, g, mode, cache, args.jobs)
        ok = ~np.isnan(Xg).any(axis=1)
        pred = np.full(len(y_idx), -1)
        for m, (_, te) in zip(fold_models, splits, strict=True):
            t = te[ok[te]]
            pred[t] = m.predict(Xg[t])
        gains[name] = {
            "n": int(ok.sum()),
            "agreement": float(np.mean(pred[ok] == base_pred[ok])),
            "accuracy": float(np.mean(pred[ok] == y_idx[ok])),
        }
        print(f"gain {name}: agreement {gains[name]['agreement']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    out["gain"] = {"n": len(y_idx), "accuracy_original": float(np.mean(base_pred == y_idx)), "transforms": gains}

    # 3. cross-corpus
    out["ravdess_to_tess"] = corpus_eval(bundle, tess)
    tess_labels = [e for e in EMOTIONS if e in set(tess.labels)]
    tcv = cross_validate(tess, labels=tess_labels, n_splits=2)
    tbundle = train_bundle(tess, labels=tess_labels, cv_report=tcv, name="tess7", speaker_adaptive=False)
    out["tess_to_ravdess"] = corpus_eval(tbundle, rav)
    # the same corpus-level rule on in-domain out-of-fold predictions (RAVDESS as one batch)
    n_ood = int(round(trust["ood"]["oof_out_of_domain_share"] * len(y_idx)))
    out["ravdess_oof_warnings"] = [
        w["code"]
        for w in batch_warnings(
            n_labelled=len(y_idx),
            n_out_of_domain=n_ood,
            label_counts=dict(Counter(p for p in cv["predictions"] if p is not None)),
            train_prior=bundle.trust["train_prior"],
        )
    ]
    print(f"cross-corpus done ({time.time() - t0:.0f} s)", flush=True)

    # 6. multi-corpus
    if not args.skip_multi:
        both = concat(rav, tess)
        pred = np.empty(len(rav.labels), dtype=object)
        y_both = encode_labels(both.labels, labels)
        n_r = len(rav.labels)
        for tr, te in splits:
            rows = np.concatenate([tr, np.arange(n_r, len(both.labels))])
            m = clone(build_pipeline()).fit(both.X[rows], y_both[rows])
            pred[te] = np.asarray(labels, dtype=object)[m.predict(rav.X[te])]
        multi = {"ravdess_grouped_wa_with_tess": float(np.mean(pred == np.asarray(rav.labels)))}
        for held in ("OAF", "YAF"):
            k = np.array([not str(s).endswith(held) for s in tess.speakers])
            tr_r = clone(build_pipeline()).fit(rav.X, y_idx)
            tr_b = clone(build_pipeline()).fit(
                np.vstack([rav.X, tess.X[k]]),
                np.concatenate([y_idx, encode_labels(list(np.asarray(tess.labels)[k]), labels)]),
            )
            yt = encode_labels(list(np.asarray(tess.labels)[~k]), labels)
            multi[f"tess_{held}_ravdess_only"] = float(np.mean(tr_r.predict(tess.X[~k]) == yt))
            multi[f"tess_{held}_ravdess_plus_other_tess"] = float(np.mean(tr_b.predict(tess.X[~k]) == yt))
        out["multi_corpus"] = multi
    out["seconds"] = time.time() - t0
    res = Path(args.out)
    res.mkdir(parents=True, exist_ok=True)
    (res / "robustness.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    write_markdown(res / "robustness.md", out)
    print(f"wrote {res / 'robustness.md'} ({out['seconds']:.0f} s)")
    return 0


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_markdown(path: Path, o: dict[str, Any]) -> None:
    a = o["accuracy"]
    lines = [
        "# Robustness: gain, calibration, out-of-domain, cross-corpus",
        "",
        "Made by `python benchmarks/robustness.py` (features `ser-feat-3`: level-normalised, fixed noise floor;",
        "see `ser_model/level.py`, `ser_model/features.py`, `ser_model/trust.py`). Speaker-independent throughout:",
        f"RAVDESS actors 1-20, GroupKFold by actor (5 folds). One run, {o['seconds'] / 60:.0f} min on 2 cores.",
        "",
        "## Accuracy (8 emotions, grouped CV)",
        "",
        "| | WA | UAR | macro-F1 | ser-feat-2 default, WA |",
        "|---|---|---|---|---|",
        f"| global | {_f(a['global']['wa'])} | {_f(a['global']['uar'])} | {_f(a['global']['macro_f1'])} | 0.557 |",
        f"| speaker-adaptive | {_f(a['speaker_adaptive']['wa'])} | {_f(a['speaker_adaptive']['uar'])} | "
        f"{_f(a['speaker_adaptive']['macro_f1'])} | 0.665 |",
        "",
        "## Gain: label agreement with the original recording",
        "",
        "Each copy is requantised to 16 bits; each file is labelled by the fold model that never heard its speaker.",
        "The ser-feat-2 default model flipped 38 % of labels at -10 dB, 67 % at -20 dB, 52 % at +12 dB (issue 11).",
        "",
        "| transform | files | agreement | accuracy |",
        "|---|---|---|---|",
        f"| original | {o['gain']['n']} | 1.000 | {_f(o['gain']['accuracy_original'])} |",
    ]
    for name, g in o["gain"]["transforms"].items():
        lines.append(f"| {name} | {g['n']} | {_f(g['agreement'])} | {_f(g['accuracy'])} |")
    lines += [
        "",
        "## Calibration (out-of-fold, speaker-independent)",
        "",
        "| pipeline | ECE raw | ECE calibrated | ECE plain temperature | mean conf. raw | mean conf. calibrated | WA | "
        "low-conf. threshold | share flagged low-conf. | WA of the rest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, c in o["calibration"].items():
        lines.append(
            f"| {mode} | {_f(c['ece_before'])} | {_f(c['ece_after'])} | {_f(c['ece_plain_temperature'])} | "
            f"{_f(c['mean_confidence_before'])} | {_f(c['mean_confidence_after'])} | {_f(c['wa'])} | "
            f"{_f(c['low_confidence_threshold'])} | {_f(c['low_confidence_share'])} | {_f(c['wa_confident'])} |"
        )
    ood = o["ood_in_domain"]
    lines += [
        "",
        f"Temperature model: {o['calibration']['global']['method']}.",
        "",
        "## Out-of-domain",
        "",
        f"Detector: {ood['method']}, {ood['n_components']} components; threshold = {ood['percentile']:.0f}th percentile "
        f"of the out-of-fold scores = {ood['threshold']:.3f}. RAVDESS out-of-fold files flagged: "
        f"{ood['oof_out_of_domain_share']:.1%}.",
        "",
        "## Cross-corpus",
        "",
        "| | files | accuracy | UAR | most frequent label (share) | mean conf. raw | mean conf. calibrated | "
        "ECE calibrated | out of domain | low confidence | accuracy of the confident | batch warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (
        ("RAVDESS model -> all of TESS", "ravdess_to_tess"),
        ("TESS model -> RAVDESS (6 shared emotions + neutral)", "tess_to_ravdess"),
    ):
        c = o[key]
        lines.append(
            f"| {name} | {c['n']} | {_f(c['accuracy'])} | {_f(c['uar'])} | {c['top_label']} ({c['top_label_share']:.1%}) | "
            f"{_f(c['mean_conf_raw'])} | {_f(c['mean_conf_cal'])} | {_f(c['ece_cal'])} | {c['ood_share']:.1%} | "
            f"{c['low_conf_share']:.1%} | {_f(c['accuracy_confident'])} | {', '.join(c['warnings']) or 'none'} |"
        )
    lines += [
        "",
        f"RAVDESS out-of-fold predictions taken as one batch get the warnings: {', '.join(o['ravdess_oof_warnings']) or 'none'}.",
    ]
    if "multi_corpus" in o:
        m = o["multi_corpus"]
        lines += [
            "",
            "## Multi-corpus default? RAVDESS + TESS against RAVDESS alone",
            "",
            "| measure | RAVDESS only | RAVDESS + TESS |",
            "|---|---|---|",
            f"| RAVDESS grouped-CV WA (TESS always in training) | {_f(a['global']['wa'])} | {_f(m['ravdess_grouped_wa_with_tess'])} |",
            f"| TESS speaker OAF held out | {_f(m['tess_OAF_ravdess_only'])} | {_f(m['tess_OAF_ravdess_plus_other_tess'])} (with YAF) |",
            f"| TESS speaker YAF held out | {_f(m['tess_YAF_ravdess_only'])} | {_f(m['tess_YAF_ravdess_plus_other_tess'])} (with OAF) |",
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
