"""The seeds' extractor: the yardstick of the throughput benchmark (issues 6 and 14).

:func:`seeds_features` reimplements the extractor the project started from: soundfile at the native
rate, ``np.abs(librosa.stft(X))``, time means of ``librosa.feature.mfcc(n_mfcc=40)``,
``chroma_stft(S=stft)`` and ``melspectrogram(y=X)`` (180 values). :func:`seeds_on_corpus` times it
over every RAVDESS FLAC of a folder, warm (librosa imported, numba functions compiled or loaded from
``NUMBA_CACHE_DIR``).

Run as a script, it is the seeds' extractor as the seeds ran it, in a process of its own with glibc's
default allocator settings (no :func:`worker.settings.tune_malloc`): it warms up, times one pass and
prints ``{"files_per_s": ..., "cpu_ms_per_file": ...}`` as one JSON line::

    python benchmarks/throughput_seeds.py /work/shared/data/ravdess

(``benchmarks/throughput.py``'s side-by-side rounds and ``benchmarks/models_throughput.py`` run it so.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one core, as in a worker process
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numbacache")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402


def seeds_features(path: str) -> np.ndarray:
    """The seeds' extractor: librosa mean MFCC40 / chroma / mel128 at the file's native rate.

    Returns:
        shape ``(180,)``: 40 MFCC, 12 chroma, 128 mel-band means over time.
    """
    import librosa

    X, sr = sf.read(path, dtype="float32")
    if X.ndim == 2:
        X = X.mean(axis=1)
    stft = np.abs(librosa.stft(X))
    mfccs = np.mean(librosa.feature.mfcc(y=X, sr=sr, n_mfcc=40).T, axis=0)
    chroma = np.mean(librosa.feature.chroma_stft(S=stft, sr=sr).T, axis=0)
    mel = np.mean(librosa.feature.melspectrogram(y=X, sr=sr).T, axis=0)
    return np.hstack([mfccs, chroma, mel])


def warm_seeds_paths(data: str) -> list[str]:
    """Every RAVDESS FLAC of ``data``, after the seeds' extractor ran on 5 of them (librosa import, numba)."""
    paths = sorted(str(p) for p in Path(data).glob("Actor_*/*.flac"))
    for p in paths[:5]:  # warm up: librosa import, numba functions compiled or loaded from the cache
        seeds_features(p)
    return paths


def seeds_pass(paths: list[str]) -> dict[str, float]:
    """One timed pass of the seeds' extractor over ``paths`` in this process (warm): files/s, CPU ms/file."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for p in paths:
        seeds_features(p)
    return {
        "files_per_s": round(len(paths) / (time.perf_counter() - t0), 1),
        "cpu_ms_per_file": round(1000 * (time.thread_time() - c0) / len(paths), 2),
    }


def seeds_on_corpus(data: str, passes: int) -> dict[str, Any]:
    """The seeds' extractor over every RAVDESS FLAC in this process (numba cache warm): files/s per pass."""
    paths = warm_seeds_paths(data)
    runs = [seeds_pass(paths) for _ in range(passes)]
    return {
        "files": len(paths),
        "files_per_s": [r["files_per_s"] for r in runs],
        "cpu_ms_per_file": [r["cpu_ms_per_file"] for r in runs],
    }


def main() -> None:
    """``throughput_seeds.py DATA``: warm up, then print one pass's :func:`seeds_pass` as JSON (no malloc tuning)."""
    ap = argparse.ArgumentParser(description="One warm pass of the seeds' extractor over DATA, printed as JSON.")
    ap.add_argument("data", help="RAVDESS 16 kHz FLAC folder (Actor_*/)")
    print(json.dumps(seeds_pass(warm_seeds_paths(ap.parse_args().data))))


if __name__ == "__main__":
    main()
