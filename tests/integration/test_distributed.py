"""Distributed mode end to end: real redis-server, real PostgreSQL, real Celery worker processes."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import REPO, SLOW_SEGMENTS, batch_counts, poll, result_rows, ser_batch, wait_batch_finished

from worker.celery_app.config import make_app, restore_timing
from worker.settings import Settings

pytestmark = pytest.mark.integration


def _batch_id(stdout: str) -> int:
    """The batch id `submit` prints on stdout (its first line)."""
    return int(stdout.strip().splitlines()[0])


def _embedded_labels(env_for, tmp_path: Path, folder: Path) -> dict[str, tuple[str, float]]:
    db = tmp_path / "embedded.db"
    env = env_for(f"sqlite:///{db}", None)
    p = ser_batch(["submit", str(folder), "-j", "2", "-q"], env)
    assert p.returncode == 0, p.stderr
    rows = result_rows(f"sqlite:///{db}")
    return {str(r["path"]): (str(r["emotion"]), float(r["confidence"])) for r in rows}  # type: ignore[arg-type]


def _flags(url: str, batch_id: int | None = None) -> dict[str, tuple[float, bool, bool]]:
    """``{path: (ood_score, out_of_domain, low_confidence)}`` of a database's result rows."""
    return {
        str(r["path"]): (float(r["ood_score"]), bool(r["out_of_domain"]), bool(r["low_confidence"]))  # type: ignore[arg-type]
        for r in result_rows(url, batch_id)
    }


def _task_args(message: dict) -> list:  # type: ignore[type-arg]
    """The positional arguments of a task message as kombu's Redis transport stores it (body base64-wrapped)."""
    return json.loads(base64.b64decode(message["body"]))[0]


def _unacked_state(client) -> str:  # type: ignore[no-untyped-def]
    """What Redis holds unacknowledged: each message's task, chunk and age, the restore mutex, the queue."""
    now = time.time()
    ages = dict(client.zrange("unacked_index", 0, -1, withscores=True))
    held = []
    for tag, raw in client.hgetall("unacked").items():
        message = json.loads(raw)[0]
        message = json.loads(message) if isinstance(message, str) else message
        held.append(f"{message['headers'].get('task')} {_task_args(message)[1]} age {now - ages.get(tag, now):.1f} s")
    return (
        f"unacked: {held}; unacked_mutex ttl {client.ttl('unacked_mutex')} s; classify queue {client.llen('classify')}"
    )


PRODUCER_SCRIPT = """
import json, sys
sys.argv = ["ser-batch", "submit", sys.argv[1], "--chunk-size", "5"]
from producer.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"librosa", "sklearn", "numba"})
print(json.dumps({"code": code, "heavy": heavy, "celery": "celery" in sys.modules}), file=sys.stderr)
"""


def test_submit_enqueues_by_name_without_ml_libraries(broker_url, pg_url, recordings, env_for, redis_server):
    folder = recordings(12)
    env = env_for(pg_url, broker_url)
    p = subprocess.run(
        [sys.executable, "-c", PRODUCER_SCRIPT, str(folder)], env=env, cwd=REPO, capture_output=True, text=True
    )
    report = json.loads(p.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, p.stderr
    assert report["celery"], "the producer should publish with Celery"
    assert report["heavy"] == [], f"the producer imported {report['heavy']}"
    batch_id = _batch_id(p.stdout)
    # The batch and one pending row per file were committed; 12 files / 5 per task = 3 messages.
    rows = result_rows(pg_url, batch_id)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"pending"}
    client = redis_server.client()
    assert client.llen("classify") == math.ceil(12 / 5)
    chunks = []
    for raw in client.lrange("classify", 0, -1):
        message = json.loads(raw)
        assert message["content-type"] == "application/json"  # JSON serializer, never pickle
        assert message["headers"]["task"] == "ser.classify"
        args = _task_args(message)
        assert args[0] == batch_id
        chunks.append(args[1])
    assert sorted(len(c) for c in chunks) == [2, 5, 5]
    assert sorted(p for c in chunks for p in c) == sorted(str(r["path"]) for r in rows)


