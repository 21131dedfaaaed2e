"""Babble and other channels on unseen RAVDESS actors, for the packaged three-corpus recipe.

``benchmarks/conditions.py`` measures the RAVDESS-only recipe under 22 channels; this measures the
packaged default's recipe (RAVDESS + TESS + nEMO, two degraded copies a file with LibriSpeech babble,
corpora weighted by their speakers, as ``ser-batch train`` trains it) on RAVDESS actors it never heard,
each file alone, clean and through each of :data:`ser_model.degrade.TEST_CONDITIONS` (17 min on 2 cores with
an empty test-channel cache, about a minute once it is filled).

Usage (from the repository root; features, copies and test channels are cached)::

    python benchmarks/conditions_packaged.py     # every test condition
    python benchmarks/conditions_packaged.py --babble-voices tess --conditions babble-10dB,babble-5dB --out benchmarks/results/conditions_packaged_tess

Writes ``benchmarks/results/conditions_packaged.md`` and ``.json``.

Protocol:

- 5-fold GroupKFold by actor over RAVDESS actors 1-20. Each fold trains the recipe's global MLP on the
  fold's 16 training actors and all of TESS and nEMO, with their cached degraded copies
  (:func:`benchmarks.corpora.load_tables`: ``--copies`` a file, 2 by default as the packaged recipe, babble
  from the LibriSpeech voices), with the
  packaged weights (``--balance speakers``) and epoch budget (:func:`ser_model.training.training_params`).
- The fold's 4 unseen actors are labelled clean and through each test condition. **Babble voices are
  the fold's other unseen actors** (5 files of the 3 actors that are not the file's speaker): voices in
  no training set of the fold, neither as targets nor as babble. ``conditions.py`` drew its test babble
  from TESS, which this recipe trains on. Noise, rooms and codecs are drawn as in ``conditions.py``.
- Reported per condition: WA and UAR over the 8 labels, agreement with the clean file's label, the
  share of the most frequent label, and the raw (uncalibrated) mean top probability.
- Arousal and valence: each fold also fits the recipe's dimension head
  (:func:`ser_model.training.fit_dimension_head`, on the same rows and weights as ``train`` does); a
  file's dimensions are the mean of the head's and the mapped category probabilities, as the packaged
  default gives them (:meth:`ser_model.model.ModelBundle.dimensions`). Per condition the binary UAR of
  each dimension against the true category's side of 0.5, the share of files on the same side as the
  clean file, and the mean absolute change from the clean file's value.

Corpora: RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0), nEMO (CC BY-NC-SA 4.0), LibriSpeech
(CC BY 4.0); see ../shared/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conditions import condition_matrix  # noqa: E402
from corpora import CORPORA, load_tables, recipe_training_set  # noqa: E402

from ser_model.degrade import TEST_CONDITIONS  # noqa: E402
from ser_model.dimensions import mapped_dimensions  # noqa: E402
from ser_model.training import class_proba, fit_dimension_head, fit_pipelines, parallel_calls  # noqa: E402
from worker.settings import get_settings  # noqa: E402

DEFAULT_CONDITIONS = ",".join(c.name for c in TEST_CONDITIONS)


def fold_training_set(tables: dict[str, tuple[Any, Any]], train_actors: set[str]) -> dict[str, Any]:
    """The packaged recipe's rows for one fold (:func:`corpora.recipe_training_set`): RAVDESS ``train_actors``
    and all other corpora, clean and copies.

    Returns:
        ``X`` ``(n, d)``, ``y`` label indices ``(n,)``, ``w`` weights ``(n,)``, ``labels``, ``params``.
    """
    from ser_model.training import MODE_GLOBAL, pipeline_rows

    clean, copies = tables["ravdess"]
    fold_tables = {
        **tables,
        "ravdess": (
            clean.subset(np.asarray([str(s) in train_actors for s in clean.speakers])),
            copies.subset(np.asarray([str(s) in train_actors for s in copies.speakers])),
        ),
    }
    d = recipe_training_set(fold_tables, list(CORPORA))
    X, y, w = pipeline_rows(d["clean"], d["copies"], d["labels"], d["weights"], speaker_adaptive=False)[0][MODE_GLOBAL]
    return {"X": X, "y": y, "w": w, "labels": d["labels"], "params": d["params"]}


def score_dimensions(truth: list[str], dims: np.ndarray, clean_dims: np.ndarray) -> dict[str, float]:
    """Binary UAR of arousal and valence against the true categories' sides of 0.5, the share of rows on
    the clean row's side, and the mean absolute change from the clean values (rows with values only)."""
    from ser_model.dimensions import binary, positions, uar_binary

    ok = np.isfinite(dims).all(axis=1) & np.isfinite(clean_dims).all(axis=1)
    side = binary(positions([t for t, k in zip(truth, ok, strict=True) if k]))
    out: dict[str, float] = {}
    for j, name in enumerate(("arousal", "valence")):
        d, c = dims[ok, j], clean_dims[ok, j]
        out[f"{name}_uar"] = uar_binary(side[:, j], binary(d))
        out[f"{name}_agree"] = float(np.mean(binary(d) == binary(c)))
        out[f"{name}_change"] = float(np.mean(np.abs(d - c)))
    return out


