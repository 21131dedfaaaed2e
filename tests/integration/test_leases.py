"""Leases and the sweeper with real processes: a SIGKILLed worker costs seconds, the batch record is true.

No ``submit --wait`` here: nobody but the surviving worker can recover the dead worker's chunks.
Recovery times are printed (``pytest -s``) for docs/reliability.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from services import SLOW_SEGMENTS, batch_counts, batch_record, poll, result_rows, ser_batch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _leased_by(url: str, batch_id: int, pids: set[int]) -> int:
    """Pending rows of the batch leased to one of the processes ``pids`` (lease owner is host:pid:token)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, get_engine

    with Session(get_engine(url)) as s:
        owners = s.scalars(
            select(Result.worker_id).where(
                Result.batch_id == batch_id, Result.status == "pending", Result.worker_id.is_not(None)
            )
        ).all()
    return sum(int(o.split(":")[1]) in pids for o in owners)


def _pool_pids(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def recovery_deadline_s(settings: object, pending: int, files_per_s: float) -> float:
    """How long a survivor may take, after a kill, to finish ``pending`` files alone.

    Derived, not a wall-clock budget (tests/README.md, "Deadlines"): the configured lease must expire
    (``SER_LEASE_S``) and a sweep must see it (``SER_SWEEP_INTERVAL_S``, twice for the phase), then the
    survivor labels the rest at the rate measured in the same test before the kill. That rate was
    two workers' together; one worker alone is given half of it, and the whole work a factor 3, so a
    machine busy with other processes (a CPU hog on every core) still passes while a lost or never
    requeued chunk, which leaves rows pending for ever, still fails.
    """
    lease_s = float(settings.lease_s)  # type: ignore[attr-defined]
    sweep_s = float(settings.sweep_interval_s)  # type: ignore[attr-defined]
    return lease_s + 2 * sweep_s + 3 * pending / max(files_per_s / 2, 1e-3) + 15.0


def test_recovery_deadline_grows_with_the_lease_and_the_work_and_shrinks_with_the_rate():
    from worker.settings import Settings

    base = recovery_deadline_s(Settings(), 50, 4.0)
    assert recovery_deadline_s(Settings(lease_s=60), 50, 4.0) == pytest.approx(base + 30)
    assert recovery_deadline_s(Settings(), 100, 4.0) > base > recovery_deadline_s(Settings(), 50, 8.0)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_worker_sigkilled_without_wait_the_survivor_finishes_every_file_after_the_lease(
    database, request, tmp_path, broker_url, recordings, env_for, start_workers
):
    """Two workers share a batch submitted without --wait; one is SIGKILLed (whole process group) while
    it holds a chunk and never comes back. The survivor's sweeper requeues the dead worker's rows when
    their lease expires (default SER_LEASE_S, visibility timeout left at its default hour): every file
    done, one row each, the dead worker's rows requeued by the sweeper and the batch record final,
    within a deadline derived from the lease and the rate measured before the kill
    (:func:`recovery_deadline_s`)."""
    from worker.settings import Settings
    from worker.storage.migrate import upgrade

    url = request.getfixturevalue("pg_url") if database == "postgresql" else f"sqlite:///{tmp_path / 'ser.db'}"
    upgrade(url)
    n = 100
    folder = recordings(n)
    env = env_for(url, broker_url, SER_CHUNK_SIZE="8")
    doomed = start_workers(env, name="doomed", concurrency=1).wait_ready()
    survivor = start_workers(env, name="survivor", concurrency=1).wait_ready()
    t_submit = time.monotonic()
    p = ser_batch(["submit", str(folder), *SLOW_SEGMENTS], env)
    assert p.returncode == 0, p.stderr
    batch_id = int(p.stdout.strip().splitlines()[0])
    doomed_pids = _pool_pids(doomed.proc.pid)
    poll(
        lambda: batch_counts(url, batch_id)["done"] >= 24 and _leased_by(url, batch_id, doomed_pids) > 0,
        timeout_s=300,
        every_s=0.02,
        what="the doomed worker holding a chunk",
    )
    doomed.kill()
    t_kill = time.monotonic()
    at_kill = batch_counts(url, batch_id)
    assert at_kill["pending"] > 0, at_kill
    rate = at_kill["done"] / (t_kill - t_submit)  # both workers, start-up included: on the slow side
    deadline = recovery_deadline_s(Settings(), at_kill["pending"], rate)
    counts = poll(
        lambda: (c := batch_counts(url, batch_id))["pending"] == 0 and c,
        timeout_s=deadline,
        every_s=0.2,
        what=f"every file done within {deadline:.0f} s of the kill (lease, sweeps, {rate:.2f} files/s measured)",
    )
    recovered_s = time.monotonic() - t_kill
    assert counts == {"pending": 0, "done": n, "failed": 0, "total": n}
    rows = result_rows(url, batch_id)
    assert sorted(str(r["path"]) for r in rows) == sorted(str(f) for f in folder.iterdir())  # one row each
    record = poll(
        lambda: (b := batch_record(url, batch_id))["status"] != "running" and b,
        timeout_s=10 + Settings().sweep_interval_s,
        what="batches.status final after the last row",
    )
    assert (record["status"], record["n_done"], record["n_failed"]) == ("done", n, 0)
    assert record["finished_at"] is not None
    assert "sweeper: requeued" in survivor.log()
    lag = _final_after_last_row_s(url, batch_id)
    print(
        f"\n[worker-sigkill/{database}] files={n} pending_at_kill={at_kill['pending']} rate={rate:.2f}/s "
        f"deadline_s={deadline:.0f} recovered_s={recovered_s:.1f} batch_final_after_last_row_s={lag:.3f}"
    )


def _final_after_last_row_s(url: str, batch_id: int) -> float:
    """Seconds between the last row's ``finished_at`` and the batch's ``finished_at`` (plain SQL)."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, text

    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            last, final = conn.execute(
                text(
                    "SELECT (SELECT max(finished_at) FROM results WHERE batch_id = :b), finished_at "
                    "FROM batches WHERE id = :b"
                ),
                {"b": batch_id},
            ).one()
    finally:
        eng.dispose()

    def ts(v: object) -> datetime:
        d = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
        return d if d.tzinfo else d.replace(tzinfo=UTC)

    return (ts(final) - ts(last)).total_seconds()


def test_batch_with_failures_is_final_in_both_modes_read_with_plain_sql(
    tmp_path, broker_url, recordings, env_for, start_workers
):
    """Embedded and distributed (no --wait) batches with a corrupt file end `done_with_failures` with
    their counts, as plain SQL on `batches` shows."""
    folder = recordings(10)
    (folder / "zz_corrupt.wav").write_bytes(b"RIFF....WAVEfmt nothing here")
    url = f"sqlite:///{tmp_path / 'ser.db'}"
    p = ser_batch(["submit", str(folder), "-q"], env_for(url, None))
    assert p.returncode == 3, p.stderr
    embedded = batch_record(url, 1)
    assert (embedded["status"], embedded["n_done"], embedded["n_failed"]) == ("done_with_failures", 10, 1)
    env = env_for(url, broker_url, SER_CHUNK_SIZE="4")
    start_workers(env, name="w", concurrency=1).wait_ready()
    p = ser_batch(["submit", str(folder)], env)
    assert p.returncode == 0, p.stderr
    batch_id = int(p.stdout.strip().splitlines()[0])
    record = poll(
        lambda: (b := batch_record(url, batch_id))["status"] != "running" and b,
        timeout_s=120,
        what="distributed batch final",
    )
    assert (record["status"], record["n_done"], record["n_failed"]) == ("done_with_failures", 10, 1)
    assert batch_counts(url, batch_id)["pending"] == 0


def test_two_transactions_writing_the_last_rows_at_once_finalise_the_batch_once(pg_url):
    """PostgreSQL, READ COMMITTED: each of two open transactions writes one of the last two pending rows;
    the first to finalise sees the other's row still pending, the second (after taking the batch lock)
    sees both and finalises. Neither leaves the batch `running`, and it is finalised exactly once."""
    import threading

    from sqlalchemy.orm import Session

    from worker.engine.finalise import finalise_batch
    from worker.storage.db import Batch, get_engine, insert_pending, upsert_results, utcnow

    eng = get_engine(pg_url)
    with Session(eng) as s, s.begin():
        b = Batch(source_paths=["/r"], status="running", mode="distributed", n_files=2)
        s.add(b)
        s.flush()
        insert_pending(s, b.id, ["a.wav", "b.wav"], {})
        bid = b.id
    row = {"status": "done", "emotion": "calm", "confidence": 0.9, "finished_at": utcnow()}
    s1, s2 = Session(eng), Session(eng)
    s1.begin()
    s2.begin()
    upsert_results(s1, [{"batch_id": bid, "path": "a.wav", **row}])
    upsert_results(s2, [{"batch_id": bid, "path": "b.wav", **row}])
    assert finalise_batch(s1, bid) is None  # b.wav is not committed yet: still pending for s1
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(finalise_batch(s2, bid)))
    t.start()  # blocks on the batch row lock s1 holds
    t.join(timeout=1)
    assert t.is_alive(), "the second finaliser must wait for the first transaction's lock"
    s1.commit()
    t.join(timeout=30)
    s2.commit()
    final = results[0]
    assert final is not None and (final.status, final.n_done) == ("done", 2)  # type: ignore[attr-defined]
    assert batch_record(pg_url, bid)["status"] == "done"
    s1.close()
    s2.close()


def test_a_worker_that_stops_consuming_exits_for_its_supervisor(
    tmp_path, broker_url, recordings, env_for, start_workers
):
    """Celery's own remote control makes the worker stop consuming `classify` (as a wedged consumer
    would); with messages waiting and idle processes, the watchdog stops it with exit code 70."""
    from worker.celery_app.config import make_app
    from worker.celery_app.watchdog import EXIT_STALLED
    from worker.settings import Settings
    from worker.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ser.db'}"
    upgrade(url)
    env = env_for(url, broker_url, SER_WATCHDOG_STALL_S="5")
    w = start_workers(env, name="stalls", concurrency=1).wait_ready()
    capp = make_app(Settings(broker_url=broker_url, database_url=url))
    # Asked again until the worker answers: it subscribes to remote-control broadcasts on its first event-loop
    # tick, after it logged "ready", and a busy machine may answer later than a second (cancelling twice is harmless)
    poll(
        lambda: capp.control.cancel_consumer(
            "classify", destination=[f"stalls@{os.uname().nodename}"], reply=True, timeout=5, limit=1
        ),
        timeout_s=60,
        what="the worker acknowledges the cancel_consumer command",
    )
    p = ser_batch(["submit", str(recordings(4))], env)  # messages now wait in the queue
    assert p.returncode == 0, p.stderr
    poll(lambda: w.proc.poll() is not None, timeout_s=120, what="the stalled worker exits")
    assert w.proc.returncode == EXIT_STALLED, w.log()[-2000:]
    assert "watchdog: messages are waiting" in w.log()
