"""Retraining with real parts: a ser.train job on its own queue while a classify batch runs, and an
activation that reaches a running worker without a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from services import REPO, result_rows, ser_batch, wait_batch_finished

pytestmark = pytest.mark.integration

TESS_DIR = REPO.parent / "shared" / "data" / "tess"


def _start_training_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "training"]
    args += ["--concurrency=1", "--hostname=trainer@%h", "--loglevel=info", "--without-gossip", "--without-mingle"]
    fh = open(log, "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return proc


def test_training_job_runs_beside_a_batch_and_activation_reaches_the_worker(
    broker_url, pg_url, recordings, env_for, start_workers, tmp_path
):
    if not TESS_DIR.is_dir():
        pytest.skip(f"TESS not found at {TESS_DIR}")
    env = env_for(
        pg_url, broker_url, SER_MODEL_DIR=str(tmp_path / "models"), SER_FEATURE_CACHE_DIR=str(tmp_path / "fc")
    )
    classify_worker = start_workers(env, name="classifier", concurrency=1).wait_ready()
    trainer = _start_training_worker(env, tmp_path / "trainer.log")
    try:
        folder = recordings(40)
        first = ser_batch(["submit", str(folder)], env)
        assert first.returncode == 0, first.stderr
        batch1 = int(first.stdout.strip().splitlines()[0])
        # the training job is queued while batch 1 is being classified
        folders = [str(TESS_DIR / f"{spk}_{emo}") for spk in ("OAF", "YAF") for emo in ("angry", "sad")]
        # the fast feature set keeps this queue test short; the accurate default is trained in test_datasets_registry
        train = [
            "train",
            *folders,
            "--dataset",
            "tess",
            "--folds",
            "2",
            "--activate",
            "--features",
            "fast",
            "--conditions",
            "0",
        ]
        t = ser_batch(train, env, timeout_s=900)
        assert t.returncode == 0, t.stdout + t.stderr + (tmp_path / "trainer.log").read_text()[-3000:]
        assert "registered model version" in t.stdout and "speaker-independent" in t.stdout
        counts = wait_batch_finished(pg_url, batch1, timeout_s=300)
        assert counts["done"] == 40 and counts["pending"] == 0
        rows1 = result_rows(pg_url, batch1)
        assert len(rows1) == 40 and {r["emotion"] for r in rows1} - {"angry", "sad"}  # default model: 8 labels
        # the same, still running classify worker now labels with the newly activated model
        second = ser_batch(["submit", str(folder), "--wait", "-q"], env)
        assert second.returncode == 0, second.stdout + second.stderr
        batch2 = batch1 + 1
        from sqlalchemy import text

        from worker.storage.db import get_engine

        with get_engine(pg_url).connect() as c:
            v1 = {
                r[0]
                for r in c.execute(
                    text("SELECT DISTINCT model_version FROM results WHERE batch_id = :b"), {"b": batch1}
                )
            }
            v2 = {
                r[0]
                for r in c.execute(
                    text("SELECT DISTINCT model_version FROM results WHERE batch_id = :b"), {"b": batch2}
                )
            }
            active = c.execute(text("SELECT version FROM models WHERE active")).scalars().all()
            job = c.execute(text("SELECT status FROM jobs")).scalars().all()
        assert len(v1) == 1 and next(iter(v1)).startswith("default-")
        assert v2 == set(active) and next(iter(v2)).startswith("tess2-")
        assert {r["emotion"] for r in result_rows(pg_url, batch2)} <= {"angry", "sad"}
        assert job == ["done"]
        assert classify_worker.proc.poll() is None  # never restarted
    finally:
        trainer.terminate()
        try:
            trainer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            trainer.kill()
