"""rescore, diff and report in distributed mode: real Redis, PostgreSQL and a Celery worker."""

from __future__ import annotations

import json
import re

import pytest
from services import result_rows, ser_batch

from tests.unit.test_after_labels import register_swapped_model

pytestmark = pytest.mark.integration


def test_rescore_pinned_model_reaches_the_workers_and_diff_report_work_on_postgres(
    broker_url, pg_url, recordings, env_for, start_workers, tmp_path
):
    env = env_for(pg_url, broker_url)
    start_workers(env, name="rescorew", concurrency=2).wait_ready()
    folder = recordings(16)
    p = ser_batch(["submit", str(folder), "--wait", "-q"], env, timeout_s=180)
    assert p.returncode == 0, p.stderr
    a = {str(r["path"]): r for r in result_rows(pg_url, 1)}
    version = register_swapped_model(pg_url, tmp_path, ("angry", "sad"))
    r = ser_batch(["rescore", "1", "--model", version, "--wait", "-q"], env, timeout_s=180)
    assert r.returncode == 0, r.stderr
    new_id = int(r.stdout.strip().splitlines()[0])
    b = {str(x["path"]): x for x in result_rows(pg_url, new_id)}
    assert set(b) == set(a)
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, get_engine

    with Session(get_engine(pg_url)) as s:
        used = set(s.scalars(select(Result.model_version).where(Result.batch_id == new_id)))
    assert used == {version}  # the pinned model travelled in the messages to the worker
    swap = {"angry": "sad", "sad": "angry"}
    expected = {p: swap[x["emotion"]] for p, x in a.items() if x["emotion"] in swap}
    d = json.loads(ser_batch(["diff", "1", str(new_id), "--format", "json"], env).stdout)
    assert {c["path"]: c["emotion_b"] for c in d["changed"]} == expected
    html = tmp_path / "r.html"
    rep = ser_batch(["report", str(new_id), "-o", str(html)], env)
    assert rep.returncode == 0, rep.stderr
    text = html.read_text()
    assert re.search(r'id="count-done">16<', text) and version in text and "distributed mode" in text
