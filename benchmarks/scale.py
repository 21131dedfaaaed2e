"""Scale: reading a batch of 10k / 100k / 1M rows back (exports, report, diff) and submitting 1M files.

For each database (SQLite file, PostgreSQL cluster started here as tests/integration does) and each
size N, a database is made by ``ser-batch db upgrade`` and filled with SQL (no audio is decoded):
batch 1 has N finished rows (1 % failed, 1,000 files per folder, the eight emotions, probabilities,
trust flags), batch 2 the same paths with 10 % of the labels changed (as a ``rescore`` would), and a
registered model ``bench-v1``; each batch is then finalised by ser-batch's own finaliser
(``worker.engine.finalise``: status, counts, trust counters, warnings), as the last row of a real batch
does. Then each command runs as a user runs it, in a fresh process, under
``/usr/bin/time -f "%e %M"`` (wall seconds, peak RSS in KB):

- ``status`` (the latest batch, as a user asks) and ``status 1``, both final; ``status 1`` again with the
  batch marked running (counted live from its rows); ``config`` (the same process start-up, no table
  read) as the floor;
- ``results --batch 1 --format csv|jsonl|json -o FILE``; ``report 1``;
  ``labels export 1 --count 200``; ``diff 1 2 --format csv -o FILE``;
- the database's own CSV dump of the same rows and columns as the yardstick: ``sqlite3 -csv`` and
  ``psql -c "\\copy (SELECT ...) TO ... CSV HEADER"``;
- ``submit DIR`` of N empty ``.wav`` files in distributed mode (a redis-server here, no worker: the
  batch is recorded and every chunk enqueued), with the Redis memory per queued message.

Every export is checked to hold every row (line count or JSON length).

Usage::

    python benchmarks/scale.py --sizes 10000 100000 1000000 --dbs sqlite postgresql \\
        --out benchmarks/results/scale.md

``--only status status_latest status_running status_query startup`` measures those commands alone (the rest of
each size's entry in the JSON is kept), e.g. ``--sizes 1000000 --dbs sqlite --only status status_latest
status_running startup``.

Temporary databases and files go under ``--tmp`` (default a fresh folder in /tmp) and are deleted
at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from services import PostgresCluster, RedisServer, temp_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MODEL = "bench-v1"


def _exe() -> list[str]:
    exe = shutil.which("ser-batch", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "producer.cli"]


def _env(url: str, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    e.update({"SER_DATABASE_URL": url, "COLUMNS": "200", **extra})
    return e


def timed(argv: list[str], env: dict[str, str] | None = None, stdout: Path | None = None) -> dict[str, Any]:
    """Run ``argv`` under ``/usr/bin/time``; wall seconds and peak RSS (MB) of the process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        out = stdout.open("w") if stdout else subprocess.DEVNULL
        try:
            p = subprocess.run(
                ["/usr/bin/time", "-o", tf.name, "-f", "%e %M", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
        finally:
            if stdout:
                out.close()  # type: ignore[union-attr]
        wall, kb = tf.read().split()[-2:]
    if p.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr[-800:]}")
    return {"s": float(wall), "rss_mb": round(int(kb) / 1024, 1)}


# ------------------------------------------------------------------------------------------ data


def _fill_sql(dialect: str, batch_id: int, n: int, changed_every: int) -> str:
    """One INSERT ... SELECT writing ``n`` finished rows of ``batch_id`` (rows ``i % changed_every == 0``
    get the next emotion, so a second batch differs from the first in 1/changed_every of its files)."""
    shift = f"CASE WHEN i % {changed_every} = 0 THEN 1 ELSE 0 END" if changed_every else "0"
    if dialect == "sqlite":
        seq = f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1})"
        emo = "json_extract('" + json.dumps(list(EMOTIONS)) + "', '$[' || k || ']')"
        path = "'/archive/d' || printf('%04d', i / 1000) || '/call' || printf('%07d', i) || '.wav'"
        probs = (
            "json_object("
            + ", ".join(f"'{e}', CASE WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS))
            + ")"
        )
        now, true, false = "'2026-01-01 00:00:00.000000'", "1", "0"
        src = f"{seq} SELECT i, ((i + {shift}) % 8) AS k, 0.2 + 0.8 * ((i * 37) % 1000) / 1000.0 AS c FROM seq"
    else:
        emo = "(ARRAY[" + ", ".join(f"'{e}'" for e in EMOTIONS) + "])[k + 1]"
        path = "'/archive/d' || lpad((i / 1000)::text, 4, '0') || '/call' || lpad(i::text, 7, '0') || '.wav'"
        probs = (
            "json_build_object("
            + ", ".join(f"'{e}', CASE WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS))
            + ")"
        )
        now, true, false = "'2026-01-01 00:00:00+00'::timestamptz", "true", "false"
        src = f"SELECT i, ((i + {shift}) % 8) AS k, 0.2 + 0.8 * ((i * 37) % 1000) / 1000.0 AS c FROM generate_series(0, {n - 1}) AS i"
    failed = "i % 100 = 0"
    p_cols = ", ".join(f"p_{e}" for e in EMOTIONS)
    p_vals = ", ".join(
        f"CASE WHEN {failed} THEN NULL WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS)
    )
    return f"""
INSERT INTO results (batch_id, path, status, emotion, confidence, probabilities, {p_cols}, error, model_version,
    low_confidence, out_of_domain, ood_score, duration_s, sample_rate, channels, size_bytes, sha256, processing_ms,
    finished_at, analysis_mode, n_segments, created_at, updated_at, attempts)
SELECT {batch_id}, {path},
    CASE WHEN {failed} THEN 'failed' ELSE 'done' END,
    CASE WHEN {failed} THEN NULL ELSE {emo} END,
    CASE WHEN {failed} THEN NULL ELSE c END,
    CASE WHEN {failed} THEN NULL ELSE {probs} END,
    {p_vals},
    CASE WHEN {failed} THEN 'cannot decode: not an audio file' ELSE NULL END,
    {f"'{MODEL}'"},
    CASE WHEN {failed} THEN NULL WHEN c < 0.35 THEN {true} ELSE {false} END,
    CASE WHEN {failed} THEN NULL WHEN i % 50 = 1 THEN {true} ELSE {false} END,
    CASE WHEN {failed} THEN NULL ELSE 0.5 + (i % 97) / 50.0 END,
    CASE WHEN {failed} THEN NULL ELSE 2.0 + (i % 300) / 100.0 END,
    16000, 1, 64000 + i % 5000, NULL, 12.5, {now}, 'utterance', NULL, {now}, {now}, 1
FROM ({src}) AS gen
"""


def fill(url: str, n: int) -> float:
    """Batches 1 and 2 of ``n`` rows each and the model ``bench-v1``; returns the seconds it took."""
    from sqlalchemy import create_engine, text

    t0 = time.perf_counter()
    eng = create_engine(url)
    dialect = eng.dialect.name
    with eng.begin() as conn:
        now = "'2026-01-01 00:00:00.000000'" if dialect == "sqlite" else "now()"
        conn.execute(
            text(
                "INSERT INTO models (version, created_at, labels, metrics, checksum, feature_version, active, source)"
                f" VALUES ('{MODEL}', {now}, :labels, '{{}}', 'x', 'bench', {'1' if dialect == 'sqlite' else 'true'}, 'db')"
            ),
            {"labels": json.dumps(list(EMOTIONS))},
        )
        for bid, changed in ((1, 0), (2, 10)):
            conn.execute(
                text(
                    "INSERT INTO batches (id, created_at, finished_at, source_paths, status, mode, n_files, n_done,"
                    f" n_failed, n_ignored, options) VALUES ({bid}, {now}, {now}, '[\"/archive\"]',"
                    f" 'done_with_failures', 'embedded', {n}, {n - (n + 99) // 100}, {(n + 99) // 100}, 0,"
                    f" '{{\"rescore_of\": 1}}')"
                    if bid == 2
                    else "INSERT INTO batches (id, created_at, finished_at, source_paths, status, mode, n_files, n_done,"
                    f" n_failed, n_ignored, options) VALUES ({bid}, {now}, {now}, '[\"/archive\"]',"
                    f" 'done_with_failures', 'embedded', {n}, {n - (n + 99) // 100}, {(n + 99) // 100}, 0, '{{}}')"
                )
            )
            conn.execute(text(_fill_sql(dialect, bid, n, changed)))
            # until its finaliser has run (below), the batch is what it is while its rows are written
            conn.execute(text(f"UPDATE batches SET status = 'running', finished_at = NULL WHERE id = {bid}"))
        if dialect == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('batches', 'id'), 2)"))
    if dialect == "postgresql":
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE results"))
    else:
        with eng.begin() as conn:
            conn.execute(text("ANALYZE"))
    eng.dispose()
    from worker.engine.finalise import finalise_if_complete

    for bid in (1, 2):  # status, n_done/n_failed, trust counters and warnings, as a real batch's last row sets them
        if finalise_if_complete(bid, url=url) is None:
            raise RuntimeError(f"batch {bid} was not finalised")
    from worker.storage.db import close_engines

    close_engines()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ measuring


def _lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def yardstick_sql() -> str:
    """The SELECT of the database's own dump: the columns of ``results --format csv``, same rows, same order."""
    from producer.tables import RESULT_COLUMNS

    cols = ", ".join([*RESULT_COLUMNS, *(f"p_{e}" for e in EMOTIONS)])
    return f"SELECT {cols} FROM results WHERE batch_id = 1 ORDER BY batch_id, id"


def make_files(root: Path, n: int) -> Path:
    """``n`` empty ``.wav`` files, 1,000 per folder (the walk and the record, not the audio, are measured)."""
    for i in range(n):
        if i % 1000 == 0:
            d = root / f"d{i // 1000:04d}"
            d.mkdir(parents=True, exist_ok=True)
        (d / f"call{i:07d}.wav").touch()
    return root


def _set_running(url: str, batch_id: int, running: bool) -> None:
    """Mark a finalised batch running (its stored counters are then not used) and back."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(
            text("UPDATE batches SET status = :status WHERE id = :id"),
            {"status": "running" if running else "done_with_failures", "id": batch_id},
        )
    eng.dispose()


_SUMMARY_TIMING = """
import json, sys, time
from sqlalchemy.orm import Session
from worker.storage.db import Batch, batch_summary, get_engine

def median_ms(session, batch):
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        batch_summary(session, batch)
        times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[2], 2)

