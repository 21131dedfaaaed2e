"""`ser-batch worker` on a fresh SQLite file: several pool processes writing one database (WAL)."""

from __future__ import annotations

import pytest
from services import result_rows, ser_batch

pytestmark = pytest.mark.integration


def test_ser_batch_worker_on_fresh_sqlite_with_two_processes(broker_url, recordings, env_for, start_workers, tmp_path):
    folder = recordings(40)
    (folder / "zz_corrupt.wav").write_bytes(b"RIFF....WAVEfmt nothing here")
    db = tmp_path / "fresh" / "ser.db"  # neither the folder nor the schema exist yet
    env = env_for(f"sqlite:///{db}", broker_url, SER_CHUNK_SIZE="2")
    w = start_workers(env, name="cli", concurrency=2, via_cli=True).wait_ready()
    assert "starting: -m celery -A worker.celery_app worker" in " ".join(w.log().split())
    p = ser_batch(["submit", str(folder), "--wait"], env, timeout_s=180)
    assert p.returncode == 3, p.stderr  # finished, some failed: the embedded mode's exit code
    assert "40 done" in p.stdout and "1 failed" in p.stdout
    rows = result_rows(f"sqlite:///{db}")
    assert sorted(str(r["path"]) for r in rows) == sorted(str(f) for f in folder.iterdir())
    status = {str(r["path"]).rsplit("/", 1)[1]: r["status"] for r in rows}
    assert status.pop("zz_corrupt.wav") == "failed"
    assert set(status.values()) == {"done"}
    assert {"ForkPoolWorker-1", "ForkPoolWorker-2"} <= {
        ln.split("/")[1].split("]")[0] for ln in w.log().splitlines() if "succeeded in" in ln
    }  # both pool processes wrote rows
    r = ser_batch(["results", "--batch", "1", "--format", "csv"], env)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 42  # header + 41 files


def test_worker_refuses_to_start_without_broker(tmp_path, env_for):
    p = ser_batch(["worker"], env_for(f"sqlite:///{tmp_path / 'x.db'}", None))
    assert p.returncode == 2
    assert "SER_BROKER_URL" in p.stderr


def test_worker_refuses_time_limits_above_the_visibility_timeout(tmp_path, env_for):
    env = env_for(f"sqlite:///{tmp_path / 'x.db'}", "redis://127.0.0.1:1/0", SER_VISIBILITY_TIMEOUT_S="100")
    p = ser_batch(["worker"], env)
    assert p.returncode == 2
    assert "SER_TASK_TIME_LIMIT_S < SER_VISIBILITY_TIMEOUT_S" in " ".join(p.stderr.split())
