"""Leave-one-corpus-out probes: training-side levers against the corpus shift, several MLP seeds.

``benchmarks/corpora.py`` measures the packaged recipes; this measures changes to the default's
recipe that aim at the corpus a model never heard, each file alone (the setting of the project's
checks on corpora outside ``../shared``), over several MLP seeds, because one seed moves the mean
LOCO WA by up to 0.03 (seed 0 0.396, seed 1 0.368 for the same recipe).

Usage (from the repository root; features and copies come from the caches ``corpora.py`` fills; the
speed-perturbed features are computed once, about 5 min on 2 cores, and cached in ``--cache``)::

    python benchmarks/loco_probes.py                 # every probe, seeds 0-2
    python benchmarks/loco_probes.py --probes packaged,speaker-swap --seeds 3,4   # two more seeds of two probes
    python benchmarks/loco_probes.py --render        # the .md again from the .json

Writes ``benchmarks/results/loco_probes.md`` and ``.json``; a run adds its cells to those already in the
``.json`` (the same probe and seed is replaced).

Protocol: for each corpus C of RAVDESS, TESS, nEMO, the packaged default's training set without C
(:func:`corpora.recipe_training_set`: the other corpora, two degraded copies a file, corpora weighted
by their speakers), changed as the probe says, fits the global pipeline
(:func:`ser_model.training.fit_pipelines`, the epoch budget of :func:`ser_model.training.training_params`
for the rows it has) and the dimension head (:func:`ser_model.training.fit_dimension_head`); every file
of C whose label the training set has is labelled alone. Reported per probe, mean over seeds: WA and UAR
per left-out corpus, and the binary arousal and valence UAR of what a bundle gives (the mean of head and
mapped probabilities, :meth:`ser_model.model.ModelBundle.dimensions`).

Probes:

- ``packaged``: the recipe as shipped.
- ``drop-corpus-25`` / ``drop-corpus-50``: drop the quarter / half of the features whose values tell
  the training corpora apart best (ANOVA F of the corpus over the clean training rows,
  ``sklearn.feature_selection.f_classif``): feature selection by stability across corpora.
- ``speaker-swap``: one more copy of every clean training row moved from its speaker's mean onto
  another training speaker's mean (``x - mean(s) + mean(s')``, means over the speaker's clean rows):
  the emotion contrasts of one voice placed where another voice sits, so that where a voice sits in
  feature space stops predicting the label.
- ``speed``: one more copy of every clean training file resampled by 0.9 and by 1.1 (soxr; tempo, pitch
  and formants move together, as another vocal tract would: Ko et al. 2015, "Audio augmentation for
  speech recognition"), weighted as its file.
- ``logistic``: a multinomial logistic regression (L2, ``C = 1/(0.1 n)``) on the standardised features
  in place of the MLP, the head unchanged.

Corpora: RAVDESS (CC BY-NC-SA 4.0), TESS (CC BY-NC-ND 4.0), nEMO (CC BY-NC-SA 4.0), LibriSpeech
(CC BY 4.0); see ../shared/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import CORPORA, _dim_scores, _scores, load_tables, recipe_training_set  # noqa: E402

from worker.settings import get_settings  # noqa: E402

PROBES = ("packaged", "drop-corpus-25", "drop-corpus-50", "speaker-swap", "speed", "logistic")
SPEEDS = (0.9, 1.1)


def _speed_features(path: str, factor: float) -> np.ndarray:
    """Accurate features of ``path`` resampled by ``factor`` (tempo and pitch times ``factor``)."""
    import soxr

    from ser_model.audio import load_audio
    from ser_model.encoder import get_encoder
    from ser_model.featureset import ACCURATE, extract

    y, _ = load_audio(path)
    return extract(soxr.resample(y, 16000, 16000 / factor).astype(np.float32), ACCURATE, get_encoder())


def _speed_chunk(paths: list[str], factor: float) -> np.ndarray:
    from ser_model.threads import one_blas_thread

    with one_blas_thread():
        return np.stack([_speed_features(p, factor) for p in paths])


def speed_tables(tables: dict[str, tuple[Any, Any]], cache: Path, jobs: int) -> dict[tuple[str, float], np.ndarray]:
    """``{(corpus, factor): (n_files, d)}`` features of each corpus' clean files resampled by ``factor``
    (rows in the order of the corpus' clean table), cached in ``cache``."""
    from ser_model.featureset import ACCURATE
    from ser_model.training import feature_cache_namespace, parallel_calls

    out = {}
    for c in CORPORA:
        paths = list(tables[c][0].paths)
        for f in SPEEDS:
            key = f"{c}-{f}-{feature_cache_namespace(ACCURATE)}-{len(paths)}.npy"
            file = cache / key
            if not file.exists():
                t0 = time.time()
                chunks = [paths[i : i + 100] for i in range(0, len(paths), 100)]
                X = np.vstack(parallel_calls([(_speed_chunk, (ch, f)) for ch in chunks], n_jobs=jobs))
                cache.mkdir(parents=True, exist_ok=True)
                np.save(file, X)
                print(f"  speed {f} {c}: {len(paths)} files ({time.time() - t0:.0f} s)", flush=True)
            out[(c, f)] = np.load(file)
    return out


def _swap_rows(X: np.ndarray, speakers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every row moved from its speaker's mean onto a random other speaker's mean."""
    names = sorted(set(speakers))
    mean = {k: X[speakers == k].mean(axis=0) for k in names}
    out = np.empty_like(X)
    for k in names:
        idx = np.flatnonzero(speakers == k)
        to = rng.choice([j for j in names if j != k], size=idx.size)
        for j in set(to):
            sel = idx[to == j]
            out[sel] = X[sel] - mean[k] + mean[j]
    return out


def probe_fold(
    tables: dict[str, tuple[Any, Any]], speed: dict[tuple[str, float], np.ndarray], left_out: str, probe: str, seed: int
) -> dict[str, float]:
    """One left-out corpus under one probe and MLP seed: WA, UAR, and the bundle's arousal/valence UAR."""
    from sklearn.feature_selection import f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ser_model.dimensions import mapped_dimensions
    from ser_model.threads import one_blas_thread
    from ser_model.training import (
        MODE_GLOBAL,
        class_proba,
        fit_dimension_head,
        fit_weighted,
        pipeline_for,
        pipeline_rows,
        training_params,
    )

    d = recipe_training_set(tables, [c for c in CORPORA if c != left_out])
    clean, cop, labels, w = d["clean"], d["copies"], d["labels"], d["weights"]
    recipe = pipeline_rows(clean, cop, labels, w, speaker_adaptive=False)[0][MODE_GLOBAL]  # files, then copies
    y_clean = recipe[1][: len(clean.labels)]
    corpus = np.asarray([str(s).split(":")[0] for s in clean.speakers])
    parts = [recipe]
    if probe == "speaker-swap":
        rng = np.random.default_rng(seed)
        parts.append((_swap_rows(clean.X, np.asarray([str(s) for s in clean.speakers]), rng), y_clean, w))
    if probe == "speed":
        for f in SPEEDS:
            rows = np.vstack([speed[(c, f)] for c in d["train"]])  # the clean table stacks corpora in this order
            parts.append((rows, y_clean, w))
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    wa = np.concatenate([p[2] for p in parts])
    test = tables[left_out][0]
    known = np.asarray([lab in labels for lab in test.labels])
    Xt = test.X[known]
    truth = np.asarray([lab for lab, k in zip(test.labels, known, strict=True) if k])
    if probe.startswith("drop-corpus-"):
        F = np.nan_to_num(f_classif(clean.X, corpus)[0], nan=np.inf)
        keep = np.sort(np.argsort(F)[: X.shape[1] - X.shape[1] * int(probe.rsplit("-", 1)[1]) // 100])
        X, Xt = X[:, keep], Xt[:, keep]
    params = {**training_params(len(y)), "random_state": seed}
    with one_blas_thread():
        if probe == "logistic":
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (0.1 * len(y)), max_iter=1000))
            model.fit(X, y, logisticregression__sample_weight=wa)
        else:
            model = fit_weighted(pipeline_for(params, *X.shape), X, y, wa)
        head = fit_dimension_head(X, [labels[i] for i in y], wa)
    proba = class_proba(model, Xt, len(labels))
    scores = _scores(list(truth), [labels[i] for i in proba.argmax(axis=1)], proba.max(axis=1))
    dims = _dim_scores(list(truth), 0.5 * (head.predict(Xt) + mapped_dimensions(proba, labels)))
    return {
        **{k: scores[k] for k in ("wa", "uar", "top_share")},
        "arousal_uar": dims["arousal_uar"],
        "valence_uar": dims["valence_uar"],
    }


def _paired(res: dict[str, Any], probe: str) -> str:
    """The probe's mean WA minus the packaged recipe's, seed by seed (the same seed: the same MLP start),
    over the seeds both have, and their mean."""
    if "packaged" not in res or probe == "packaged":
        return "—"
    common = [s for s in res[probe] if s in res["packaged"]]
    diff = [np.mean([res[probe][s][c]["wa"] - res["packaged"][s][c]["wa"] for c in CORPORA]) for s in common]
    return " / ".join(f"{d:+.3f}" for d in diff) + (f" (mean {np.mean(diff):+.3f})" if len(diff) > 1 else "")


def render(res: dict[str, Any]) -> str:
    lines = [
        "# Leave-one-corpus-out probes: training-side levers against the corpus shift",
        "",
        "`python benchmarks/loco_probes.py` (protocol in its docstring): the packaged default's recipe trained on two "
        "corpora, the third labelled each file alone; mean over the probe's MLP seeds "
        "(± the standard deviation over seeds of the three-corpus mean; a run adds its seeds to the saved ones). Arousal / valence: binary UAR of what a bundle "
        "gives (mean of head and mapped probabilities).",
        "",
        "| probe | seeds | " + " | ".join(f"{c} WA / UAR" for c in CORPORA) + " | **mean WA** | against packaged, per seed | "
        + " | ".join(f"{c} arousal / valence" for c in CORPORA) + " | mean arousal / valence |",
        "|---|" + "---|" * (2 * len(CORPORA) + 4),
    ]  # fmt: skip
    for probe, cells in res.items():
        seeds = sorted(cells, key=int)
        per = {c: {k: float(np.mean([cells[s][c][k] for s in seeds])) for k in cells[seeds[0]][c]} for c in CORPORA}
        means = [np.mean([cells[s][c]["wa"] for c in CORPORA]) for s in seeds]
        ar = np.mean([per[c]["arousal_uar"] for c in CORPORA])
        va = np.mean([per[c]["valence_uar"] for c in CORPORA])
        lines.append(
            f"| {probe} | {', '.join(seeds)} | " + " | ".join(f"{per[c]['wa']:.3f} / {per[c]['uar']:.3f}" for c in CORPORA)
            + f" | **{np.mean(means):.3f}** ± {np.std(means):.3f} | {_paired(res, probe)} | "
            + " | ".join(f"{per[c]['arousal_uar']:.3f} / {per[c]['valence_uar']:.3f}" for c in CORPORA)
            + f" | {ar:.3f} / {va:.3f} |"
        )  # fmt: skip
    if "logistic" in res:
        lines += [
            "",
            "The logistic regression does not depend on the MLP seed (± 0); its per-seed differences are the packaged MLP's spread.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from ser_model.training import parallel_calls

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data", type=Path)
    ap.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, of: {', '.join(PROBES)}")
    ap.add_argument("--seeds", default="0,1,2", help="MLP seeds, comma-separated")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ser-batch/bench-loco-probes"), type=Path)
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="benchmarks/results/loco_probes")
    ap.add_argument("--render", action="store_true", help="only write the .md again from the .json")
    a = ap.parse_args()
    if a.render:
        saved = json.loads(Path(f"{a.out}.json").read_text())
        Path(f"{a.out}.md").write_text(render(saved["probes"]))
        return
    probes = [p for p in a.probes.split(",") if p]
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise SystemExit(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(PROBES)}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    t0 = time.time()
    tables = load_tables(a.data, 2, a.jobs, get_settings().feature_cache_dir)
    speed = speed_tables(tables, a.cache, a.jobs) if "speed" in probes else {}
    saved = Path(f"{a.out}.json")
    res: dict[str, Any] = json.loads(saved.read_text())["probes"] if saved.exists() else {}
    for probe in probes:
        cells = [(s, c) for s in seeds for c in CORPORA]
        out = parallel_calls([(probe_fold, (tables, speed, c, probe, s)) for s, c in cells], n_jobs=a.jobs)
        res.setdefault(probe, {}).update({str(s): {} for s in seeds})
        for (s, c), r in zip(cells, out, strict=True):
            res[probe][str(s)][c] = r
        print(f"{probe}: done ({time.time() - t0:.0f} s)", flush=True)
    saved.write_text(json.dumps({"probes": res}, indent=1))
    Path(f"{a.out}.md").write_text(render(res))
    print(Path(f"{a.out}.md").read_text())


if __name__ == "__main__":
    main()