def test_distributed_labels_equal_embedded_and_status_reports_completion(
    broker_url, pg_url, recordings, env_for, start_workers, tmp_path
):
    folder = recordings(24)
    expected = _embedded_labels(env_for, tmp_path, folder)
    assert len(expected) == 24
    env = env_for(pg_url, broker_url, SER_CHUNK_SIZE="4")
    start_workers(env, name="w1", concurrency=2).wait_ready()
    p = ser_batch(["submit", str(folder), "--wait"], env, timeout_s=180)
    assert p.returncode == 0, p.stderr
    batch_id = _batch_id(p.stdout)
    assert "24 done" in p.stdout
    rows = result_rows(pg_url, batch_id)
    assert sorted(str(r["path"]) for r in rows) == sorted(expected)  # exactly one row per file
    got = {str(r["path"]): (r["status"], r["emotion"], r["confidence"]) for r in rows}
    for path, (emotion, confidence) in expected.items():
        status, emo, conf = got[path]
        assert status == "done"
        assert emo == emotion, path
        assert conf == pytest.approx(confidence, abs=1e-6)
    csv_out = ser_batch(["results", "--batch", str(batch_id), "--format", "csv"], env)
    assert csv_out.returncode == 0 and len(csv_out.stdout.strip().splitlines()) == 25  # header + 24
    st = ser_batch(["status", str(batch_id)], env)
    assert st.returncode == 0, st.stderr
    lines = {ln.strip("│ ").split("│")[0].strip(): ln for ln in st.stdout.splitlines() if "│" in ln}
    assert "done" in lines["status"]
    assert lines["done"].split("│")[2].strip() == "24"
    assert lines["pending"].split("│")[2].strip() == "0"
    assert float(lines["files/s"].split("│")[2].strip()) > 0
    assert lines["ETA"].split("│")[2].strip() == "0 s"
    # trust flags: computed by the workers exactly as embedded mode computes them
    emb = _flags(f"sqlite:///{tmp_path / 'embedded.db'}")
    dist = _flags(pg_url, batch_id)
    assert set(emb) == set(dist)
    for path, (score, ood, low) in emb.items():
        assert dist[path][0] == pytest.approx(score, rel=1e-6), path
        assert dist[path][1:] == (ood, low), path
    js = ser_batch(["status", str(batch_id), "--format", "json"], env)
    assert js.returncode == 0, js.stderr
    status = json.loads(js.stdout)
    assert status["counts"]["low_confidence"] == sum(low for _, _, low in emb.values())
    assert status["counts"]["out_of_domain"] == sum(ood for _, ood, _ in emb.values())
    assert isinstance(status["warnings"], list)


def test_two_worker_processes_share_one_batch(broker_url, pg_url, recordings, env_for, start_workers):
    folder = recordings(96)
    env = env_for(pg_url, broker_url, SER_CHUNK_SIZE="2")
    w1 = start_workers(env, name="w1", concurrency=1)
    w2 = start_workers(env, name="w2", concurrency=1)
    w1.wait_ready()
    w2.wait_ready()
    p = ser_batch(["submit", str(folder), "--wait", "-q"], env, timeout_s=180)
    assert p.returncode == 0, p.stderr
    rows = result_rows(pg_url, _batch_id(p.stdout))
    files = sorted(str(f) for f in folder.iterdir())
    assert sorted(str(r["path"]) for r in rows) == files  # no missing and no duplicate row
    assert {r["status"] for r in rows} == {"done"}
    assert {r["attempts"] for r in rows} == {1}  # every file was started exactly once
    # a task is logged as succeeded after its last row write, which `--wait` may have seen first
    poll(lambda: w1.tasks_succeeded() + w2.tasks_succeeded() >= 48, timeout_s=60, what="48 tasks logged")
    n1, n2 = w1.tasks_succeeded(), w2.tasks_succeeded()
    assert n1 > 0 and n2 > 0, (n1, n2)  # both workers took part
    assert n1 + n2 == 48


