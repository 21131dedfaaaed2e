"""Scale: reading a batch of 10k / 100k / 1M rows back (exports, report, diff) and submitting 1M files.

For each database (SQLite file, PostgreSQL cluster started here as tests/integration does) and each
size N, a database is made by ``ser-batch db upgrade`` and filled with SQL (no audio is decoded):
batch 1 has N finished rows (1 % failed, 1,000 files per folder, the eight emotions, probabilities,
trust flags), batch 2 the same paths with 10 % of the labels changed (as a ``rescore`` would), and a
registered model ``bench-v1``. Then each command runs as a user runs it, in a fresh process, under
``/usr/bin/time -f "%e %M"`` (wall seconds, peak RSS in KB):

- ``status 1``; ``results --batch 1 --format csv|jsonl|json -o FILE``; ``report 1``;
  ``labels export 1 --count 200``; ``diff 1 2 --format csv -o FILE``;
- the database's own CSV dump of the same rows and columns as the yardstick: ``sqlite3 -csv`` and
  ``psql -c "\\copy (SELECT ...) TO ... CSV HEADER"``;
- ``submit DIR`` of N empty ``.wav`` files in distributed mode (a redis-server here, no worker: the
  batch is recorded and every chunk enqueued), with the Redis memory per queued message.

Every export is checked to hold every row (line count or JSON length).

Usage::

    python benchmarks/scale.py --sizes 10000 100000 1000000 --dbs sqlite postgresql \\
        --out benchmarks/results/scale.md

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
        probs = "json_object(" + ", ".join(f"'{e}', CASE WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS)) + ")"
        now, true, false = "'2026-01-01 00:00:00.000000'", "1", "0"
        src = f"{seq} SELECT i, ((i + {shift}) % 8) AS k, 0.2 + 0.8 * ((i * 37) % 1000) / 1000.0 AS c FROM seq"
    else:
        emo = "(ARRAY[" + ", ".join(f"'{e}'" for e in EMOTIONS) + "])[k + 1]"
        path = "'/archive/d' || lpad((i / 1000)::text, 4, '0') || '/call' || lpad(i::text, 7, '0') || '.wav'"
        probs = "json_build_object(" + ", ".join(f"'{e}', CASE WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS)) + ")"
        now, true, false = "'2026-01-01 00:00:00+00'::timestamptz", "true", "false"
        src = f"SELECT i, ((i + {shift}) % 8) AS k, 0.2 + 0.8 * ((i * 37) % 1000) / 1000.0 AS c FROM generate_series(0, {n - 1}) AS i"
    failed = "i % 100 = 0"
    p_cols = ", ".join(f"p_{e}" for e in EMOTIONS)
    p_vals = ", ".join(f"CASE WHEN {failed} THEN NULL WHEN k = {j} THEN c ELSE (1 - c) / 7 END" for j, e in enumerate(EMOTIONS))
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
        if dialect == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('batches', 'id'), 2)"))
    if dialect == "postgresql":
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE results"))
    else:
        with eng.begin() as conn:
            conn.execute(text("ANALYZE"))
    eng.dispose()
    return time.perf_counter() - t0
