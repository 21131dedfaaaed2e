"""Throughput sections "side" and "e2e": the whole ``ser-batch`` command, end to end.

- :func:`side_by_side`: the seeds' extractor (``benchmarks/throughput_seeds.py``, in its own process
  and in this one) and ``ser-batch submit`` on the same files, interleaved round by round.
- :func:`end_to_end`: embedded ``submit -j 1`` / ``-j 2``, its peak RSS, distributed mode (redis-server,
  PostgreSQL, 1 or 2 worker processes), and the first result of a fresh worker (:func:`first_result`).

Run by ``benchmarks/throughput.py``, which puts ``benchmarks`` (``distributed``) and
``tests/integration`` (``services``) on ``sys.path``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from throughput_seeds import seeds_pass, warm_seeds_paths

REPO = Path(__file__).resolve().parents[1]
SEEDS_SCRIPT = Path(__file__).with_name("throughput_seeds.py")
"""Run as a script: one warm pass of the seeds' extractor in a process of its own, printed as JSON."""


def side_by_side(data: str, rounds: int) -> list[dict[str, Any]]:
    """The seeds' extractor and ``ser-batch submit`` on the same files, interleaved round by round.

    Each round: one pass of the seeds' extractor over every FLAC, warm (imports done, numba functions
    compiled), in a process of its own with glibc's default allocator settings as the seeds ran it, and
    again in this process, whose malloc thresholds are set as in a ser-batch worker
    (:func:`worker.settings.tune_malloc`, which speeds the seeds' extractor up too); then ``ser-batch submit DATA`` with its defaults (``-j 2``, its own chunk size)
    on a database created before the clock starts (as on every run after a user's first), on a new
    database file (the command runs the migrations), and with ``-j 1`` on an existing database.
    Interleaving exposes all of them to the same moments of the machine's load; the ratio of a round
    divides files/s measured within a minute of each other.

    Returns:
        One dict per round: ``seeds`` (files/s, CPU ms/file) and the three ``submit`` runs.
    """
    from distributed import run_embedded
    from services import temp_dir

    paths = warm_seeds_paths(data)
    tmp = temp_dir("ser-side-")
    out: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            # as the seeds ran it: its own process, glibc's default malloc thresholds
            p = subprocess.run([sys.executable, str(SEEDS_SCRIPT), data], capture_output=True, text=True, check=True)
            seeds = json.loads(p.stdout.strip().splitlines()[-1])
            # and in this process, whose malloc thresholds are set as in a ser-batch worker
            seeds_tuned = seeds_pass(paths)
            runs = {
                "existing_db_j2": run_embedded(data, tmp, name=f"sbs{r}_ex2", jobs=2, chunk=None, existing_db=True),
                "new_db_j2": run_embedded(data, tmp, name=f"sbs{r}_new2", jobs=2, chunk=None),
                "existing_db_j1": run_embedded(data, tmp, name=f"sbs{r}_ex1", jobs=1, chunk=None, existing_db=True),
            }
            out.append({"round": r, "files": len(paths), "seeds": seeds, "seeds_tuned_malloc": seeds_tuned, **runs})
            print(json.dumps(out[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def end_to_end(data: str, repeats_embedded: int, repeats_distributed: int) -> list[dict[str, Any]]:
    """Embedded -j 1 / -j 2 and distributed (2 worker processes) files/s, plus first-result latency."""
    from distributed import run_distributed, run_embedded
    from services import PostgresCluster, RedisServer, temp_dir

    rows: list[dict[str, Any]] = []
    tmp = temp_dir("ser-throughput-")
    try:
        for r in range(repeats_embedded):
            for jobs in (1, 2):
                # the command's defaults (its own chunk size), database created before the clock starts,
                # as for the distributed runs (their `db upgrade` precedes the clock too)
                rows.append(run_embedded(data, tmp, name=f"emb{jobs}_r{r}", jobs=jobs, chunk=None, existing_db=True))
                print(json.dumps(rows[-1]), flush=True)
        rows.append({"mode": "rss", "name": "embedded -j 2", "peak_rss_mb": embedded_peak_rss(data, tmp)})
        redis = RedisServer(tmp / "redis").start()
        pg = PostgresCluster(tmp / "pg").start()
        try:
            for r in range(repeats_distributed):
                for ws in ([1], [2], [1, 1]):
                    n = "_".join(map(str, ws))
                    rows.append(run_distributed(data, pg, redis, tmp, name=f"w{n}_r{r}", workers=ws, chunk=None))
                    print(json.dumps(rows[-1]), flush=True)
            for via_cli in (True, False):
                for r in range(2):
                    name = f"first_{'cli' if via_cli else 'celery'}_r{r}"
                    rows.append(first_result(data, pg, redis, tmp, name=name, via_cli=via_cli))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            pg.stop()
            redis.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def embedded_peak_rss(data: str, tmp: Path) -> float | None:
    """Largest RSS (MB) of ``ser-batch submit DATA -j 2`` and its pool processes, via GNU time's wait4."""
    from services import service_env

    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return None
    env = service_env(f"sqlite:///{tmp / 'rss.db'}", None)
    cmd = [str(gnu_time), "-f", "%M", sys.executable, "-m", "producer.cli", "submit", data, "-j", "2", "-q"]
    p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    return round(int(p.stderr.strip().splitlines()[-1]) / 1024, 1)


def first_result(data: str, pg: Any, redis: Any, tmp: Path, *, name: str, via_cli: bool) -> dict[str, Any]:
    """Queue a batch with no worker running, start a worker with ``-c 1``, time the first done row.

    ``via_cli``: ``ser-batch worker`` (checks settings, migrates/registers the default model, then
    execs Celery) instead of the plain ``celery -A worker.celery_app worker`` command.
    """
    from services import ser_batch, service_env, start_worker
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, get_engine

    url = pg.create_database(name)
    redis.client().flushall()
    env = service_env(url, redis.url)
    p = ser_batch(["db", "upgrade"], env)
    assert p.returncode == 0, p.stderr
    one = tmp / f"{name}-files"
    one.mkdir()
    for src in sorted(Path(data).glob("Actor_01/*.flac"))[:8]:
        (one / src.name).symlink_to(src)
    p = ser_batch(["submit", str(one), "-q"], env)  # no --wait: queued, nobody consumes yet
    assert p.returncode == 0, p.stderr
    eng = get_engine(url)
    t0 = time.perf_counter()
    w = start_worker(env, tmp / "logs", name=name, concurrency=1, via_cli=via_cli)
    try:
        first = None
        while time.perf_counter() - t0 < 120:
            with Session(eng) as s:
                if s.scalar(select(func.count()).where(Result.status == "done")):
                    first = time.perf_counter() - t0
                    break
            time.sleep(0.02)
        ready = None
        for line in w.log().splitlines():
            if " ready." in line:
                ready = True
    finally:
        w.stop()
    eng.dispose()
    return {
        "mode": "first-result",
        "name": name,
        "command": "ser-batch worker" if via_cli else "celery worker",
        "first_result_s": round(first, 2) if first else None,
        "ready": ready,
    }