def test_worker_killed_mid_batch_then_replaced_leaves_every_file_done_once(
    broker_url, pg_url, recordings, env_for, start_workers, redis_server
):
    folder = recordings(200)
    # A small visibility timeout so that the dead worker's unacknowledged messages come back quickly; the time
    # limits below it still give a chunk (about 2 s here) four times its time on a busy machine.
    limits = {"visibility_timeout_s": 12, "task_time_limit_s": 10, "task_soft_time_limit_s": 9}
    env = env_for(
        pg_url,
        broker_url,
        SER_CHUNK_SIZE="4",
        **{f"SER_{k.upper()}": str(v) for k, v in limits.items()},
        SER_LEASE_S="5",
        SER_HEARTBEAT_S="1",
        SER_SWEEP_INTERVAL_S="1",
    )
    doomed = start_workers(env, name="doomed", concurrency=2)
    doomed.wait_ready()
    p = ser_batch(["submit", str(folder), *SLOW_SEGMENTS], env)
    assert p.returncode == 0, p.stderr
    batch_id = _batch_id(p.stdout)

    def started() -> set[str]:
        """Pending files a pool process has begun (their chunk is in flight)."""
        rows = result_rows(pg_url, batch_id)
        return {str(r["path"]) for r in rows if r["status"] == "pending" and int(r["attempts"]) >= 1}  # type: ignore[call-overload]

    # Kill while a chunk is being processed (not in the few ms between two chunks), so that it must be redone.
    poll(
        lambda: batch_counts(pg_url, batch_id)["done"] >= 20 and started(),
        timeout_s=60,
        every_s=0.02,
        what="20 files done and a chunk in flight",
    )
    doomed.kill()  # SIGKILL to the main process and its pool: nothing is acknowledged any more
    c = batch_counts(pg_url, batch_id)
    assert 0 < c["pending"] < 200, c
    in_flight = started()
    assert in_flight, "the chunk in flight finished before the kill; nothing to redo"
    client = redis_server.client()
    dead_tags = set(client.hkeys("unacked"))
    assert dead_tags  # messages were in flight when it died
    # The worst moment to die: in the middle of kombu's sweep for dead workers' messages, holding its lock (a
    # worker sweeps every second here, so a SIGKILL sometimes lands there; with kombu's 300-s lock expiry, the
    # dead worker's messages then stayed unacknowledged for five minutes). Left behind as a dying worker leaves it.
    settings = Settings(broker_url=broker_url, **limits)  # type: ignore[arg-type]
    restore_every_s, mutex_s = restore_timing(settings)
    with make_app(settings).connection_for_write() as conn:
        assert conn.default_channel.unacked_mutex_expire == mutex_s  # the expiry kombu gives the lock it takes
    client.set("unacked_mutex", "token of the dead worker", ex=mutex_s)
    fresh = start_workers(env, name="fresh", concurrency=2)
    fresh.wait_ready()
    # Its messages are given back once the visibility timeout and the lock have expired, at the next sweep.
    try:
        poll(
            lambda: not dead_tags & set(client.hkeys("unacked")),
            timeout_s=limits["visibility_timeout_s"] + mutex_s + 2 * restore_every_s + 10,
            what="the dead worker's messages given back",
        )
    except TimeoutError as e:
        raise AssertionError(f"{e}; {_unacked_state(client)}") from None
    # the fresh worker's sweeper recovers the files (a wait for progress, not a budget)
    counts = wait_batch_finished(pg_url, batch_id, timeout_s=300)
    assert counts == {"pending": 0, "done": 200, "failed": 0, "total": 200}
    rows = result_rows(pg_url, batch_id)
    assert sorted(str(r["path"]) for r in rows) == sorted(str(f) for f in folder.iterdir())
    assert fresh.tasks_succeeded() > 0
    assert "redelivered chunk" in fresh.log()  # the dead worker's chunks came back and were redone
    attempts = {str(r["path"]): int(r["attempts"]) for r in rows}  # type: ignore[call-overload]
    assert all(attempts[p] >= 2 for p in in_flight), {p: attempts[p] for p in in_flight}  # started again
    # every message of the dead worker is dealt with (the last acknowledgements follow the last row writes)
    try:
        poll(lambda: client.hlen("unacked") == 0, timeout_s=20, what="no unacknowledged message")
    except TimeoutError as e:
        raise AssertionError(f"{e}; {_unacked_state(client)}; fresh worker log tail:\n{fresh.log()[-3000:]}") from None


