"""Throughput section 1: feature extractors on one core, ms per file, and how ours compares.

RAVDESS at 48 kHz (:func:`make_48k_set`: FLACs resampled with soxr plus the real 48 kHz originals).
Per file, interleaved passes (:func:`time_methods`): the seeds' extractor
(:func:`throughput_seeds.seeds_features`), the extractor of an earlier git revision
(:func:`load_before`, ``ser-feat-2``), ours (``load_audio`` + :func:`ser_model.features.extract_features`),
and the floor (``load_audio`` alone). Ours is compared value by value with the earlier one and profiled
with cProfile (:func:`profile_ours`). Run by ``benchmarks/throughput.py`` (section ``extractors``).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from throughput_seeds import seeds_features

from ser_model.audio import load_audio
from ser_model.features import _features, extract_features, feature_names

REPO = Path(__file__).resolve().parents[1]


def load_before(rev: str) -> Any:
    """``ser_model/features.py`` as of git revision ``rev`` (the librosa-based extractor), as a module."""
    src = subprocess.run(
        ["git", "show", f"{rev}:ser_model/features.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="ser-feat-before-")) / "features_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("features_before", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_48k_set(data: Path, orig48: Path | None, n: int, out: Path) -> list[str]:
    """``n`` RAVDESS FLACs resampled to 48 kHz (soxr HQ, 16-bit WAV) + the real 48 kHz originals."""
    flacs = sorted(data.glob("Actor_*/*.flac"))
    step = max(1, len(flacs) // n)
    paths = []
    for p in flacs[::step][:n]:
        y, sr = sf.read(p, dtype="float32")
        y48 = soxr.resample(y, sr, 48000, quality="HQ")
        q = out / f"{p.stem}_48k.wav"
        sf.write(q, np.clip(y48, -1.0, 1.0), 48000, subtype="PCM_16")
        paths.append(str(q))
    if orig48 is not None and orig48.is_dir():
        paths += sorted(str(p) for p in orig48.glob("Actor_*/*.wav"))
    return paths


def time_methods(
    methods: dict[str, Callable[[str], Any]], paths: list[str], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU seconds (this thread) per pass over ``paths`` of every method.

    Passes are interleaved so that load from other processes on a shared machine hits all alike;
    the CPU time is the steadier number there (it does not count time spent waiting for a core).
    """
    for f in methods.values():  # warm up: imports, numba compilation, filter banks, page cache
        for p in paths[:3]:
            f(p)
    wall: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(repeats):
        for name, f in methods.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            for p in paths:
                f(p)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    return wall, cpu


def profile_ours(paths: list[str], top: int = 14) -> str:
    """cProfile of load_audio + extract_features over ``paths``: the functions with most own time."""
    ys = [load_audio(p)[0] for p in paths]
    prof = cProfile.Profile()
    prof.enable()
    for p in paths:
        load_audio(p)
    for y in ys:
        extract_features(y)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(ln.replace(str(REPO) + "/", "").replace(sys.prefix + "/", "") for ln in lines[start:])


EXTRACTOR_META = (
    "before",
    "files",
    "audio_s",
    "values_within_tolerance",
    "files_all_within_tolerance",
    "worst_difference_in_spreads",
    "worst_feature",
    "peak_rss_extractor_process_mb",
)


def run_extractors(args: argparse.Namespace) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Section 1: the four methods on the 48 kHz set; returns (per-method timings, profile, facts)."""
    tmp = Path(tempfile.mkdtemp(prefix="ser-48k-"))
    try:
        paths = make_48k_set(Path(args.data), Path(args.orig48), args.n48, tmp)
        audio_s = sum(sf.info(p).duration for p in paths)
        before = load_before(args.before_rev)
        methods: dict[str, Callable[[str], Any]] = {
            "seeds": seeds_features,
            before.FEATURE_VERSION: lambda p: before.extract_features(load_audio(p)[0]),
            "ours": lambda p: extract_features(load_audio(p)[0]),
            "floor": lambda p: load_audio(p),
        }
        wall, cpu = time_methods(methods, paths, args.repeats)
        A, B = [], []
        for p in paths:
            y = load_audio(p)[0]
            # ser-feat-3's steps 1-9 without its level normalisation and noise floor (issue 11): the
            # computation ser-feat-2 defines, so the comparison isolates the rounding of issue 14
            A.append(_features(y))
            B.append(before.extract_features(y))
        a, b = np.array(A, np.float64), np.array(B, np.float64)
        close = np.isclose(a, b, rtol=1e-4, atol=1e-5)
        spread = np.abs(a - b) / (b.std(axis=0) + 1e-12)
        profile = profile_ours(paths)
        rss_extract = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ext = {
        k: {
            "ms_per_file": 1000 * statistics.median(v) / len(paths),
            "cpu_ms_per_file": 1000 * statistics.median(cpu[k]) / len(paths),
            "audio_s_per_s": audio_s / statistics.median(v),
            "passes_s": [round(x, 3) for x in v],
            "cpu_passes_s": [round(x, 3) for x in cpu[k]],
        }
        for k, v in wall.items()
    }
    facts = {
        "before": f"{before.FEATURE_VERSION} @ {args.before_rev}",
        "files": len(paths),
        "audio_s": round(audio_s, 1),
        "values_within_tolerance": float(close.mean()),
        "files_all_within_tolerance": int(close.all(axis=1).sum()),
        "worst_difference_in_spreads": float(spread.max()),
        "worst_feature": feature_names()[int(spread.max(axis=0).argmax())],
        "peak_rss_extractor_process_mb": round(rss_extract, 1),
    }
    return ext, profile, facts
