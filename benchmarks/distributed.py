"""Throughput of distributed mode (Redis + PostgreSQL + Celery workers) next to embedded mode.

Starts its own redis-server and PostgreSQL cluster (as tests/integration does), then for each
configuration: a fresh database, warmed-up workers, ``ser-batch submit DIR`` and the wall time from
the start of ``submit`` until no row of the batch is pending. Embedded mode runs ``ser-batch submit
DIR -j N`` on a fresh SQLite file, timed the same way (its time includes its own start-up).

Usage::

    NUMBA_CACHE_DIR=/tmp/numbacache python benchmarks/distributed.py /work/shared/data/ravdess \\
        --out benchmarks/results/distributed

Writes ``results.json`` and ``results.md`` (a table of files/s) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from services import (  # noqa: E402
    PostgresCluster,
    RedisServer,
    ser_batch,
    service_env,
    start_worker,
    temp_dir,
)


def _wait_done(database_url: str, timeout_s: float = 1800.0) -> dict[str, int]:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, batch_counts, get_engine

    end = time.monotonic() + timeout_s
    eng = get_engine(database_url)
    while time.monotonic() < end:
        with Session(eng) as s:
            bid = s.scalar(select(func.max(Batch.id)))
            if bid is not None:
                c = batch_counts(s, bid)
                if c["total"] and c["pending"] == 0:
                    return c
        time.sleep(0.05)
    raise TimeoutError("batch not finished")


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, *, with_reaped: bool = True) -> float:
    """CPU seconds (user + system) of process ``pid``, plus its reaped children's when ``with_reaped``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _pg_cpu(pg: PostgresCluster) -> float:
    """CPU seconds of the PostgreSQL server: postmaster (with reaped backends) + live backends."""
    pid = int((pg.folder / "data" / "postmaster.pid").read_text().split()[0])
    return _proc_cpu(pid) + sum(_proc_cpu(c, with_reaped=False) for c in _children(pid))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_distributed(
    data: str,
    pg: PostgresCluster,
    redis: RedisServer,
    tmp: Path,
    *,
    name: str,
    workers: list[int],
    chunk: int | None,
) -> dict[str, Any]:
    """One distributed run: ``workers`` lists the concurrency of each worker process started.

    ``chunk``: ``SER_CHUNK_SIZE``; None: its default.
    """
    url = pg.create_database(name)
    redis.client().flushall()
    env = service_env(url, redis.url, **({} if chunk is None else {"SER_CHUNK_SIZE": str(chunk)}))
    p = ser_batch(["db", "upgrade"], env)
    assert p.returncode == 0, p.stderr
    cpu_before = _children_cpu()
    procs = [start_worker(env, tmp / "logs", name=f"{name}-w{i}", concurrency=c) for i, c in enumerate(workers)]
    try:
        for w in procs:
            w.wait_ready()
        # CPU spent on start-up and warm-up (main processes; pool processes have not worked yet)
        warm_cpu = sum(_proc_cpu(w.proc.pid) for w in procs)
        redis_cpu0, pg_cpu0 = _proc_cpu(redis.proc.pid), _pg_cpu(pg)  # type: ignore[union-attr]
        t0 = time.perf_counter()
        p = ser_batch(["submit", data, "-q"], env)
        assert p.returncode == 0, p.stderr
        t_enqueued = time.perf_counter() - t0
        counts = _wait_done(url)
        wall = time.perf_counter() - t0
    finally:
        for w in procs:
            w.stop()
    time.sleep(0.5)  # let the postmaster reap the workers' backends
    redis_cpu = _proc_cpu(redis.proc.pid) - redis_cpu0  # type: ignore[union-attr]
    pg_cpu = _pg_cpu(pg) - pg_cpu0
    workers_cpu = _children_cpu() - cpu_before - warm_cpu  # pool processes + main loops + the submit CLI
    return {
        "mode": "distributed",
        "name": name,
        "worker_processes": sum(workers),
        "workers": workers,
        "chunk_size": chunk,
        "files": counts["total"],
        "done": counts["done"],
        "failed": counts["failed"],
        "submit_s": round(t_enqueued, 2),
        "wall_s": round(wall, 2),
        "files_per_s": round(counts["total"] / wall, 1),
        "cpu_ms_per_file": round(1000 * (workers_cpu + redis_cpu + pg_cpu) / counts["total"], 1),
        "cpu_ms_per_file_workers": round(1000 * workers_cpu / counts["total"], 1),
        "cpu_ms_per_file_redis": round(1000 * redis_cpu / counts["total"], 2),
        "cpu_ms_per_file_postgres": round(1000 * pg_cpu / counts["total"], 2),
    }


