"""Throughput (issues 6 and 14): extractors, the result upsert, end to end files/s, first result.

One run, side by side, on one core per process (``OMP_NUM_THREADS=1``, set before numpy is imported;
glibc's malloc thresholds set as in a worker process, :func:`worker.settings.tune_malloc`). This
script is the entry point; each measurement lives in a module of its own, and ``--sections`` picks them:

1. ``extractors`` (``throughput_extractors.py``): **extractors** on RAVDESS at 48 kHz: ``--n48`` of the
   16 kHz FLACs resampled to 48 kHz with soxr (spread over the actors) plus the real 48 kHz originals
   in ``--orig48``, written as 16-bit WAVs to a temp dir. Per file:

   - *seeds*: the seeds' extractor, reimplemented (``throughput_seeds.py``): soundfile at the native
     rate, ``np.abs(librosa.stft(X))``, time means of ``librosa.feature.mfcc(n_mfcc=40)``,
     ``chroma_stft(S=stft)`` and ``melspectrogram(y=X)`` (180 values);
   - *ser-feat-2*: ``load_audio`` + the extractor as committed before issue 14 (``--before-rev``,
     loaded from git; numpy's FFT);
   - *ours*: ``load_audio`` + :func:`ser_model.features.extract_features` (``ser-feat-3``);
   - *floor*: ``load_audio`` alone (decode, mono mix, soxr resample to 16 kHz).

   Every method runs over all files ``--repeats`` times, interleaved; the median pass gives ms per
   file (wall clock and this thread's CPU time) and audio-seconds per wall-second. "ours" is
   compared value by value with "ser-feat-2", and profiled with cProfile.
2. ``seeds`` (``throughput_seeds.py``): **the seeds' extractor on the 1,200 RAVDESS files** in this one
   process over the 16 kHz FLACs, numba cache warm (``NUMBA_CACHE_DIR``, compiled by the warm-up),
   files/s: the yardstick of the end-to-end ratio. ``side`` (``throughput_e2e.py``) runs it side by
   side with ``ser-batch submit``, round by round.
3. ``upsert`` (``throughput_upsert.py``): **result upsert** per chunk of 8 rows, SQLite and PostgreSQL:
   the statement of issue 6 (a multi-row ``INSERT ... ON CONFLICT`` built and compiled per chunk)
   against :func:`worker.storage.db.upsert_results` (one cached statement, ``executemany``); and the
   ``pending`` rows of a batch (:func:`worker.storage.db.insert_pending`), old and new.
4. ``e2e`` (``throughput_e2e.py``): **end to end**: ``ser-batch submit DATA -j 1`` and ``-j 2`` on a
   fresh SQLite file, whole command including start-up (``benchmarks/distributed.py:run_embedded``);
   distributed mode with redis-server, PostgreSQL and 1 or 2 worker processes (``run_distributed``,
   workers warm, wall time from submit to the last row).
5. ``e2e``, continued: **first result**: a batch is queued while no worker runs; then
   ``ser-batch worker -c 1`` starts and the time to the first ``done`` row is measured (caches warm:
   the second and later starts).
6. ``models`` (``models_throughput.py``, the one implementation of this measurement): **both packaged
   models end to end** against the seeds' extractor, in interleaved rounds: the seeds' extractor in its
   own process, ``ser-batch submit DATA`` (the default, accurate model) and ``submit --model fast``,
   files/s and the ratios of issue 18 (accurate >= 1x, fast >= 4x), with ``uptime`` before and after.

The report (``throughput_report.py``) is the hand-written findings plus the measured tables.

The ``side`` and ``e2e`` runs call ``submit`` with its defaults, so they measure whatever model is the
default: the hand-crafted model when they were last run (issue 14), the accurate model since issue 18
(``models`` measures both by name). The packaged models must be loadable under the current feature versions.

Usage::

    NUMBA_CACHE_DIR=/tmp/numbacache python benchmarks/throughput.py /work/shared/data/ravdess \\
        --out benchmarks/results/throughput.md

    # only the two-model comparison; the other sections are taken from the JSON of the last run
    python benchmarks/throughput.py /work/shared/data/ravdess --sections models

Writes ``throughput.md`` and ``throughput.json`` next to it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one core, as in a worker process
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numbacache")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from models_throughput import measure as models_side_by_side  # noqa: E402
from throughput_e2e import end_to_end, side_by_side  # noqa: E402
from throughput_extractors import EXTRACTOR_META, run_extractors  # noqa: E402
from throughput_report import report  # noqa: E402
from throughput_seeds import seeds_on_corpus  # noqa: E402
from throughput_upsert import upsert_both_databases  # noqa: E402

SECTIONS = ("extractors", "seeds", "upsert", "side", "e2e", "models")
MACHINE_SECTIONS = set(SECTIONS) - {"models"}
"""Sections whose run the ``machine`` entry (load before and after) describes; ``models`` records its own."""


def main() -> None:
    """Run everything (or ``--sections``) and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="RAVDESS 16 kHz FLAC folder (Actor_*/)")
    ap.add_argument("--orig48", default=str(REPO.parent / "shared" / "data" / "ravdess-48k"))
    ap.add_argument("--n48", type=int, default=240, help="FLACs resampled to 48 kHz for the extractor runs")
    ap.add_argument("--repeats", type=int, default=5, help="passes per extractor")
    ap.add_argument("--before-rev", default="aa4fef9", help="git revision of the ser-feat-2 extractor")
    ap.add_argument("--seeds-passes", type=int, default=2, help="passes of the seeds' extractor over DATA")
    ap.add_argument("--upsert-passes", type=int, default=3)
    ap.add_argument("--side-rounds", type=int, default=5, help="rounds of the seeds / submit side by side")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="embedded runs per -j")
    ap.add_argument("--dist-repeats", type=int, default=2, help="distributed runs per configuration")
    ap.add_argument("--models-rounds", type=int, default=5, help="interleaved rounds of the two-model comparison")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)} to run; the others are taken from the "
        "JSON an earlier run wrote next to --out",
    )
    ap.add_argument("--out", default="benchmarks/results/throughput.md")
    ap.add_argument("--report-only", metavar="JSON", help="rewrite the Markdown from a saved throughput.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report_only:
        d = json.loads(Path(args.report_only).read_text())
        out.write_text(
            report(
                d["machine"],
                d["extractors"],
                d["seeds_on_corpus"],
                d["upsert"],
                d["runs"],
                d["profile"],
                d.get("side_by_side", []),
                d.get("models"),
            )
        )
        return
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if unknown := sections - set(SECTIONS):
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    prev = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    if sections != set(SECTIONS) and not prev:
        ap.error(f"--sections needs the results of an earlier full run in {out.with_suffix('.json')}")

    from services import temp_dir

    from ser_model.features import FEATURE_VERSION
    from worker.settings import tune_malloc

    tuned = tune_malloc()  # as prepare_process_env does in every feature-computing process
    load0 = os.getloadavg()
    meta = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "feature_version": FEATURE_VERSION,
        "malloc_tuned": tuned,
        "load_before": load0,
    }
    if "extractors" in sections:
        ext, profile, ext_meta = run_extractors(args)
    else:
        ext, profile = prev["extractors"], prev["profile"]
        ext_meta = {k: prev["machine"][k] for k in EXTRACTOR_META if k in prev["machine"]}
    meta.update(ext_meta)
    if "seeds" in sections:
        seeds = seeds_on_corpus(args.data, args.seeds_passes)
        print(json.dumps({"seeds_on_corpus": seeds}), flush=True)
    else:
        seeds = prev["seeds_on_corpus"]
    if "upsert" in sections:
        utmp = temp_dir("ser-upsert-")
        try:
            upsert = upsert_both_databases(utmp, args.upsert_passes)
        finally:
            shutil.rmtree(utmp, ignore_errors=True)
        print(json.dumps({"upsert": upsert}), flush=True)
    else:
        upsert = prev["upsert"]
    side = side_by_side(args.data, args.side_rounds) if "side" in sections else prev.get("side_by_side", [])
    e2e = end_to_end(args.data, args.e2e_repeats, args.dist_repeats) if "e2e" in sections else prev.get("runs", [])
    models = models_side_by_side(args.data, args.models_rounds) if "models" in sections else prev.get("models")
    meta["load_after"] = os.getloadavg()
    meta["sections_run"] = sorted(sections)
    if not sections & MACHINE_SECTIONS:  # a models-only run: the machine entry still describes the last other run
        meta = prev["machine"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": meta,
                "extractors": ext,
                "seeds_on_corpus": seeds,
                "upsert": upsert,
                "side_by_side": side,
                "runs": e2e,
                "profile": profile,
                "models": models,
            },
            indent=2,
        )
        + "\n"
    )
    text = report(meta, ext, seeds, upsert, e2e, profile, side, models)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
