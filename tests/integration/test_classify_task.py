"""The ser.classify task body run in this process (Celery's eager ``apply``) on real files and SQLite.

Covers the failure paths a live worker hits rarely: a soft time limit in the middle of a chunk, a
redelivered chunk with rows already final, a file that keeps killing its process, no usable model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from services import result_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_batch(tmp_path, monkeypatch, ravdess_files):
    """(url, batch_id, paths): a migrated SQLite database with 5 pending rows of real files."""
    from sqlalchemy.orm import Session

    from worker.settings import get_settings
    from worker.storage.db import Batch, get_engine, insert_pending
    from worker.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'task.db'}"
    monkeypatch.setenv("SER_DATABASE_URL", url)
    get_settings.cache_clear()
    upgrade(url)
    paths = [str(p) for p in ravdess_files[:5]]
    with Session(get_engine(url)) as s, s.begin():
        b = Batch(source_paths=["/r"], status="running", mode="distributed", n_files=len(paths))
        s.add(b)
        s.flush()
        bid = b.id
        insert_pending(s, bid, paths, {})
    yield url, bid, paths
    get_settings.cache_clear()


def _set(url: str, batch_id: int, path: str, **values) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, get_engine

    with Session(get_engine(url)) as s, s.begin():
        s.execute(update(Result).where(Result.batch_id == batch_id, Result.path == path).values(**values))


def test_soft_time_limit_keeps_finished_files_and_fails_the_rest(sqlite_batch, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    import worker.engine.analyse as analyse
    from worker.celery_app.tasks import classify

    url, bid, paths = sqlite_batch
    real = analyse.analyse_file
    calls = {"n": 0}

    def slow_third(path, model, settings=None, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SoftTimeLimitExceeded()
        return real(path, model, settings, **kw)

    monkeypatch.setattr(analyse, "analyse_file", slow_third)
    counts = classify.apply(args=[bid, paths]).get()
    assert counts == {"done": 2, "failed": 3, "skipped": 0}
    rows = {r["path"]: r for r in result_rows(url, bid)}
    assert [rows[p]["status"] for p in paths] == ["done", "done", "failed", "failed", "failed"]
    assert all(rows[p]["emotion"] for p in paths[:2])
    assert all(str(rows[p]["error"]).startswith("time limit exceeded") for p in paths[2:])


def test_redelivered_chunk_skips_final_rows_and_gives_up_on_a_poison_file(sqlite_batch):
    from worker.celery_app.tasks import GIVEN_UP_REASON, MAX_ATTEMPTS, classify

    url, bid, paths = sqlite_batch
    _set(url, bid, paths[0], status="done", emotion="calm", confidence=0.9, attempts=1)  # finished before the crash
    _set(url, bid, paths[1], attempts=MAX_ATTEMPTS)  # started 3 times, never finished
    _set(url, bid, paths[2], attempts=1)  # the file the process died on
    counts = classify.apply(args=[bid, paths]).get()
    assert counts == {"done": 3, "failed": 1, "skipped": 1}
    rows = {r["path"]: r for r in result_rows(url, bid)}
    assert (rows[paths[0]]["emotion"], rows[paths[0]]["attempts"]) == ("calm", 1)  # not redone
    assert rows[paths[1]]["status"] == "failed"
    assert rows[paths[1]]["error"] == GIVEN_UP_REASON.format(n=MAX_ATTEMPTS)
    assert [rows[p]["status"] for p in paths[2:]] == ["done"] * 3
    assert [rows[p]["attempts"] for p in paths[2:]] == [2, 1, 1]
    assert len(rows) == 5


def test_a_second_delivery_of_a_finished_chunk_changes_nothing(sqlite_batch):
    from worker.celery_app.tasks import classify

    url, bid, paths = sqlite_batch
    assert classify.apply(args=[bid, paths]).get() == {"done": 5, "failed": 0, "skipped": 0}
    before = result_rows(url, bid)
    assert classify.apply(args=[bid, paths]).get() == {"done": 0, "failed": 0, "skipped": 5}
    assert result_rows(url, bid) == before


def test_unknown_model_fails_the_chunk_with_the_reason(sqlite_batch):
    from worker.celery_app.tasks import classify

    url, bid, paths = sqlite_batch
    counts = classify.apply(args=[bid, paths], kwargs={"model_version": "no-such-model"}).get()
    assert counts == {"done": 0, "failed": 5, "skipped": 0}
    errors = {str(r["error"]) for r in result_rows(url, bid)}
    assert len(errors) == 1 and "no usable model" in errors.pop()


def test_unreadable_file_is_a_failed_row_not_a_retry(sqlite_batch, tmp_path: Path):
    from sqlalchemy.orm import Session

    from worker.celery_app.tasks import classify
    from worker.storage.db import get_engine, insert_pending

    url, bid, _ = sqlite_batch
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00not audio at all")
    with Session(get_engine(url)) as s, s.begin():
        insert_pending(s, bid, [str(bad)], {})
    result = classify.apply(args=[bid, [str(bad)]])
    assert result.get() == {"done": 0, "failed": 1, "skipped": 0}
    assert result.state == "SUCCESS"  # no retry was scheduled
    row = next(r for r in result_rows(url, bid) if r["path"] == str(bad))
    assert row["status"] == "failed" and row["error"]
