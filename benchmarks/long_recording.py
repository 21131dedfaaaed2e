"""Peak memory and wall time of per-segment classification of long recordings (issue 7).

Synthesises long 48 kHz mono 16-bit WAV recordings from real speech: RAVDESS utterances (the 15
48 kHz originals of actor 1 and the 16 kHz FLACs of actor 2 upsampled to 48 kHz; Livingstone &
Russo 2018, CC BY-NC-SA 4.0) repeated in random order with 0.5-2.5 s pauses over a -70 dBFS
noise floor, written utterance by utterance so the generator never holds the recording. Each
measurement then runs in a fresh child process (``OMP_NUM_THREADS=1``, as a worker):
``ser_model.segment.classify_segments`` with the default model, and the child's peak resident
set size is the ``ru_maxrss`` that ``os.wait4`` returns for that child alone.

Reference rows: the same child classifying one 3 s utterance whole (the import + model
baseline) and ``ser_model.audio.load_audio`` of the whole 1-hour file (what the single-file path
would need).

Usage::

    NUMBA_CACHE_DIR=/tmp/numbacache python benchmarks/long_recording.py [--minutes 60] [--tmp DIR]

Writes ``benchmarks/results/long_recording.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SR = 48_000

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from ser_model.model import DEFAULT_MODEL_PATH, load_bundle
bundle = load_bundle(DEFAULT_MODEL_PATH)
what, path = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
if what == "whole":
    from ser_model.audio import load_audio
    y, _ = load_audio(path)
    out = {"samples": int(y.size)}
else:
    from ser_model.segment import classify_segments
    r = classify_segments(path, bundle, what)
    out = {"n_segments": r.n_segments, "n_skipped": r.n_skipped, "emotion": r.emotion,
           "segmented_duration_s": r.segmented_duration_s, "duration_s": r.duration_s}
out["startup_s"] = t1 - t0
out["work_s"] = time.perf_counter() - t1
print(json.dumps(out))
"""


def utterance_pool() -> list[np.ndarray]:
    """Real speech at 48 kHz: RAVDESS actor 1 originals and actor 2 FLACs upsampled."""
    pool = []
    for f in sorted((DATA / "ravdess-48k" / "Actor_01").glob("*.wav")):
        y, sr = sf.read(str(f), dtype="float32")
        pool.append(y if sr == SR else soxr.resample(y, sr, SR, quality="HQ"))
    for f in sorted((DATA / "ravdess" / "Actor_02").glob("*.flac"))[:30]:
        y, sr = sf.read(str(f), dtype="float32")
        pool.append(soxr.resample(y, sr, SR, quality="HQ"))
    if not pool:
        raise SystemExit(f"no RAVDESS files under {DATA}")
    return pool


def synthesise(path: Path, seconds: float, pool: list[np.ndarray], seed: int = 0) -> dict[str, float]:
    """Write a ``seconds``-long recording block-wise; returns facts about it."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SR)
    written = n_utt = 0
    noise = 10 ** (-70 / 20)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as out:
        while written < total:
            pause = int(rng.uniform(0.5, 2.5) * SR)
            utt = pool[int(rng.integers(len(pool)))]
            chunk = np.concatenate([np.zeros(pause, dtype=np.float32), utt])[: total - written]
            chunk = chunk + (noise * rng.standard_normal(chunk.size)).astype(np.float32)
            out.write(chunk)
            written += chunk.size
            n_utt += 1
    return {"seconds": written / SR, "utterances": n_utt, "bytes": path.stat().st_size}


def run_child(what: str, path: Path) -> dict[str, float]:
    """Run one measurement in a fresh process; its own peak RSS (MB, from ``os.wait4``) and wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/numbacache")
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, what, str(path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        # wait4 reaps this child and returns its own rusage: ru_maxrss is its peak RSS in KiB (Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"child {what} failed: {err.read()[-2000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update(
        what=what,
        path=path.name,
        peak_rss_mb=usage.ru_maxrss / 1024,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the long recording")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the synthesised WAVs (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "long_recording.md")
    ap.add_argument("--no-whole", action="store_true", help="skip load_audio of the whole long file")
    args = ap.parse_args()

    pool = utterance_pool()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmpd = Path(tmp)
        short = tmpd / "one_utterance.wav"
        sf.write(str(short), pool[7], SR, subtype="PCM_16")
        facts_short = {"seconds": pool[7].size / SR, "utterances": 1, "bytes": short.stat().st_size}
        ten = tmpd / "10min.wav"
        long = tmpd / f"{args.minutes:g}min.wav"
        facts = {short.name: facts_short, "10min.wav": synthesise(ten, 600, pool, seed=1)}
        t0 = time.perf_counter()
        facts[long.name] = synthesise(long, args.minutes * 60, pool, seed=2)
        print(f"synthesised {long.name}: {facts[long.name]} in {time.perf_counter() - t0:.1f} s", flush=True)
        plan = [("vad", short), ("vad", ten), ("window:3:1.5", long), ("vad", long)]
        if not args.no_whole:
            plan.append(("whole", long))
        for what, p in plan:
            r = run_child(what, p)
            print(json.dumps(r), flush=True)
            rows.append(r)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "files": facts,
    }
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Long recordings: peak memory and wall time (issue 7)",
        "",
        f"Written by `benchmarks/long_recording.py` on {time.strftime('%Y-%m-%d')}; Python {meta['python']}, "
        f"{meta['cpus']} CPUs shared with other work (load average at the end {meta['load_avg_at_end'][0]:.1f}), "
        "`OMP_NUM_THREADS=1`, one fresh process per row.",
        "",
        "Recordings: RAVDESS utterances (actor 1 48 kHz originals, actor 2 upsampled) in random order with "
        "0.5-2.5 s pauses over -70 dBFS noise, 48 kHz mono 16-bit WAV, written block-wise.",
        "",
        "| run | file | audio (min) | segments | skipped | peak RSS (MB) | wall (s) | CPU (s) | start-up (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        minutes = facts.get(r["path"], {}).get("seconds", 0) / 60
        what = "`load_audio` whole file" if r["what"] == "whole" else f"`classify_segments(..., {r['what']!r})`"
        segs = r.get("n_segments", "")
        skipped = r.get("n_skipped", "")
        lines.append(
            f"| {what} | {r['path']} | {minutes:.1f} | {segs} | {skipped} | {r['peak_rss_mb']:.0f} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['startup_s']:.1f} |"
        )
    lines += [
        "",
        "Peak RSS is the child's own `ru_maxrss` (from `os.wait4`); CPU is its user + system time. "
        "The one-utterance row is the baseline of "
        "Python + numpy/librosa/scikit-learn + the model; the segmented rows add only a few MB, the same "
        "for 10 and 60 minutes, since only one 10 s block and the open segment are held. Target: < 500 MB.",
        "",
        "VAD decodes the file twice (a first pass for the reference level, see `ser_model.segment`); the "
        "`load_audio` row shows what one decode + resample of the hour costs. Skipped windows in window "
        "mode are windows of pause only (peak below -60 dBFS after the mono 16 kHz conversion), which "
        "`classify_segments` counts and leaves out instead of labelling background noise.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