def run_embedded(
    data: str, tmp: Path, *, name: str, jobs: int, chunk: int | None, existing_db: bool = False
) -> dict[str, Any]:
    """One embedded run of ``ser-batch submit DATA -j JOBS`` on a new SQLite file.

    Args:
        chunk: ``--chunk-size``; None: the command's own choice (embedded: about 4 units per process).
        existing_db: create the database (``ser-batch db upgrade``) before the clock starts, as it is
            on every run after a user's first; otherwise the timed command creates it (migrations).
    """
    db = tmp / f"{name}.db"
    env = service_env(f"sqlite:///{db}", None)
    if existing_db:
        p = ser_batch(["db", "upgrade"], env)
        assert p.returncode == 0, p.stderr
    opts = [] if chunk is None else ["--chunk-size", str(chunk)]
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    p = ser_batch(["submit", data, "-j", str(jobs), *opts, "-q"], env)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0  # includes its start-up (imports, model load, warm-up)
    assert p.returncode in (0, 3), p.stderr
    counts = _wait_done(env["SER_DATABASE_URL"], timeout_s=10)
    # the command's own summary: seconds from the warm-up to the last row (start-up, walk, pending
    # rows and model load excluded)
    m = re.search(r"file\(s\) in ([0-9.]+) s", p.stdout)
    classify_s = float(m.group(1)) if m else None
    return {
        "mode": "embedded",
        "name": name,
        "worker_processes": jobs,
        "chunk_size": chunk,
        "existing_db": existing_db,
        "files": counts["total"],
        "done": counts["done"],
        "failed": counts["failed"],
        "wall_s": round(wall, 2),
        "files_per_s": round(counts["total"] / wall, 1),
        "cpu_ms_per_file": round(1000 * cpu / counts["total"], 1),
        "classify_s": classify_s,
        "classify_files_per_s": round(counts["total"] / classify_s, 1) if classify_s else None,
    }


def main() -> None:
    """Run the configurations and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="folder of recordings (e.g. the 1,200 RAVDESS files)")
    ap.add_argument("--out", default="benchmarks/results/distributed")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunks", default="1,8,32", help="chunk sizes to compare (2 worker processes)")
    ap.add_argument("--chunk", type=int, default=None, help="chunk size of the 1-vs-2-process runs")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numbacache")
    tmp = temp_dir("ser-bench-")
    redis = RedisServer(tmp / "redis").start()
    pg = PostgresCluster(tmp / "pg").start()
    rows: list[dict[str, Any]] = []
    try:
        chunks = [int(c) for c in args.chunks.split(",") if c]
        chunk = args.chunk or 8
        for r in range(args.repeats):
            for c in chunks:
                rows.append(run_distributed(args.data, pg, redis, tmp, name=f"c{c}_r{r}", workers=[2], chunk=c))
                print(json.dumps(rows[-1]), flush=True)
            for jobs in (1, 2):
                rows.append(run_embedded(args.data, tmp, name=f"emb{jobs}_r{r}", jobs=jobs, chunk=chunk))
                print(json.dumps(rows[-1]), flush=True)
            for ws in ([1], [1, 1]):
                n = "_".join(map(str, ws))
                rows.append(run_distributed(args.data, pg, redis, tmp, name=f"w{n}_r{r}", workers=ws, chunk=chunk))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        pg.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    (out / "results.json").write_text(json.dumps({"machine": meta, "runs": rows}, indent=2) + "\n")
    text = summarise(meta, rows)
    (out / "results.md").write_text(text)
    print(text)


def summarise(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Markdown: the median files/s of each configuration over the repeats, then every run."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["mode"], r["worker_processes"], str(r.get("workers", "-")), r["chunk_size"]), []).append(r)
    lines = [
        f"# Distributed vs embedded throughput ({meta['cpus']} CPUs, {meta['platform']})",
        "",
        "Median over the repeats (all runs below). Wall time from the start of `ser-batch submit` until",
        "no row is pending; embedded includes its start-up, distributed workers were started and warm.",
        "",
        "| mode | worker processes | workers | chunk size | runs | files/s (median) | range | CPU ms/file (median) |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for (mode, procs, workers, chunk), rs in groups.items():
        rates = sorted(r["files_per_s"] for r in rs)
        cpus = [r["cpu_ms_per_file"] for r in rs if "cpu_ms_per_file" in r]
        cpu = f"{statistics.median(cpus):.1f}" if cpus else "-"
        lines.append(
            f"| {mode} | {procs} | {workers} | {chunk} | {len(rs)} | {statistics.median(rates):.1f} | "
            f"{rates[0]}-{rates[-1]} | {cpu} |"
        )
    lines += ["", "| mode | worker processes | workers | chunk size | files | wall (s) | files/s |"]
    lines += ["| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['worker_processes']} | {r.get('workers', '-')} | {r['chunk_size']} | "
            f"{r['files']} | {r['wall_s']} | {r['files_per_s']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
