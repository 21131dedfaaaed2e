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
encoder, the MLP, the database writes). ``uptime`` is recorded before and after, and the load average
at the start of every round: other jobs on the same cores slow all three, and the interleaved rounds
keep each round's ratios fair. Writes ``benchmarks/results/models_throughput.md`` and ``.json``.

:func:`measure` and :func:`section` are also the ``models`` section of ``benchmarks/throughput.py``
(``throughput.md``), so both reports come from this one implementation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"accurate": 1.0, "fast": 4.0}
"""Issue 18: end-to-end files/s of each packaged model as a multiple of the seeds' extractor's files/s."""
MODELS = {"accurate": "ser_model/models/default.npz", "fast": "ser_model/models/fast.npz"}


def _exe() -> list[str]:
    """This interpreter's ``ser-batch`` (its venv's console script), never another checkout's on PATH."""
    script = Path(sys.executable).with_name("ser-batch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "producer.cli"]


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _busy_cpu() -> float | None:
    """CPU seconds every process of the machine has used since boot (``/proc/stat``), None where unreadable."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _submit(data: str, extra: list[str], folder: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the command and its pool processes) of one ``ser-batch submit DATA -q``
    on a migrated, empty database in ``folder``."""
    db = folder / f"ser-{time.monotonic_ns()}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_DATABASE_URL"] = f"sqlite:///{db}"
    subprocess.run([*_exe(), "db", "upgrade"], env=env, check=True, capture_output=True, cwd=REPO)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run([*_exe(), "submit", data, "-q", *extra], env=env, capture_output=True, text=True, cwd=REPO)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if p.returncode not in (0, 3):
        raise SystemExit(f"submit {' '.join(extra)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return wall, cpu


def _seeds(data: str) -> dict[str, float]:
    """One warm pass of the seeds' extractor in its own process: ``files_per_s``, ``cpu_ms_per_file``."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput_seeds.py"), data],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def uptime() -> str:
    """``uptime``'s line (the load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(data: str, rounds: int) -> dict[str, Any]:
    """Warm-up, then ``rounds`` interleaved rounds of the seeds' extractor, ``submit`` and ``submit --model fast``.

    Returns:
        ``files``, ``cores``, ``rounds`` (per round: ``seeds``, ``accurate``, ``fast`` files/s, their CPU
        ms per file (``*_cpu_ms``: the seeds' extraction thread; ``submit`` and its pool processes, start-up
        included), the two ratios, ``load_1min`` at the round's start and ``others_cores``: the CPU other
        processes of the machine used during the round, in cores), ``median`` of each column,
        ``uptime_before`` / ``uptime_after``, ``seconds`` (the whole measurement) and ``models`` (SHA-256
        of each bundle).
    """
    n = len(list(Path(data).rglob("*.flac")))
    t_start = time.perf_counter()
    up0 = uptime()
    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        _submit(data, ["--model", "fast"], Path(tmp))  # warm-up: caches, numba, the encoder file
        _submit(data, [], Path(tmp))
        for i in range(rounds):
            busy0, ours0, t0 = _busy_cpu(), _children_cpu(), time.perf_counter()
            r: dict[str, float] = {"load_1min": os.getloadavg()[0]}
            seeds = _seeds(data)
            r["seeds"], r["seeds_cpu_ms"] = float(seeds["files_per_s"]), float(seeds["cpu_ms_per_file"])
            for model, extra in (("accurate", []), ("fast", ["--model", "fast"])):
                wall, cpu = _submit(data, extra, Path(tmp))
                r[model], r[f"{model}_cpu_ms"] = n / wall, 1000 * cpu / n
                r[f"{model}_ratio"] = r[model] / r["seeds"]
            busy1 = _busy_cpu()
            if busy0 is not None and busy1 is not None:  # what the rest of the machine used meanwhile, in cores
                others = (busy1 - busy0) - (_children_cpu() - ours0)
                r["others_cores"] = max(0.0, others / (time.perf_counter() - t0))
            out.append(r)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    return {
        "files": n,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "rounds": out,
        "median": {k: statistics.median(r[k] for r in out) for k in out[0]},
        "uptime_before": up0,
        "uptime_after": uptime(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),  # when the last round finished
        "models": {
            k: hashlib.sha256((REPO / p).read_bytes()).hexdigest()[:16]
            for k, p in MODELS.items()
            if (REPO / p).exists()
        },
    }


QUIET_CORES = 0.25
"""A round is *quiet* when the rest of the machine used less than this many cores during it."""


def _cell(r: dict[str, float], key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "–"


def section(res: dict[str, Any], heading: str = "#", made_by: str = "") -> list[str]:
    """Markdown of :func:`measure`'s result: the rounds, the medians, the targets and the machine's load."""
    rounds, med, n, cores = res["rounds"], res["median"], res["files"], res["cores"]
    has_cpu = all("seeds_cpu_ms" in r and "accurate_cpu_ms" in r for r in rounds)
    has_others = all("others_cores" in r for r in rounds)
    lines = [
        f"{heading} End to end: the two packaged models against the seeds' extractor (issue 18)",
        "",
        *([made_by, ""] if made_by else []),
        f"{n:,} RAVDESS files (16 kHz FLAC), {cores} cores, {len(rounds)} interleaved round"
        f"{'s' if len(rounds) != 1 else ''} "
        f"({res['seconds'] / 60:.1f} min, finished {res.get('date', '(date not recorded)')}). Each round: the seeds' "
        "extractor, "
        "warm, in a process of its own (one pass over the files; it decodes and computes 180 means, nothing else), "
        "then `ser-batch submit DATA -q` with its defaults -- the **default (accurate)** model -- and "
        "`ser-batch submit DATA -q --model fast`, each on a database migrated before the clock starts, files/s from "
        "command start to exit (start-up, decoding, features, the speech encoder, the MLP, the result rows). A "
        "round's ratios divide files/s measured within a minute of each other."
        + (
            " Bundles: " + ", ".join(f"{k} `{MODELS[k]}` (SHA-256 {v}...)" for k, v in res["models"].items()) + "."
            if res.get("models")
            else ""
        ),
        "",
        "| round | other jobs' CPU during the round (cores) | load (1 min) at its start | seeds' extractor files/s "
        "| default (accurate) files/s | ratio | fast files/s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {_cell(r, 'others_cores', '.2f')} | {_cell(r, 'load_1min', '.2f')} | {r['seeds']:.1f} "
            f"| {r['accurate']:.1f} | {r['accurate_ratio']:.2f}x | {r['fast']:.1f} | {r['fast_ratio']:.2f}x |"
        )
    lines.append(
        f"| **median** | | | **{med['seeds']:.1f}** | **{med['accurate']:.1f}** | **{med['accurate_ratio']:.2f}x** "
        f"| **{med['fast']:.1f}** | **{med['fast_ratio']:.2f}x** |"
    )
    quiet = [r for r in rounds if r.get("others_cores", 0.0) < QUIET_CORES] if has_others else []
    if has_cpu:
        lines += [
            "",
            f"CPU time per file (the seeds' extraction thread; `submit` with its pool processes, start-up included) "
            f"and the ratio it allows on {cores} idle cores (the seeds' extractor uses one core, `submit` all "
            f"{cores}: {cores} x seeds' CPU ms / the command's CPU ms, an upper bound that treats start-up as "
            "parallel). Other jobs on the cores stretch wall time far more than CPU time:",
            "",
            "| round | seeds' CPU ms/file | default CPU ms/file | CPU-time bound | fast CPU ms/file | CPU-time bound |",
            "|---|---|---|---|---|---|",
        ]
        bounds: dict[str, list[float]] = {"accurate": [], "fast": []}
        for i, r in enumerate(rounds, 1):
            cells = []
            for m in bounds:
                b = cores * r["seeds_cpu_ms"] / r[f"{m}_cpu_ms"]
                bounds[m].append(b)
                cells.append(f"{r[f'{m}_cpu_ms']:.1f} | {b:.2f}x")
            lines.append(f"| {i} | {r['seeds_cpu_ms']:.1f} | " + " | ".join(cells) + " |")
        lines.append(
            f"| **median** | **{med['seeds_cpu_ms']:.1f}** | "
            + " | ".join(
                f"**{med[f'{m}_cpu_ms']:.1f}** | **{statistics.median(bounds[m]):.2f}x**" for m in ("accurate", "fast")
            )
            + " |"
        )
    lines += ["", "Targets (issue 18, files/s end to end as a multiple of the seeds' extractor's):", ""]
    for model, goal in TARGETS.items():
        ratios = [r[f"{model}_ratio"] for r in rounds]
        name = "default (accurate)" if model == "accurate" else "fast"
        verdict = "**met**" if med[f"{model}_ratio"] >= goal else "**not met**"
        text = (
            f"- {name} >= {goal:g}x: {verdict} on the median of all rounds ({med[f'{model}_ratio']:.2f}x); "
            f"{sum(x >= goal for x in ratios)} of {len(ratios)} rounds at or above it "
            f"({min(ratios):.2f}-{max(ratios):.2f}x)"
        )
        if has_others and 0 < len(quiet) < len(rounds):
            q = statistics.median(r[f"{model}_ratio"] for r in quiet)
            text += (
                f"; in the {len(quiet)} round{'s' if len(quiet) != 1 else ''} where other jobs used under "
                f"{QUIET_CORES:g} cores, median {q:.2f}x"
            )
        if has_cpu:
            bound = statistics.median(cores * r["seeds_cpu_ms"] / r[f"{model}_cpu_ms"] for r in rounds)
            text += f"; CPU-time bound {bound:.2f}x"
        lines.append(text + ".")
    if "uptime_before" in res:
        lines += [
            "",
            f"Machine load: `uptime` before the warm-up `{res['uptime_before']}`, after the last round "
            f"`{res['uptime_after']}`. Other engineers' jobs may share these cores. The rounds interleave the three "
            "measurements so that each round's ratio compares runs taken within a minute of each other, but that is "
            "fair only while the cores are free: other jobs do not slow the three alike -- the seeds' extractor runs "
            f"in one process, `submit` in {cores}, and a job that starts or stops within a round hits whichever run "
            "it overlaps. Hence the column of what other processes used during each round (from `/proc/stat`, minus "
            "this benchmark's own processes) and the CPU-time table, which other jobs move far less.",
        ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="RAVDESS 16 kHz FLAC folder (Actor_*/)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/models_throughput")
    a = ap.parse_args()
    res = measure(a.data, a.rounds)
    Path(a.out + ".json").write_text(json.dumps(res, indent=1) + "\n")
    made_by = (
        "Made by `python benchmarks/models_throughput.py` (the same measurement as the `models` section of "
        "`benchmarks/throughput.py`)."
    )
    Path(a.out + ".md").write_text("\n".join(section(res, made_by=made_by)) + "\n")
    print(f"wrote {a.out}.md")


if __name__ == "__main__":
    main()
