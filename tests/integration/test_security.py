"""Security on real services: a crafted pickle in the ``models`` table of PostgreSQL runs nothing on a
real Celery worker or the producer."""

from __future__ import annotations

import pytest
from services import result_rows, ser_batch, wait_batch_finished

from tests.unit.test_safe_bundle import crafted_pickle

pytestmark = pytest.mark.integration


def _insert_evil_row(url: str, marker) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from ser_model.model import FEATURE_VERSION, sha256_bytes
    from worker.db import ModelVersion, get_engine
    from worker.registry import ensure_default_model

    data = crafted_pickle(marker)
    with Session(get_engine(url)) as s, s.begin():
        ensure_default_model(s)
        s.execute(update(ModelVersion).values(active=False))
        s.add(
            ModelVersion(
                version="evil",
                labels=["calm"],
                metrics={},
                checksum=sha256_bytes(data),
                feature_version=FEATURE_VERSION,
                active=True,
                source="db",
                bundle=data,
            )
        )


def test_crafted_model_row_runs_nothing_on_a_worker_or_the_producer(
    broker_url, pg_url, recordings, env_for, start_workers, tmp_path
):
    marker = tmp_path / "marker"
    env = env_for(pg_url, broker_url)
    start_workers(env, name="safew", concurrency=1).wait_ready()  # warm-up loaded the default
    _insert_evil_row(pg_url, marker)
    folder = recordings(3)
    p = ser_batch(["submit", str(folder)], env)  # distributed: the worker loads the active model
    assert "Traceback" not in p.stdout + p.stderr
    assert p.returncode == 0, p.stderr  # queued; the worker refuses the model and fails the rows
    batch_id = int(p.stdout.strip().splitlines()[0])
    counts = wait_batch_finished(pg_url, batch_id)
    assert counts.get("done", 0) == 0 and counts.get("failed") == 3
    errors = {str(r["error"]) for r in result_rows(pg_url, batch_id)}
    assert errors and all("pickled bundle" in e and "models convert" in e for e in errors), errors
    # embedded mode on the same database
    p = ser_batch(["submit", str(folder), "-q"], env_for(pg_url, None))
    assert "Traceback" not in p.stdout + p.stderr
    assert p.returncode != 0 and "pickled bundle" in p.stderr, p.stdout + p.stderr
    assert not marker.exists()