def score(truth: list[str], pred: list[str], clean_pred: list[str], top_p: np.ndarray) -> dict[str, Any]:
    """WA, UAR over the labels present, agreement with the clean labels, top-label share, mean top probability."""
    t, p = np.asarray(truth), np.asarray(pred)
    recalls = [float(np.mean(p[t == lab] == lab)) for lab in sorted(set(truth))]
    top = Counter(pred).most_common(1)[0]
    return {
        "n": len(truth),
        "wa": float(np.mean(t == p)),
        "uar": float(np.mean(recalls)),
        "agree": float(np.mean(p == np.asarray(clean_pred))),
        "top_label": top[0],
        "top_share": top[1] / len(pred),
        "raw_confidence": float(np.mean(top_p)),
    }


def main() -> None:
    from sklearn.model_selection import GroupKFold

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data", type=Path)
    ap.add_argument("--conditions", default=DEFAULT_CONDITIONS, help="names in ser_model.degrade.TEST_CONDITIONS")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ser-batch/bench-conditions"))
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--copies", type=int, default=2, help="degraded copies a training file (the packaged default: 2)")
    ap.add_argument(
        "--babble-voices",
        choices=("unseen-actors", "tess"),
        default="unseen-actors",
        help="test babble from the fold's other unseen actors (default) or from TESS voices, as conditions.py "
        "draws it (TESS is a training corpus of this recipe)",
    )
    ap.add_argument("--out", default="benchmarks/results/conditions_packaged")
    a = ap.parse_args()
    names = [c for c in a.conditions.split(",") if c]
    index = {c.name: i for i, c in enumerate(TEST_CONDITIONS)}
    unknown = [c for c in names if c not in index]
    if unknown:
        raise SystemExit(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(index)}")
    t0 = time.time()
    tables = load_tables(a.data, a.copies, a.jobs, get_settings().feature_cache_dir)
    rav = tables["ravdess"][0]
    spk = np.asarray([str(s) for s in rav.speakers])
    folds = list(GroupKFold(5).split(rav.X, groups=spk))
    sets = [fold_training_set(tables, set(spk[tr])) for tr, _te in folds]
    fits = [(fit_pipelines, (s["params"], [(s["X"], s["y"], s["w"])])) for s in sets]
    fits += [(fit_dimension_head, (s["X"], [s["labels"][i] for i in s["y"]], s["w"])) for s in sets]
    fitted = parallel_calls(fits, n_jobs=a.jobs)  # a fit per process, one BLAS thread each
    models, heads = [m[0] for m in fitted[: len(sets)]], fitted[len(sets) :]
    if any(h is None for h in heads):
        raise SystemExit("a fold's training set leaves a dimension with one side: no dimension head")
    fit_s = time.time() - t0
    print(f"5 fold models fitted ({fit_s:.0f} s)", flush=True)

    paths = np.asarray(rav.paths)
    Xc: dict[str, np.ndarray] = {"clean": rav.X}
    for name in names:
        X = np.full_like(rav.X, np.nan)
        if a.babble_voices == "tess":
            X[:] = condition_matrix(list(rav.paths), index[name], list(tables["tess"][0].paths), Path(a.cache),
                                    "packaged-tess-voices", a.jobs)  # fmt: skip
        else:
            for _tr, te in folds:
                for actor in sorted(set(spk[te])):
                    rows = te[spk[te] == actor]
                    pool = [str(p) for p in paths[te[spk[te] != actor]]]  # the fold's other unseen actors
                    X[rows] = condition_matrix([str(p) for p in paths[rows]], index[name], pool, Path(a.cache),
                                               f"packaged-{actor.replace(':', '_')}", a.jobs)  # fmt: skip
        Xc[name] = X
        print(f"  {name}: features ({time.time() - t0:.0f} s)", flush=True)

    res: dict[str, Any] = {
        "conditions": {},
        "fit_s": fit_s,
        "epochs": sets[0]["params"]["max_iter"],
        "babble_voices": a.babble_voices,
        "copies": a.copies,
    }
    preds: dict[str, list[str]] = {}
    dims: dict[str, np.ndarray] = {}
    for name, X in Xc.items():
        pred = np.empty(len(rav.labels), dtype=object)
        top_p = np.zeros(len(rav.labels))
        dims[name] = np.full((len(rav.labels), 2), np.nan)
        for (_tr, te), model, head, s in zip(folds, models, heads, sets, strict=True):
            ok = te[np.isfinite(X[te]).all(axis=1)]
            proba = class_proba(model, X[ok], len(s["labels"]))
            pred[ok] = [s["labels"][i] for i in proba.argmax(axis=1)]
            top_p[ok] = proba.max(axis=1)
            dims[name][ok] = 0.5 * (head.predict(X[ok]) + mapped_dimensions(proba, s["labels"]))
        preds[name] = [str(p) for p in pred]
        res["conditions"][name] = score(rav.labels, preds[name], preds.get("clean", preds[name]), top_p)
        res["conditions"][name]["dimensions"] = score_dimensions(rav.labels, dims[name], dims.get("clean", dims[name]))
        r, d = res["conditions"][name], res["conditions"][name]["dimensions"]
        print(f"{name}: WA {r['wa']:.3f} UAR {r['uar']:.3f} agree {r['agree']:.2f}; arousal UAR "
              f"{d['arousal_uar']:.3f} agree {d['arousal_agree']:.2f}, valence UAR {d['valence_uar']:.3f} "
              f"agree {d['valence_agree']:.2f}", flush=True)  # fmt: skip
    res["seconds"] = time.time() - t0
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(res, indent=1) + "\n")
    Path(f"{out}.md").write_text(render(res))
    print(render(res))


