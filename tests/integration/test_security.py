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
    from worker.storage.db import ModelVersion, get_engine
    from worker.storage.registry import ensure_default_model

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
    late = start_workers(env, name="safew2", concurrency=1).wait_ready()  # its warm-up meets the crafted row
    assert "pickled bundle" in late.log() and not marker.exists()
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


def _login(pg_cluster, url: str, name: str, group: str) -> str:
    """A login role ``name`` in ``group`` (trust auth: no password); its URL for ``url``'s database."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE {group}")
    return url.replace("postgres@", f"{name}@", 1)


def test_roles_reader_cannot_change_a_result_and_worker_cannot_write_a_model(pg_cluster, pg_url, recordings, env_for):
    import psycopg
    from sqlalchemy.engine import make_url

    from worker.urls import safe_url

    prefix = "t" + pg_url.rsplit("_", 1)[-1]  # roles are per cluster: one set per test database
    p = ser_batch(["db", "roles", "--apply", "--prefix", prefix], env_for(pg_url, None))
    assert p.returncode == 0, p.stderr
    admin = _login(pg_cluster, pg_url, f"{prefix}_adm1", f"{prefix}_admin")
    worker = _login(pg_cluster, pg_url, f"{prefix}_wrk1", f"{prefix}_worker")
    reader = _login(pg_cluster, pg_url, f"{prefix}_rdr1", f"{prefix}_reader")

    p = ser_batch(["models", "list"], env_for(admin, None))  # the admin registers the packaged default
    assert p.returncode == 0, p.stderr
    folder = recordings(2)
    hook = "http://127.0.0.1:9/hook/T0KEN"  # nothing listens: delivery fails, the batch does not
    p = ser_batch(["submit", str(folder), "-q", "--notify", hook], env_for(worker, None))
    assert p.returncode == 0, p.stdout + p.stderr  # a worker writes batches, results, jobs, webhooks

    def connect(url: str):
        u = make_url(url)
        return psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True)

    with connect(worker) as conn:
        (version,) = conn.execute("SELECT version FROM models").fetchone()  # reads models
        for stmt in (
            "INSERT INTO models (version, labels, metrics, checksum, feature_version, active, source, created_at) "
            "VALUES ('planted', '[]', '{}', 'x', 'x', true, 'db', now())",
            "UPDATE models SET active = true",
            "UPDATE models SET bundle = 'x'::bytea",
            "DELETE FROM models",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    with connect(reader) as conn:
        rows = conn.execute("SELECT status, emotion FROM results").fetchall()
        assert len(rows) == 2 and all(st == "done" for st, _ in rows)
        (options,) = conn.execute("SELECT options FROM batches").fetchone()
        assert options["notify_url"] == safe_url(hook) and "T0KEN" not in str(options)
        for stmt in (
            "UPDATE results SET emotion = 'angry'",
            "DELETE FROM results",
            "INSERT INTO batches (source_paths, status, mode, n_files, n_done, n_failed, n_ignored, options, "
            "created_at) VALUES ('[]', 'done', 'embedded', 0, 0, 0, 0, '{}', now())",
            "SELECT url FROM batch_webhooks",
            "UPDATE models SET active = false",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    p = ser_batch(["results", "--format", "csv"], env_for(reader, None))  # reading through the CLI works
    assert p.returncode == 0 and p.stdout.count("\n") >= 3, p.stderr
    p = ser_batch(["models", "activate", version], env_for(worker, None))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "permission denied for table models" in p.stderr and "db roles" in p.stderr, p.stderr