with Session(get_engine(sys.argv[1])) as session:
    final = session.get(Batch, 2)
    running = session.get(Batch, 1)
    running.status = "running"  # not flushed: the live count, nothing written
    print(json.dumps({"final_ms": median_ms(session, final), "running_ms": median_ms(session, running)}))
    session.rollback()
"""
"""In one process: :func:`worker.storage.db.batch_summary` of a final batch and of one marked running (ms)."""


def measure(
    kind: str,
    url: str,
    n: int,
    tmp: Path,
    files: Path | None,
    redis: RedisServer | None,
    pg: PostgresCluster | None,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """The commands (all, or those in ``only``) on one filled database; returns ``{command: {"s", "rss_mb", ...}}``."""
    exe = _exe()
    env = _env(url)
    out: dict[str, Any] = {}

    def want(key: str) -> bool:
        return only is None or key in only

    def median_of(argv: list[str], k: int = 5) -> dict[str, Any]:
        """Short commands: the median of ``k`` runs (other jobs share the cores), every run kept."""
        runs = [timed(argv, env) for _ in range(k)]
        mid = sorted(runs, key=lambda r: r["s"])[k // 2]
        return {**mid, "runs_s": [r["s"] for r in runs]}

    out["load_avg_1min"] = round(os.getloadavg()[0], 2)  # the cores are shared: how busy they were
    if want("startup"):
        out["startup"] = median_of([*exe, "config"])
    if want("status"):
        out["status"] = median_of([*exe, "status", "1"])
    if want("status_latest"):
        out["status_latest"] = median_of([*exe, "status"])
    if want("status_query"):  # the part of `status` that depends on the rows, without the process start-up
        p = subprocess.run(
            [sys.executable, "-c", _SUMMARY_TIMING, url], capture_output=True, text=True, cwd=REPO, check=True
        )
        out["status_query"] = json.loads(p.stdout.strip().splitlines()[-1])
    if want("status_running"):
        _set_running(url, 1, True)
        try:
            out["status_running"] = median_of([*exe, "status", "1"])
        finally:
            _set_running(url, 1, False)
    if only is not None:
        return out
    assert files is not None and redis is not None
    for fmt in ("csv", "jsonl", "json"):
        f = tmp / f"out.{fmt}"
        r = timed([*exe, "results", "--batch", "1", "--format", fmt, "-o", str(f)], env)
        lines = _lines(f)
        r["rows"] = lines - 1 if fmt == "csv" else lines if fmt == "jsonl" else lines - 2  # "[" and "]" lines
        r["mb"] = round(f.stat().st_size / 1e6, 1)
        f.unlink()
        out[f"results_{fmt}"] = r
    y = tmp / "yardstick.csv"
    if kind == "sqlite":
        db = url.split("sqlite:///", 1)[1]
        r = timed(["sqlite3", "-csv", "-header", db, yardstick_sql()], stdout=y)
    else:
        assert pg is not None
        dbname = url.rsplit("/", 1)[1]
        r = timed(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-q",
                "-c",
                f"\\copy ({yardstick_sql()}) TO '{y}' WITH (FORMAT csv, HEADER)",
            ],
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
    r["rows"] = _lines(y) - 1
    y.unlink()
    out["yardstick_csv"] = r
    out["report"] = timed([*exe, "report", "1", "-o", str(tmp / "r.html")], env)
    (tmp / "r.html").unlink()
    out["labels_export"] = timed(
        [*exe, "labels", "export", "1", "--count", "200", "-o", str(tmp / "l.csv"), "--force"], env
    )
    d = tmp / "diff.csv"
    r = timed([*exe, "diff", "1", "2", "--format", "csv", "-o", str(d)], env)
    r["rows"] = _lines(d) - 1
    d.unlink()
    out["diff"] = r
    # submit: walk + record + enqueue, distributed (a redis-server, no worker)
    client = redis.client()
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    r = timed([*exe, "submit", str(files), "-q"], _env(url, SER_BROKER_URL=redis.url))
    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    with eng.connect() as conn:
        bid = conn.execute(text("SELECT max(id) FROM batches")).scalar()
        r["rows"] = conn.execute(text(f"SELECT count(*) FROM results WHERE batch_id = {bid}")).scalar()
        conn.execute(text(f"DELETE FROM results WHERE batch_id = {bid}"))
        conn.execute(text(f"DELETE FROM batches WHERE id = {bid}"))
        conn.commit()
    eng.dispose()
    r["messages"] = int(client.llen("classify"))
    r["redis_bytes_per_message"] = round((int(client.info("memory")["used_memory"]) - before) / max(r["messages"], 1))
    client.flushall()
    out["submit"] = r
    return out


def run_size(
    kind: str,
    n: int,
    tmp: Path,
    files: Path | None,
    redis: RedisServer | None,
    pg: PostgresCluster | None,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Make, fill and measure one database of ``n`` rows per batch; the database is dropped afterwards."""
    if kind == "sqlite":
        db = tmp / f"scale-{n}.db"
        url = f"sqlite:///{db}"
    else:
        assert pg is not None
        url = pg.create_database(f"scale_{n}")
    p = subprocess.run([*_exe(), "db", "upgrade"], env=_env(url), capture_output=True, text=True, cwd=REPO)
    if p.returncode:
        raise RuntimeError(p.stderr)
    fill_s = fill(url, n)
    print(f"{kind} {n}: filled in {fill_s:.1f} s", flush=True)
    try:
        res = measure(kind, url, n, tmp, files, redis, pg, only)
    finally:
        if kind == "sqlite":
            size = sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())
            for s in ("", "-wal", "-shm"):
                Path(f"{db}{s}").unlink(missing_ok=True)
        else:
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", autocommit=True) as conn:  # type: ignore[union-attr]
                size = conn.execute(f"SELECT pg_database_size('scale_{n}')").fetchone()[0]
                conn.execute(f"DROP DATABASE scale_{n}")
    res["fill_s"] = round(fill_s, 1)
    res["db_mb"] = round(size / 1e6, 1)
    print(json.dumps(res), flush=True)
    return res