def render(res: dict[str, Any]) -> str:
    lines = [
        "# Unseen RAVDESS actors through other channels: the packaged three-corpus recipe",
        "",
        "Made by `python benchmarks/conditions_packaged.py` (protocol in its docstring): 5-fold GroupKFold by "
        "actor over RAVDESS actors 1-20; every fold's model is the packaged default's recipe (RAVDESS training "
        f"actors + TESS + nEMO, {res.get('copies', 2)} degraded copies a file, `--balance speakers`, "
        f"{res['epochs']} epochs) and labels its 4 unseen actors, each file alone. "
        + (
            "Test babble mixes 5 files of TESS voices (`--babble-voices tess`, as `conditions.py`; TESS is a "
            "training corpus here). "
            if res.get("babble_voices") == "tess"
            else "Test babble mixes 5 files of the fold's *other* unseen actors (voices in no training set). "
        )
        + "`agree`: the same label as the clean "
        f"file. Confidence is the raw top probability (no temperature). {res['seconds'] / 60:.0f} min on 2 cores.",
        "",
        "| condition | WA | UAR | agree | top label | raw confidence |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in res["conditions"].items():
        lines.append(
            f"| {name} | {r['wa']:.3f} | {r['uar']:.3f} | {r['agree']:.2f} | {r['top_label']} "
            f"{100 * r['top_share']:.0f}% | {r['raw_confidence']:.2f} |"
        )
    if all("dimensions" in r for r in res["conditions"].values()):
        lines += [
            "",
            "## Arousal and valence (as the packaged default gives them)",
            "",
            "The mean of each fold's dimension head (`ser_model.training.fit_dimension_head`) and its category "
            "probabilities mapped onto the positions (`ModelBundle.dimensions`), on the same files. UAR: binary "
            "at 0.5 against the true category's side (`ser_model.dimensions`: high arousal angry, happy, fearful, "
            "surprised; positive valence happy, surprised, neutral, calm); agree: the same side as the clean "
            "file; change: the "
            "mean absolute difference from the clean file's value.",
            "",
            "| condition | arousal UAR | arousal agree | arousal change | valence UAR | valence agree | valence change |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in res["conditions"].items():
            d = r["dimensions"]
            lines.append(
                f"| {name} | {d['arousal_uar']:.3f} | {d['arousal_agree']:.2f} | {d['arousal_change']:.2f} | "
                f"{d['valence_uar']:.3f} | {d['valence_agree']:.2f} | {d['valence_change']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
