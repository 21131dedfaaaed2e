"""Throughput section 3: the per-chunk result upsert and the pending rows, old and new, on SQLite and PostgreSQL.

The statements of issue 6 (a multi-row ``INSERT ... ON CONFLICT`` built and compiled per chunk;
:func:`legacy_upsert_results`, :func:`legacy_insert_pending`) against :func:`worker.storage.db.upsert_results`
and :func:`worker.storage.db.insert_pending` (one cached statement, ``executemany``), ms per file
(:func:`upsert_cost`). Run by ``benchmarks/throughput.py`` (section ``upsert``), which puts
``tests/integration`` (``services``) on ``sys.path``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def legacy_upsert_results(session: Any, rows: list[dict[str, Any]]) -> None:
    """``worker.storage.db.upsert_results`` before issue 14: a multi-row INSERT built and compiled per chunk."""
    from worker.storage.db import Result, _key_elements, _upsert_insert, utcnow

    stmt = _upsert_insert(session)(Result).values(list(rows))
    keys = set(rows[0]) - {"batch_id", "path", "created_at"}
    update = {k: getattr(stmt.excluded, k) for k in keys}
    update["updated_at"] = utcnow()
    stmt = stmt.on_conflict_do_update(index_elements=_key_elements(), set_=update)
    session.execute(stmt)


def legacy_insert_pending(session: Any, batch_id: int, paths: list[str], sizes: dict[str, int]) -> None:
    """``worker.storage.db.insert_pending`` before issue 14: multi-row INSERTs of 500 rows, compiled per call."""
    from worker.storage.db import Result, _key_elements, _upsert_insert

    insert_ = _upsert_insert(session)
    rows = [
        {"batch_id": batch_id, "path": p, "status": "pending", "size_bytes": sizes.get(p), "speaker": None}
        for p in paths
    ]
    for i in range(0, len(rows), 500):
        stmt = insert_(Result).values(rows[i : i + 500]).on_conflict_do_nothing(index_elements=_key_elements())
        session.execute(stmt)


def _result_rows(batch_id: int, paths: list[str]) -> list[dict[str, Any]]:
    """Rows shaped like ``worker.engine.analyse.analyse_file``'s (plus ``batch_id``), one per path."""
    from ser_model.labels import EMOTIONS
    from worker.storage.db import utcnow

    probs = {e: 1.0 / len(EMOTIONS) for e in EMOTIONS}
    return [
        {
            "batch_id": batch_id,
            "path": p,
            "status": "done",
            "error": None,
            "size_bytes": 120_000,
            "sha256": f"{i:064x}",
            "duration_s": 3.8,
            "sample_rate": 16000,
            "channels": 1,
            "emotion": "sad",
            "confidence": 0.41,
            "probabilities": probs,
            "model_version": "bench",
            "analysis_mode": "utterance",
            "n_segments": None,
            "features": None,
            **{f"p_{e}": v for e, v in probs.items()},
            "processing_ms": 5.0,
            "finished_at": utcnow(),
        }
        for i, p in enumerate(paths)
    ]


def upsert_cost(url: str, *, n_files: int = 1200, chunk: int = 8, passes: int = 3) -> dict[str, Any]:
    """Per-file cost of the pending rows and of the per-chunk result upsert, old and new, on ``url``.

    Every pass writes a fresh batch's ``pending`` rows (old and new in turn), then upserts its
    results chunk by chunk in short transactions, as a worker does (an update of the pending row).
    Wall time is what the caller waits (client, round trips, server); CPU is this process' (Python).
    """
    from sqlalchemy.orm import Session

    from worker.storage.db import Batch, get_engine, insert_pending, upsert_results
    from worker.storage.migrate import upgrade

    upgrade(url)
    eng = get_engine(url)
    impls = {
        "issue 6 (multi-row INSERT per chunk)": (legacy_insert_pending, legacy_upsert_results),
        "issue 14 (cached statement, executemany)": (insert_pending, upsert_results),
    }
    out: dict[str, dict[str, list[float]]] = {k: {"pending": [], "upsert": [], "upsert_cpu": []} for k in impls}
    for r in range(passes + 1):  # the first pass warms up (imports, the compiled-statement cache)
        for name, (pending, upsert) in impls.items():
            with Session(eng) as s, s.begin():
                b = Batch(source_paths=["/bench"], status="running", n_files=n_files)
                s.add(b)
                s.flush()
                bid = b.id
            paths = [f"/bench/{bid}/{i:05d}.flac" for i in range(n_files)]
            t0 = time.perf_counter()
            with Session(eng) as s, s.begin():
                pending(s, bid, paths, {})
            t_pending = time.perf_counter() - t0
            rows = _result_rows(bid, paths)
            chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
            t0, c0 = time.perf_counter(), time.process_time()
            for rs in chunks:
                with Session(eng) as s, s.begin():
                    upsert(s, rs)
            t_up, c_up = time.perf_counter() - t0, time.process_time() - c0
            if r:
                out[name]["pending"].append(1000 * t_pending / n_files)
                out[name]["upsert"].append(1000 * t_up / n_files)
                out[name]["upsert_cpu"].append(1000 * c_up / n_files)
    eng.dispose()
    return {
        name: {k: round(statistics.median(v), 4) for k, v in d.items()} | {"passes": passes} for name, d in out.items()
    }


def upsert_both_databases(tmp: Path, passes: int) -> dict[str, Any]:
    """:func:`upsert_cost` on a SQLite file and on a PostgreSQL server started for it."""
    from services import PostgresCluster

    res = {"SQLite": upsert_cost(f"sqlite:///{tmp / 'upsert.db'}", passes=passes)}
    pg = PostgresCluster(tmp / "pg-upsert").start()
    try:
        res["PostgreSQL"] = upsert_cost(pg.create_database("upsert"), passes=passes)
    finally:
        pg.stop()
    return res
