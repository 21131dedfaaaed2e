"""How honest is the confidence on a corpus the model never heard? Calibration variants, leave-one-corpus-out.

Usage (from the repository root; features and degraded copies cached as for ``corpora.py``)::

    python benchmarks/calibration_loco.py            # about 20 minutes on 2 cores
    python benchmarks/calibration_loco.py --render   # the tables again from the saved JSON

Writes ``benchmarks/results/calibration_loco.md`` and ``calibration_loco.json``.

Protocol (the leave-one-corpus-out protocol of ``corpora.py``): for each shared corpus C, the packaged
default's recipe (hand-crafted + Whisper tiny.en features, 2 degraded copies with LibriSpeech babble,
corpora weighted by their speakers) is trained on the other two corpora, with its grouped
cross-validation (out-of-fold files and copies of the training speakers, *OOF*) and the predictions of
each training corpus by a model of the other (*held-out corpora*, :func:`ser_model.training.held_out_corpus_predictions`).
Each calibration variant is fitted on those, then applied to C labelled each file alone: the mean
calibrated confidence against the WA on C (the gap; the target of the issue "Many voices, many
languages" is |gap| <= 0.10), and the mean confidence on the OOF files. Variants:

- *OOF + held-out, distance*: distance-aware temperature (:class:`ser_model.trust.DistanceTemperature`)
  on both (what bundles did before this benchmark);
- *held-out only, distance* / *held-out only, plain*: on the held-out corpora alone, with and without the
  growth with the out-of-domain score (*plain*: one temperature; what multi-corpus bundles do now);
- *OOF only, distance*: on the OOF files alone (a single-corpus bundle without copies).

With two training corpora, each held-out corpus is predicted by a model of *one* corpus, weaker on a new
corpus than the two-corpus model is: the held-out variants are pessimistic here. The packaged model
(three corpora) is calibrated on corpora predicted by two-corpus models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from worker.settings import get_settings, prepare_process_env  # noqa: E402

prepare_process_env()

VARIANTS = ("OOF + held-out, distance", "held-out only, distance", "held-out only, plain", "OOF only, distance")


def cell(tables: dict[str, Any], left: str, jobs: int) -> dict[str, Any]:
    """Train on every corpus but ``left``; every variant's confidence on ``left`` and on the OOF files."""
    import corpora as C

    from ser_model.training import cross_validate, encode_labels, held_out_corpus_predictions, train_bundle
    from ser_model.trust import DistanceTemperature, apply_temperature, fit_distance_temperature, fit_temperature

    d = C.packaged_recipe_set(tables, left)
    clean, copies, labels, w, params = d["clean"], d["copies"], d["labels"], d["weights"], d["params"]
    t0 = time.time()
    cv = cross_validate(clean, labels=labels, params=params, sample_weight=w, augmented=copies, n_jobs=jobs)
    b = train_bundle(clean, labels=labels, cv_report=cv, params=params, sample_weight=w, augmented=copies,
                     batch_normalised=False, speaker_adaptive=False, by_corpus=True, held_out_calibration=False,
                     n_jobs=jobs)  # fmt: skip
    held = held_out_corpus_predictions(clean, copies, labels=labels, params=params, sample_weight=w, n_jobs=jobs)
    Xt, yt = d["Xt"], encode_labels(d["truth"], labels)
    raw, sc = b.predict_proba(Xt, calibrated=False), b.ood_scores(Xt)
    wa = float(np.mean(raw.argmax(1) == yt))
    oof_p = np.vstack([cv["proba"], cv["aug_proba"]])
    oof_s = np.concatenate([cv["ood_scores"], cv["aug_ood_scores"]])
    oof_y = np.concatenate([encode_labels(clean.labels, labels), encode_labels(copies.labels, labels)])
    ok = ~np.isnan(oof_p).any(1) & ~np.isnan(oof_s)
    oof_p, oof_s, oof_y = oof_p[ok], oof_s[ok], oof_y[ok]
    hp, hs, hy = held["proba"], held["ood_scores"], held["y"]
    temps = {
        VARIANTS[0]: fit_distance_temperature(np.vstack([oof_p, hp]), np.concatenate([oof_y, hy]), np.concatenate([oof_s, hs])),
        VARIANTS[1]: fit_distance_temperature(hp, hy, hs),
        VARIANTS[2]: DistanceTemperature(t0=fit_temperature(hp, hy)),
        VARIANTS[3]: fit_distance_temperature(oof_p, oof_y, oof_s),
    }  # fmt: skip
    res: dict[str, Any] = {
        "wa": wa,
        "n": len(yt),
        "held_out_wa": float(np.mean(hp.argmax(1) == hy)),
        "oof_wa": float(np.mean(oof_p.argmax(1) == oof_y)),
        "fit_s": time.time() - t0,
    }
    for name, T in temps.items():
        conf = float(apply_temperature(raw, T.temperatures(sc, len(yt))).max(1).mean())
        conf_oof = float(apply_temperature(oof_p, T.temperatures(oof_s, len(oof_y))).max(1).mean())
        res[name] = {
            "conf": round(conf, 3),
            "gap": round(conf - wa, 3),
            "oof_conf": round(conf_oof, 3),
            "T": T.to_dict(),
        }
    return res


def render(out: dict[str, Any], measured: str) -> str:
    lines = [
        "# Calibration on a corpus the model never heard (leave-one-corpus-out)",
        "",
        f"`python benchmarks/calibration_loco.py` (protocol in its docstring), measured {measured}. Gap: mean calibrated",
        "confidence minus WA on the left-out corpus, each file alone (target |gap| <= 0.10); OOF conf.: mean calibrated",
        "confidence on the out-of-fold files of the training corpora (their WA beside it).",
        "",
        "| variant | " + " | ".join(f"{c} left out: gap (OOF conf.)" for c in out) + " | mean abs. gap |",
        "|---" * (len(out) + 2) + "|",
    ]
    for v in VARIANTS:
        cells = [f"{out[c][v]['gap']:+.3f} ({out[c][v]['oof_conf']:.2f})" for c in out]
        mean = np.mean([abs(out[c][v]["gap"]) for c in out])
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {mean:.3f} |")
    lines += [
        "| WA on the left-out corpus (OOF WA; held-out corpora WA) | "
        + " | ".join(f"{out[c]['wa']:.3f} ({out[c]['oof_wa']:.2f}; {out[c]['held_out_wa']:.2f})" for c in out)
        + " | |",
        "",
        "Bundles trained on several corpora now use *held-out only, plain*: never over-confident here by more than",
        "0.07, and under-confident where it errs (TESS, whose held-out corpora were each predicted by a one-corpus",
        "model). No variant keeps all three corpora within 0.10: the out-of-domain score does not say how well a",
        "new corpus is labelled (TESS is flagged out of domain on every file and is the best labelled of the three).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data", type=Path)
    ap.add_argument("--jobs", "-j", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/calibration_loco")
    ap.add_argument("--render", action="store_true", help="only render the saved JSON again")
    a = ap.parse_args()
    js = Path(a.out + ".json")
    if a.render:
        saved = json.loads(js.read_text())
    else:
        import corpora as C

        tables = C.load_tables(a.data, 2, a.jobs, get_settings().feature_cache_dir)
        saved = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cells": {}}
        for c in C.CORPORA:
            saved["cells"][c] = cell(tables, c, a.jobs)
            print(c, json.dumps(saved["cells"][c]), flush=True)
        js.write_text(json.dumps(saved, indent=1) + "\n")
    Path(a.out + ".md").write_text(render(saved["cells"], saved["measured"]))


if __name__ == "__main__":
    main()
