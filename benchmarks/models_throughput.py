"""End-to-end files/s of the two packaged models against the seeds' extractor, side by side (issue 18).

Usage (from the repository root)::

    python benchmarks/models_throughput.py ../shared/data/ravdess --rounds 3

Each round, interleaved so that all three meet the same moments of the machine's load:

1. the seeds' extractor over every FLAC of DATA, warm, in a process of its own
   (``benchmarks/throughput_seeds.py``: the yardstick of issues 6 and 14);
2. ``ser-batch submit DATA -q`` with its defaults: the **default (accurate)** model, all cores;
3. ``ser-batch submit DATA -q --model fast``: the **fast** model.

Both ``submit`` runs use a database created (migrated) before the clock starts, as on every run after a
user's first, and are timed from command start to exit (start-up, decoding, features, the speech
encoder, the MLP, the database writes). Writes ``benchmarks/results/models_throughput.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _exe() -> list[str]:
    found = shutil.which("ser-batch")
    return [found] if found else [sys.executable, "-m", "producer.cli"]


def _submit(data: str, extra: list[str], folder: Path) -> float:
    """Wall seconds of one ``ser-batch submit DATA -q`` on a migrated, empty database in ``folder``."""
    db = folder / f"ser-{time.monotonic_ns()}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_DATABASE_URL"] = f"sqlite:///{db}"
    subprocess.run([*_exe(), "db", "upgrade"], env=env, check=True, capture_output=True, cwd=REPO)
    t0 = time.perf_counter()
    p = subprocess.run([*_exe(), "submit", data, "-q", *extra], env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 3):
        raise SystemExit(f"submit {' '.join(extra)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return wall


def _seeds(data: str) -> float:
    """files/s of one warm pass of the seeds' extractor in its own process."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput_seeds.py"), data],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["files_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="RAVDESS 16 kHz FLAC folder (Actor_*/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/models_throughput")
    a = ap.parse_args()
    n = len(list(Path(a.data).rglob("*.flac")))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        _submit(a.data, ["--model", "fast"], Path(tmp))  # warm-up: caches, numba, the encoder file
        _submit(a.data, [], Path(tmp))
        for i in range(a.rounds):
            r = {"seeds": _seeds(a.data)}
            r["accurate"] = n / _submit(a.data, [], Path(tmp))
            r["fast"] = n / _submit(a.data, ["--model", "fast"], Path(tmp))
            r["accurate_ratio"] = r["accurate"] / r["seeds"]
            r["fast_ratio"] = r["fast"] / r["seeds"]
            rounds.append(r)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    res = {"files": n, "cores": os.cpu_count(), "rounds": rounds, "median": med}
    Path(a.out + ".json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "# End to end: the two packaged models against the seeds' extractor",
        "",
        f"Made by `python benchmarks/models_throughput.py` ({n} RAVDESS files, {os.cpu_count()} cores, "
        f"{len(rounds)} interleaved rounds). files/s from command start to exit; the seeds' extractor "
        "warm in its own process.",
        "",
        "| round | seeds' extractor files/s | default (accurate) files/s | ratio | fast files/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r['seeds']:.1f} | {r['accurate']:.1f} | {r['accurate_ratio']:.2f}x "
            f"| {r['fast']:.1f} | {r['fast_ratio']:.2f}x |"
        )
    lines.append(
        f"| median | {med['seeds']:.1f} | {med['accurate']:.1f} | {med['accurate_ratio']:.2f}x "
        f"| {med['fast']:.1f} | {med['fast_ratio']:.2f}x |"
    )
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}.md")


if __name__ == "__main__":
    main()