# ------------------------------------------------------------------------------------------ report

COMMANDS = [
    ("submit", "submit DIR (record + enqueue, distributed, no worker)"),
    ("startup", "config (process start-up, no table read: the floor of every command)"),
    ("status_latest", "status (the latest batch, final)"),
    ("status", "status 1 (final)"),
    ("status_running", "status 1, marked running (counted live from its rows)"),
    ("status_before_0009", "status 1, before 0010_status_counters (every call counted the rows; 2026-12-05)"),
    ("yardstick_csv", "database's own CSV dump (sqlite3 -csv / psql \\copy)"),
    ("results_csv", "results --format csv"),
    ("results_jsonl", "results --format jsonl"),
    ("results_json", "results --format json"),
    ("report", "report 1"),
    ("labels_export", "labels export 1 --count 200"),
    ("diff", "diff 1 2 --format csv (two batches of N)"),
]


def to_markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Scale: a batch of 10k / 100k / 1M rows read back and submitted",
        "",
        f"Generated by `benchmarks/scale.py` on {meta['when']} ({meta['machine']}; {meta['cpus']} cores shared with",
        "other work, so times vary by about ±20 %). Each command is a fresh process as a user runs it, measured with",
        '`/usr/bin/time -f "%e %M"` (wall seconds, peak RSS). The rows are written with SQL (batch 1: N finished',
        "rows, 1 % failed, 1,000 files per folder; batch 2: the same paths with 10 % of the labels changed). `submit`",
        "walks N empty `.wav` files and records + queues them on a redis-server with no worker. `rows` is what came",
        "out (header excluded) and must equal N (diff: the changed files).",
        "",
    ]
    for kind, by_n in results.items():
        sizes = sorted(by_n, key=int)
        lines += [
            f"## {kind}",
            "",
            "| command | " + " | ".join(f"{int(n):,} rows" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for key, label in COMMANDS:
            cells = []
            for n in sizes:
                r = by_n[n].get(key)
                if not r:
                    cells.append("")
                    continue
                cell = f"{r['s']:.2f} s, {r['rss_mb']:.0f} MB"
                if "rows" in r and r["rows"] != int(n) and key != "diff":
                    cell += f" (**{r['rows']:,} rows**)"
                cells.append(cell)
            if any(cells):  # a command not measured on this database has no row
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        ratio = [
            f"{by_n[n]['results_csv']['s'] / by_n[n]['yardstick_csv']['s']:.2f}x"
            if by_n[n].get("yardstick_csv") and by_n[n].get("results_csv")
            else ""
            for n in sizes
        ]
        lines.append("| CSV export / database dump | " + " | ".join(ratio) + " |")
        lines.append("| database size (2 batches) | " + " | ".join(f"{by_n[n]['db_mb']:,.0f} MB" for n in sizes) + " |")
        if any(by_n[n].get("status_query") for n in sizes):
            lines.append(
                "| status: counting in process (final batch / marked running), no start-up | "
                + " | ".join(
                    f"{q['final_ms']:.1f} ms / {q['running_ms']:.0f} ms" if (q := by_n[n].get("status_query")) else ""
                    for n in sizes
                )
                + " |"
            )
        msg = [by_n[n]["submit"] for n in sizes if by_n[n].get("submit")]
        if msg:
            lines.append(
                "| submit: messages, Redis bytes per message | "
                + " | ".join(f"{m['messages']:,}, {m['redis_bytes_per_message']} B" for m in msg)
                + " |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dbs", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--tmp", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.md")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    ap.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=["startup", "status", "status_latest", "status_running", "status_query"],
        help="measure only these commands (no files, no Redis); the rest of each entry is kept",
    )
    args = ap.parse_args()
    only = set(args.only) if args.only else None
    tmp = args.tmp or Path(tempfile.mkdtemp(prefix="ser-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = json.loads(args.json.read_text()) if args.json.exists() else {}
    redis = RedisServer(temp_dir("ser-scale-redis-")).start() if only is None else None
    pg = PostgresCluster(temp_dir("ser-scale-pg-")).start() if "postgresql" in args.dbs else None
    try:
        for n in sorted(args.sizes):
            files = tmp / f"files-{n}" if only is None else None
            if files is not None:
                t0 = time.perf_counter()
                make_files(files, n)
                print(f"{n} files made in {time.perf_counter() - t0:.1f} s", flush=True)
            try:
                for kind in args.dbs:
                    res = run_size(kind, n, tmp, files, redis, pg, only)
                    entry = results.setdefault(kind, {}).setdefault(str(n), {}) if only else {}
                    entry.update(res)  # --only: the other commands' numbers of this size are kept
                    results[kind][str(n)] = entry
                    args.json.write_text(json.dumps(results, indent=1) + "\n")
            finally:
                if files is not None:
                    shutil.rmtree(files, ignore_errors=True)
    finally:
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis.folder, ignore_errors=True)
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.folder, ignore_errors=True)
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    write_markdown(results, args.out)


def write_markdown(results: dict[str, dict[str, Any]], out: Path) -> None:
    """Replace the tables of ``out`` (between its ``<!-- tables -->`` markers) with those of ``results``."""
    meta = {
        "when": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "cpus": os.cpu_count(),
    }
    tables = to_markdown(results, meta)
    old = out.read_text() if out.exists() else ""
    a, b = "<!-- tables -->\n", "<!-- /tables -->\n"
    if a in old and b in old:  # keep the hand-written analysis around the generated tables
        tables = old[: old.index(a) + len(a)] + tables[tables.index("\n## ") + 1 :] + old[old.index(b) :]
    out.write_text(tables)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
