"""The labelling loop measured: how much labelling a few hundred of "your" files helps on your files.

"Your recordings" are TESS (Pichora-Fuller & Dupuis 2020; two speakers, OAF and YAF), which the
default model (RAVDESS actors 1-20) never heard. Everything goes through the ``ser-batch`` CLI, as a
user would run it, in a temporary SQLite database:

1. ``submit`` a sample of TESS (``--per-cell`` files per speaker and emotion) with ``--speaker-from
   tess``; the default model's labels against the TESS names give the starting accuracy.
2. ``labels export --count N`` the N least-sure files; "label" them from their names.
3. ``train ravdess:RAVDESS csv:tolabel.csv --weight csv=W`` for each W: GroupKFold by speaker over
   the 20 actors and the 2 TESS speakers; the per-source row of the labelled files is
   speaker-independent (each TESS speaker is tested by a model that never heard it).
4. ``evaluate`` that model on the batch's other TESS files (not labelled, but the same two speakers
   as the labelled ones: what re-scoring your batch would give; speaker-dependent).

Usage (from the repository root; about 10 minutes on 2 busy cores)::

    python benchmarks/labelling_loop.py --ravdess ../shared/data/ravdess --tess ../shared/data/tess

Writes ``benchmarks/results/labelling_loop.md`` and ``labelling_loop.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ser_model.labels import parse_tess_name  # noqa: E402
from ser_model.metrics import classification_metrics  # noqa: E402

TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "producer.cli", *args], env=env, cwd=REPO, capture_output=True, text=True)
    if p.returncode not in (0, 3):
        raise SystemExit(f"ser-batch {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ravdess", type=Path, default=REPO.parent / "shared" / "data" / "ravdess")
    ap.add_argument("--tess", type=Path, default=REPO.parent / "shared" / "data" / "tess")
    ap.add_argument("--per-cell", type=int, default=40, help="TESS files per speaker and emotion")
    ap.add_argument("--count", type=int, default=200, help="files exported for labelling")
    ap.add_argument("--weights", default="1,3", help="comma-separated --weight csv=W values")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    a = ap.parse_args()
    if a.render_only:
        render(json.loads((a.out / "labelling_loop.json").read_text()), a.out)
        return

    tmp = Path(tempfile.mkdtemp(prefix="ser-loop-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env.update(SER_DATABASE_URL=f"sqlite:///{tmp / 'ser.db'}", SER_MODEL_DIR=str(tmp / "models"), COLUMNS="200")
    t0 = time.perf_counter()
    try:
        own = tmp / "own"
        for spk in ("OAF", "YAF"):
            for emo in TESS_EMOTIONS:
                d = own / f"{spk}_{emo}"
                d.mkdir(parents=True)
                files = sorted((a.tess / f"{spk}_{emo}").glob("*.flac"))
                for f in files[:: max(1, len(files) // a.per_cell)][: a.per_cell]:
                    (d / f.name).symlink_to(f.resolve())
        cli(["submit", str(own), "--speaker-from", "tess", "-q"], env)
        rows = list(csv.DictReader(cli(["results", "--batch", "1", "--format", "csv"], env).stdout.splitlines()))
        done = [r for r in rows if r["status"] == "done"]
        truth = {r["path"]: parse_tess_name(r["path"]).emotion for r in done}
        labels = sorted(set(truth.values()) | {r["emotion"] for r in done})
        before = classification_metrics([truth[r["path"]] for r in done], [r["emotion"] for r in done], labels)

        manifest = tmp / "tolabel.csv"
        cli(["labels", "export", "1", "--count", str(a.count), "-o", str(manifest)], env)
        with manifest.open(newline="") as fh:
            exported = list(csv.DictReader(fh))
        for r in exported:
            r["label"] = truth[r["path"]]
        with manifest.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(exported[0]))
            w.writeheader()
            w.writerows(exported)
        rest = tmp / "rest.csv"
        labelled = {r["path"] for r in exported}
        with rest.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["path", "label", "speaker"])
            w.writeheader()
            for r in done:
                if r["path"] not in labelled:
                    w.writerow({"path": r["path"], "label": truth[r["path"]], "speaker": ""})
        n_rest = len(done) - len(labelled)
        exported_before = classification_metrics(
            [r["label"] for r in exported], [r["predicted"] for r in exported], labels
        )
        rest_before = classification_metrics(
            [truth[r["path"]] for r in done if r["path"] not in labelled],
            [r["emotion"] for r in done if r["path"] not in labelled],
            labels,
        )

        runs = []
        for wgt in [float(x) for x in a.weights.split(",")]:
            rep = tmp / f"rep-w{wgt:g}"
            t = cli(
                [
                    "train",
                    f"ravdess:{a.ravdess}",
                    f"csv:{manifest}",
                    "--weight",
                    f"csv={wgt:g}",
                    "--report",
                    str(rep),
                    "--output",
                    str(tmp / f"m-w{wgt:g}.npz"),
                ],
                env,
            )
            version = next(ln.split()[3] for ln in t.stdout.splitlines() if ln.startswith("registered model version"))
            m = json.loads((rep / "metrics.json").read_text())
            ev = tmp / f"ev-w{wgt:g}"
            cli(["evaluate", str(rest), "--dataset", "csv", "--model", version, "--report", str(ev)], env)
            e = json.loads((ev / "metrics.json").read_text())
            ps = m["per_source"]
            src_csv = next(k for k in ps if k.startswith("csv:"))
            src_rav = next(k for k in ps if k.startswith("ravdess:"))
            runs.append(
                {
                    "weight": wgt,
                    "pooled": {k: m[k] for k in ("n", "wa", "uar", "macro_f1", "protocol")},
                    "labelled_oof": {k: ps[src_csv][k] for k in ("n", "wa", "uar", "macro_f1")},
                    "ravdess_oof": {k: ps[src_rav][k] for k in ("n", "wa", "uar", "macro_f1")},
                    "rest": {k: e[k] for k in ("n", "wa", "uar", "macro_f1")},
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0
    res = {
        "tess_files": len(done),
        "exported": len(exported),
        "rest": n_rest,
        "before_all": {k: before[k] for k in ("n", "wa", "uar", "macro_f1")},
        "before_exported": {k: exported_before[k] for k in ("n", "wa", "uar", "macro_f1")},
        "before_rest": {k: rest_before[k] for k in ("n", "wa", "uar", "macro_f1")},
        "runs": runs,
        "wall_s": round(wall, 1),
        "command": "python benchmarks/labelling_loop.py " + " ".join(sys.argv[1:]),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "labelling_loop.json").write_text(json.dumps(res, indent=2) + "\n")
    render(res, a.out)


def render(res: dict, out: Path) -> None:
    """Write ``labelling_loop.md`` from the measured numbers (``--render-only`` redoes just this)."""
    runs = res["runs"]
    f3 = lambda d: f"{d['wa']:.3f} | {d['uar']:.3f} | {d['macro_f1']:.3f} | {d['n']}"  # noqa: E731
    lines = [
        '# The labelling loop on recordings the default model never heard (TESS as "your" files)',
        "",
        f"`{res['command']}` — {res['wall_s']:.0f} s wall on this machine (2 cores shared with other work).",
        "",
        f"{res['tess_files']} TESS files (2 speakers x 7 emotions) submitted with `--speaker-from tess`;"
        f" the {res['exported']} least-sure exported with `labels export` and labelled from their names;"
        f" trained with `train ravdess:<20 actors> csv:tolabel.csv --weight csv=W`.",
        "",
        "| what | WA | UAR | macro-F1 | files |",
        "|---|---|---|---|---|",
        f"| default model (RAVDESS only), all TESS files of the batch | {f3(res['before_all'])} |",
        f"| default model, the exported (least-sure) files | {f3(res['before_exported'])} |",
        f"| default model, the other files of the batch | {f3(res['before_rest'])} |",
    ]
    for r in runs:
        w = f"{r['weight']:g}"
        lines += [
            f"| W={w}: labelled files, out-of-fold (tested on a model without their speaker) | {f3(r['labelled_oof'])} |",
            f"| W={w}: RAVDESS files, out-of-fold | {f3(r['ravdess_oof'])} |",
            f"| W={w}: final model on the other files of the batch (same 2 speakers: speaker-dependent) | {f3(r['rest'])} |",
        ]
    lines += [
        "",
        "What it says, one run, two TESS speakers (differences of a few points are noise at this size):",
        "",
        "- On **the same speakers and recording conditions** -- re-scoring the rest of the batch -- labelling",
        "  200 files lifts accuracy from about 0.5 to about 0.98. TESS is an easy case (one carrier phrase,",
        "  studio audio, two voices), so expect less on real recordings; the direction is the point.",
        "- On **a speaker of your data the model has not heard** (the out-of-fold rows: each TESS speaker tested",
        "  by a model trained with the other one) it did not help here: about 0.36-0.40 against the default",
        "  model's 0.42 on the same files. Labelled files teach the model your speakers and conditions; they",
        "  do not make it speaker-independent on your data. Label files from the speakers you will score.",
        "- RAVDESS accuracy stays where it was (0.55 out-of-fold; the default model's is 0.557): the corpus",
        "  does not suffer from the added files. `--weight csv=3` moved the numbers by a few points only.",
        "",
        "TESS has 7 emotions (no calm); the models keep RAVDESS's 8, so a `calm` answer on TESS counts as wrong,",
        "and macro-F1 averages over every label of the model or the data, including labels absent from these",
        "files (an F1 of 0), which is why it sits below WA and UAR. Chance is 1/7 = 0.143 on TESS.",
        "",
    ]
    (out / "labelling_loop.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
