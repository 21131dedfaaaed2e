"""The ``ser.train`` Celery task: a training job on the ``training`` queue, progress in the ``jobs`` table.

Training is not idempotent (it registers a new model version), so unlike ``ser.classify`` it is
acknowledged when it starts (``acks_late=False``): a worker that dies mid-training loses the job,
which the CLI reports, instead of training twice. Run it on a worker of its own with
``ser-batch worker --queues training --concurrency 1``: a Celery pool process cannot start a process
pool of its own, so features are extracted in the task's process, one file at a time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.orm import Session

from worker.celery_app.app import app
from worker.celery_app.config import TRAIN_TASK, TRAINING_QUEUE
from worker.storage.db import Job, get_engine, utcnow

log = logging.getLogger(__name__)


def _update_job(job_id: str, **values: Any) -> None:
    with Session(get_engine()) as s, s.begin():
        job = s.get(Job, job_id)
        if job is None:  # submitted by an older CLI or the row was deleted: recreate it
            job = Job(id=job_id, kind="train", request={})
            s.add(job)
        for k, v in values.items():
            setattr(job, k, v)
        job.updated_at = utcnow()


@app.task(
    name=TRAIN_TASK, queue=TRAINING_QUEUE, acks_late=False, ignore_result=True, soft_time_limit=None, time_limit=None
)
def train(job_id: str, request: dict[str, Any]) -> None:
    """Run :func:`worker.training.run_training` for ``request``; progress and outcome go to job ``job_id``.

    Args:
        job_id: row of the ``jobs`` table the CLI follows.
        request: :class:`worker.training.TrainRequest` as a dict.
    """
    from worker.training import TrainRequest, run_training

    req = TrainRequest(**request)
    req.workers = 1  # no process pool inside a pool process
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            _update_job(job_id, stage=stage, done=done, total=total)

    _update_job(job_id, status="running", stage="starting")
    try:
        outcome = run_training(req, progress=progress, log=log.info)
    except Exception as e:  # noqa: BLE001 - the job row carries the reason to the user
        log.exception("training job %s failed", job_id)
        _update_job(job_id, status="failed", message=f"{type(e).__name__}: {' '.join(str(e).split())[:500]}")
        return
    _update_job(job_id, status="done", result=outcome.__dict__, message=f"registered {outcome.version}")