def test_pool_process_killed_mid_task_is_replaced_and_its_chunk_requeued(
    broker_url, pg_url, recordings, env_for, start_workers
):
    import os
    import signal

    folder = recordings(120)
    env = env_for(pg_url, broker_url, SER_CHUNK_SIZE="4")
    w = start_workers(env, name="w", concurrency=2).wait_ready()
    children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read_text().split()
    assert len(children) == 2
    p = ser_batch(["submit", str(folder), *SLOW_SEGMENTS], env)
    assert p.returncode == 0, p.stderr
    batch_id = _batch_id(p.stdout)
    poll(lambda: batch_counts(pg_url, batch_id)["done"] >= 12, timeout_s=60, every_s=0.02, what="12 files done")
    os.kill(int(children[0]), signal.SIGKILL)  # the OOM killer's way; the main process survives
    counts = wait_batch_finished(pg_url, batch_id, timeout_s=300)  # a wait for progress, not a budget
    assert counts == {"pending": 0, "done": 120, "failed": 0, "total": 120}
    rows = result_rows(pg_url, batch_id)
    assert sorted(str(r["path"]) for r in rows) == sorted(str(f) for f in folder.iterdir())
    assert "signal 9" in w.log()  # Celery saw its pool process die ...
    assert w.proc.poll() is None  # ... and the worker carried on with a new one


def test_broker_down_at_submit_keeps_the_batch_for_resume(broker_url, pg_url, recordings, env_for, redis_server):
    from services import free_port

    folder = recordings(10)
    dead = env_for(pg_url, f"redis://127.0.0.1:{free_port()}/0")
    p = ser_batch(["submit", str(folder)], dead)
    assert p.returncode == 1
    assert "submit --resume 1" in " ".join(p.stderr.split())
    assert {r["status"] for r in result_rows(pg_url, 1)} == {"pending"}
    p = ser_batch(["submit", "--resume", "1", "--chunk-size", "4"], env_for(pg_url, broker_url))
    assert p.returncode == 0, p.stderr
    assert _batch_id(p.stdout) == 1
    assert redis_server.client().llen("classify") == 3  # 10 pending files in chunks of 4


def test_split_channels_distributed_equal_embedded(broker_url, pg_url, env_for, start_workers, tmp_path):
    """--channels split through Celery workers on PostgreSQL: the same (file, channel) rows as embedded."""
    import numpy as np
    import soundfile as sf

    from ser_model.audio import load_audio
    from ser_model.callsim import build_call
    from tests.conftest import RAVDESS

    if not RAVDESS.is_dir():
        pytest.skip(f"corpus not found at {RAVDESS}")
    folder = tmp_path / "calls"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(3):
        files = [sorted((RAVDESS / f"Actor_{a:02d}").glob("*.flac"))[i * 7 :: 13][:3] for a in (10, 11)]
        utts = [(k % 2, load_audio(files[k % 2][k // 2])[0], "") for k in range(6)]
        call, _ = build_call(utts, overlap_prob=0.3, bleed_db=-25.0, rng=rng)
        sf.write(folder / f"call{i}.wav", call, 16000, subtype="PCM_16")
    args = ["submit", str(folder), "--channels", "split", "--channel-names", "agent,customer"]
    db = tmp_path / "embedded.db"
    p = ser_batch([*args, "-j", "2", "-q"], env_for(f"sqlite:///{db}", None))
    assert p.returncode == 0, p.stderr
    expected = {(str(r["path"]), r["channel"]): (r["role"], r["emotion"]) for r in result_rows(f"sqlite:///{db}")}
    assert len(expected) == 6
    env = env_for(pg_url, broker_url, SER_CHUNK_SIZE="2")
    start_workers(env, name="w1", concurrency=2).wait_ready()
    p = ser_batch([*args, "--wait"], env, timeout_s=180)
    assert p.returncode == 0, p.stderr
    rows = result_rows(pg_url, _batch_id(p.stdout))
    assert {(str(r["path"]), r["channel"]): (r["role"], r["emotion"]) for r in rows} == expected
