"""Accuracy of the current feature extractor against another git revision's, on the same folds.

RAVDESS actors 1-20, 8 emotions, GroupKFold by actor (5 folds), the default pipeline
(:func:`ser_model.model.build_pipeline`), several MLP seeds, global and speaker-adaptive. Both
extractors see the same decoded audio (:func:`ser_model.audio.load_audio`); nothing is cached, so a
changed extractor can never be read from a stale feature cache of the same ``FEATURE_VERSION``.

Usage (about 8 minutes on 2 cores)::

    python benchmarks/compare_features.py ../shared/data/ravdess --rev aa4fef9 \\
        --out benchmarks/results/compare_features.json

Prints one line per (extractor, mode, seed) and writes them as JSON. Corpus: RAVDESS (Livingstone &
Russo 2018, CC BY-NC-SA 4.0).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput_extractors import load_before  # noqa: E402

import ser_model.features as current  # noqa: E402
from ser_model.audio import load_audio  # noqa: E402
from ser_model.datasets import load_dataset  # noqa: E402
from ser_model.labels import EMOTIONS  # noqa: E402
from ser_model.training import FeatureTable, cross_validate  # noqa: E402


def main() -> None:
    """Extract with both extractors, cross-validate, print and write the metrics."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GroupKFold

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="RAVDESS folder (Actor_*/)")
    ap.add_argument("--rev", default="aa4fef9", help="git revision of the other extractor")
    ap.add_argument("--seeds", default="0,1,2", help="MLP seeds of the global runs")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    other = load_before(args.rev)
    files = load_dataset([args.data], "ravdess")
    X: dict[str, list[np.ndarray]] = {other.FEATURE_VERSION: [], current.FEATURE_VERSION: []}
    if len(X) != 2:
        raise SystemExit(f"both extractors are {current.FEATURE_VERSION}: compare against another version")
    for f in files:
        y, _ = load_audio(f.path)
        X[other.FEATURE_VERSION].append(other.extract_features(y))
        X[current.FEATURE_VERSION].append(current.extract_features(y))
    labels = [f.label for f in files]
    speakers = [f.speaker for f in files]
    paths = [str(f.path) for f in files]
    tables = {v: FeatureTable(np.array(x), labels, speakers, paths, [], v) for v, x in X.items()}
    splits = list(GroupKFold(n_splits=5).split(paths, labels, groups=np.asarray(speakers)))
    runs: list[tuple[bool, int]] = [(False, int(s)) for s in args.seeds.split(",")] + [(True, 0)]
    out: list[dict[str, Any]] = []
    for sa, seed in runs:
        for version, t in tables.items():
            r = cross_validate(
                t, labels=list(EMOTIONS), splits=splits, params={"random_state": seed}, speaker_adaptive=sa
            )
            row = {
                "extractor": version,
                "mode": "speaker-adaptive" if sa else "global",
                "seed": seed,
                **{k: round(r[k], 4) for k in ("wa", "uar", "macro_f1")},
            }
            out.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"rev": args.rev, "runs": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
