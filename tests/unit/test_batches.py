"""The batch engine's database side on SQLite: finalisation, leases, the sweeper (no broker, no audio)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from worker.engine.finalise import finalise_batch
from worker.engine.leases import claim, release, renew
from worker.engine.rows import store_rows
from worker.settings import Settings
from worker.storage.db import Batch, Result, get_engine, insert_pending, utcnow
from worker.storage.migrate import upgrade


@pytest.fixture
def batch(db_url):
    """(url, batch_id, paths): a distributed batch with 4 pending rows."""
    upgrade(db_url)
    paths = [f"/r/{i}.wav" for i in range(4)]
    with Session(get_engine(db_url)) as s, s.begin():
        b = Batch(source_paths=["/r"], status="running", mode="distributed", n_files=4, options={"chunk_size": 2})
        s.add(b)
        s.flush()
        insert_pending(s, b.id, paths, {})
        bid = b.id
    return db_url, bid, paths


def _record(url: str, batch_id: int) -> tuple:
    with get_engine(url).connect() as conn:
        return tuple(
            conn.execute(
                text("SELECT status, n_done, n_failed, finished_at IS NOT NULL FROM batches WHERE id = :i"),
                {"i": batch_id},
            ).one()
        )


def _row(path: str, status: str) -> dict:
    return {"path": path, "status": status, "error": None if status == "done" else "bad", "finished_at": utcnow()}


def test_the_transaction_writing_the_last_row_finalises_the_batch(batch):
    url, bid, paths = batch
    store_rows(bid, [_row(p, "done") for p in paths[:3]], url=url)
    assert _record(url, bid) == ("running", 0, 0, False)  # rows still pending: not final
    store_rows(bid, [_row(paths[3], "failed")], url=url)
    assert _record(url, bid) == ("done_with_failures", 3, 1, True)
    with Session(get_engine(url)) as s, s.begin():
        assert finalise_batch(s, bid) is None  # already final: finalised once (a webhook fires once)


def test_all_done_is_done_and_the_final_record_is_returned(batch):
    url, bid, paths = batch
    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Result).where(Result.batch_id == bid).values(status="done"))
        final = finalise_batch(s, bid)
    assert final is not None and (final.status, final.n_done, final.n_failed) == ("done", 4, 0)
    assert _record(url, bid) == ("done", 4, 0, True)


def test_a_claimed_row_is_not_claimed_again_until_its_lease_expires(batch):
    url, bid, paths = batch
    first = claim(bid, paths[:2], "a", lease_s=30, url=url)
    assert first == {paths[0]: 0, paths[1]: 0}
    assert claim(bid, paths, "b", lease_s=30, url=url) == {paths[2]: 0, paths[3]: 0}  # only the free rows
    assert claim(bid, paths, "c", lease_s=30, url=url) == {}
    assert renew(bid, paths, "a", lease_s=30, url=url) == 2
    with Session(get_engine(url)) as s, s.begin():  # owner "a" dies: its lease runs out
        s.execute(
            update(Result).where(Result.worker_id == "a").values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert set(claim(bid, paths, "d", lease_s=30, url=url)) == set(paths[:2])
    assert release(bid, paths[:2], url=url) == 2
    assert set(claim(bid, paths, "e", lease_s=30, url=url)) == set(paths[:2])
    store_rows(bid, [_row(paths[0], "done")], url=url)
    assert renew(bid, paths[:2], "e", lease_s=30, url=url) == 1  # final rows need no lease


def test_sweep_requeues_expired_leases_and_uncovered_rows_and_finalises(batch):
    from worker.celery_app.config import make_app
    from worker.celery_app.sweeper import sweep

    url, bid, paths = batch
    settings = Settings(database_url=url, lease_s=10, heartbeat_s=1)
    capp = make_app(settings)  # memory:// broker: publishing works without Redis
    claim(bid, paths[:2], "dead", lease_s=10, url=url)
    now = utcnow()
    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Result).where(Result.worker_id == "dead").values(lease_expires_at=now - timedelta(seconds=1)))
    r = sweep(url=url, settings=settings, celery_app=capp, queue_length=lambda: 3)
    assert (r.expired, r.orphaned) == (2, 0)  # queue not empty: unclaimed rows may still get a message
    r = sweep(url=url, settings=settings, celery_app=capp, queue_length=lambda: 0)
    assert (r.expired, r.orphaned) == (0, 0)  # the unclaimed rows are recent
    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Result).where(Result.worker_id.is_(None)).values(updated_at=now - timedelta(seconds=60)))
    r = sweep(url=url, settings=settings, celery_app=capp, queue_length=lambda: 0)
    assert (r.expired, r.orphaned) == (0, 4)
    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Result).where(Result.batch_id == bid).values(status="done"))  # e.g. an older writer
    assert sweep(url=url, settings=settings, celery_app=capp, queue_length=lambda: 0).finalised == [bid]
    assert _record(url, bid) == ("done", 4, 0, True)


def test_embedded_batches_are_never_swept(batch):
    from worker.celery_app.config import make_app
    from worker.celery_app.sweeper import sweep

    url, bid, paths = batch
    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Batch).where(Batch.id == bid).values(mode="embedded"))
        s.execute(update(Result).values(updated_at=utcnow() - timedelta(hours=1)))
    settings = Settings(database_url=url, lease_s=10, heartbeat_s=1)
    r = sweep(url=url, settings=settings, celery_app=make_app(settings), queue_length=lambda: 0)
    assert (r.expired, r.orphaned) == (0, 0)


def test_migration_0005_backfills_finished_batches(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0004")
    with get_engine(url).begin() as conn:
        for bid, statuses in ((1, ("done", "failed")), (2, ("done", "pending")), (3, ("done", "done"))):
            conn.execute(
                text(
                    "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done, "
                    "n_failed, n_ignored) VALUES (:i, '2026-01-01', '{}', '[]', 'running', 'distributed', 2, 0, 0, 0)"
                ),
                {"i": bid},
            )
            for k, st in enumerate(statuses):
                conn.execute(
                    text(
                        "INSERT INTO results (batch_id, path, status, attempts, created_at, updated_at, finished_at) "
                        "VALUES (:b, :p, :s, 1, '2026-01-01', '2026-01-01', '2026-01-02')"
                    ),
                    {"b": bid, "p": f"{k}.wav", "s": st},
                )
    upgrade(url, "0005")
    assert _record(url, 1) == ("done_with_failures", 1, 1, True)
    assert _record(url, 2) == ("running", 0, 0, False)  # still pending: untouched
    assert _record(url, 3) == ("done", 2, 0, True)


def test_leases_of_terminated_processes_end_at_once(batch):
    import socket

    from worker.engine.leases import expire_leases_of

    url, bid, paths = batch
    host = socket.gethostname()[:80]
    claim(bid, paths[:2], f"{host}:4242:abc", lease_s=30, url=url)
    claim(bid, paths[2:], f"{host}:999:abc", lease_s=30, url=url)
    assert expire_leases_of([4242], url=url) == 2
    assert set(claim(bid, paths, "other", lease_s=30, url=url)) == set(paths[:2])  # only pid 4242's rows


def test_leases_of_dead_local_processes_are_ended_when_their_chunk_comes_back(batch):
    import os
    import socket
    import subprocess

    from worker.engine.leases import expire_dead_local_leases

    url, bid, paths = batch
    host = socket.gethostname()[:80]
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists (like a pool process the OOM killer took)
    claim(bid, paths[:2], f"{host}:{gone.pid}:abc", lease_s=30, url=url)
    claim(bid, paths[2:3], f"{host}:{os.getppid()}:abc", lease_s=30, url=url)  # alive
    claim(bid, paths[3:], f"elsewhere:{gone.pid}:abc", lease_s=30, url=url)  # another host: not judged
    assert expire_dead_local_leases(bid, paths, url=url) == 2
    assert set(claim(bid, paths, "next", lease_s=30, url=url)) == set(paths[:2])


def test_a_reused_pid_does_not_keep_a_dead_owners_lease(batch):
    """Lease owners carry their process's start time: the same PID in a new process is another owner."""
    import os

    from worker.engine.leases import _owner_dead, expire_dead_local_leases, owner_id, process_start

    url, bid, paths = batch
    me = owner_id()
    host, pid, start, _ = me.split(":")
    assert int(pid) == os.getpid() and int(start) == process_start(os.getpid())
    assert not _owner_dead(me)  # this process, alive
    earlier = f"{host}:{pid}:{int(start) - 1}:abc"  # an earlier process that had this PID
    assert _owner_dead(earlier)
    assert not _owner_dead(f"{host}:{pid}:abc")  # the old id format: own PID, judged alive as before
    claim(bid, paths[:2], earlier, lease_s=30, url=url)
    claim(bid, paths[2:], me, lease_s=30, url=url)
    assert expire_dead_local_leases(bid, paths, url=url) == 2
    assert set(claim(bid, paths, "next", lease_s=30, url=url)) == set(paths[:2])


def test_a_chunk_claims_rows_another_process_freed_meanwhile(batch, monkeypatch):
    """Two processes meet the same dead owner: the one that did not end the lease still runs its files."""
    import socket
    import subprocess

    from worker.engine import chunk, leases

    url, bid, paths = batch
    host = socket.gethostname()[:80]
    gone = subprocess.Popen(["true"])
    gone.wait()
    claim(bid, paths, f"{host}:{gone.pid}:1:abc", lease_s=30, url=url)
    first_claim = chunk.claim

    def claim_then_other_process_expires(*a, **k):
        got = first_claim(*a, **k)
        leases.expire_dead_local_leases(bid, paths, url=url)  # the other process, just after our claim
        monkeypatch.setattr(chunk, "claim", first_claim)
        return got

    monkeypatch.setattr(chunk, "claim", claim_then_other_process_expires)
    ran: list[str] = []
    monkeypatch.setattr(chunk, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(chunk, "analyse_path", lambda path, model, plan: ran.append(path) or [])
    counts = chunk.run_chunk(bid, paths[:2], url=url, settings=Settings(database_url=url))
    assert ran == paths[:2] and counts["skipped"] == 0
