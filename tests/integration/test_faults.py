"""Faults with real processes: hostile inputs through workers, Redis and PostgreSQL restarted mid-batch,
the producer interrupted mid-enqueue, a task over its time limit, passwords in worker logs.

Worker SIGKILL (whole worker and one pool process) is in ``test_distributed.py``. Every test here
ends by checking the promise of ``docs/reliability.md``: one row per submitted file, none pending,
no duplicates. The counts of each run are printed (``pytest -s``) for the issue's closing note.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import (
    REPO,
    PostgresCluster,
    batch_counts,
    free_port,
    poll,
    result_rows,
    ser_batch,
    temp_dir,
    wait_for_port,
)

from tests.hostile import MARKER, check_csv_roundtrip, check_rows, make_hostile_inputs

pytestmark = pytest.mark.integration

TASK_DONE = re.compile(
    r"ser\.classify\[[^\]]+\] succeeded in [\d.]+s: \{'done': (\d+), 'failed': (\d+), 'skipped': (\d+)\}"
)


def task_totals(*logs: str) -> dict[str, int]:
    """Sum of the counts the ``ser.classify`` tasks returned (Celery logs them on success)."""
    tot = {"tasks": 0, "analysed": 0, "skipped": 0}
    for log in logs:
        for d, f, s in TASK_DONE.findall(log):
            tot["tasks"] += 1
            tot["analysed"] += int(d) + int(f)
            tot["skipped"] += int(s)
    return tot


class OwnRedis:
    """A redis-server of this test alone (so it can be killed, restarted or given a password)."""

    def __init__(self, folder: Path, *extra: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server not installed")
        self.folder, self.extra, self.port = folder, extra, free_port()
        self.password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def url(self) -> str:
        """Broker URL (with the password, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) on the same port and folder."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--maxmemory-policy", "noeviction", "--logfile", "redis.log", *self.extra]
        self.proc = subprocess.Popen(args, start_new_session=True)
        wait_for_port(self.port)

    def kill(self) -> None:
        """SIGKILL, like a crash; returns when the process is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def own_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory of :class:`OwnRedis` servers, stopped after the test."""
    started: list[OwnRedis] = []

    def make(*extra: str) -> OwnRedis:
        r = OwnRedis(temp_dir("ser-it-rel-redis-"), *extra)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
        shutil.rmtree(r.folder, ignore_errors=True)


def _counts(url: str, batch_id: int) -> dict[str, int]:
    return batch_counts(url, batch_id)


def _wait_done_at_least(url: str, batch_id: int, n: int, timeout_s: float = 90) -> None:
    # the batch row may not be committed yet: poll counts that as "not yet"
    poll(lambda: _counts(url, batch_id)["done"] >= n, timeout_s=timeout_s, every_s=0.05, what=f"{n} files done")


def _submit_wait(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "submit", *args, "--wait", "-q"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _exactly_once(url: str, batch_id: int, folder: Path) -> list[dict[str, object]]:
    rows = result_rows(url, batch_id)
    paths = [str(r["path"]) for r in rows]
    files = sorted(str(f) for f in folder.iterdir())
    assert len(paths) == len(set(paths)), "duplicate rows"
    assert sorted(paths) == files, "lost or extra rows"
    return rows


def _report(name: str, **numbers: object) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


# ------------------------------------------------------------------------------------ hostile inputs


def test_hostile_inputs_through_workers_with_passwords_in_both_urls(
    tmp_path, pg_url, own_redis, env_for, start_workers
):
    """The embedded zoo through `ser-batch worker`; Celery's banner and logs mask both passwords."""
    pg_secret, redis_secret = "Pg5ecretPw", "R3disSecretPw"
    redis = own_redis("--requirepass", redis_secret)
    db_url = pg_url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{pg_secret}@")
    assert pg_secret in db_url  # trust authentication accepts (and ignores) the password
    folder = tmp_path / "in"
    expected = make_hostile_inputs(folder)
    env = env_for(db_url, redis.url, SER_CHUNK_SIZE="4")
    w = start_workers(env, name="hostile", concurrency=2, via_cli=True).wait_ready()
    p = ser_batch(["submit", str(folder), "--wait", "-q"], env, timeout_s=240)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    assert p.returncode == 3, p.stdout + p.stderr
    batch_id = int(p.stdout.strip().splitlines()[0])
    rows = result_rows(pg_url, batch_id)
    check_rows(rows, folder, expected)
    csv_out = ser_batch(["results", "--batch", str(batch_id), "--format", "csv"], env)
    assert csv_out.returncode == 0, csv_out.stderr
    check_csv_roundtrip(csv_out.stdout, rows)
    cfg = ser_batch(["config"], env)
    log = w.log()
    assert "Traceback" not in log, log[-3000:]
    assert re.search(r"transport:\s+redis://:\*\*@127\.0\.0\.1", log), "Celery's banner shows the broker URL masked"
    for secret in (pg_secret, redis_secret):
        for text in (log, p.stdout, p.stderr, csv_out.stderr, cfg.stdout, cfg.stderr):
            assert secret not in text
    assert not (REPO / MARKER).exists() and not list(tmp_path.rglob(MARKER))
    _report(
        "hostile/workers",
        files=len(expected),
        rows=len(rows),
        failed=sum(r["status"] == "failed" for r in rows),
        duplicates=0,
        lost=0,
    )


# ------------------------------------------------------------------------------------ Redis restart


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_batch(tmp_path, pg_url, own_redis, recordings, env_for, start_workers):
    """Redis dies (SIGKILL) mid-batch and comes back 3 s later from its append-only file (as in
    docker-compose.yml), the worker left alone: it reconnects and consumes again (worker/celery_app/consumer.py),
    every file is done within 120 s of the restart, exactly once, and `submit --wait` carries on."""
    redis = own_redis("--appendonly", "yes", "--appendfsync", "always")
    n = 240
    folder = recordings(n)
    env = env_for(
        pg_url,
        redis.url,
        SER_CHUNK_SIZE="4",
        SER_VISIBILITY_TIMEOUT_S="20",
        SER_TASK_TIME_LIMIT_S="15",
        SER_TASK_SOFT_TIME_LIMIT_S="10",
    )
    w = start_workers(env, name="w", concurrency=2).wait_ready()
    sub = _submit_wait(env, str(folder))
    _wait_done_at_least(pg_url, 1, 40)
    redis.kill()
    at_kill = _counts(pg_url, 1)
    time.sleep(3)
    redis.start()
    t_restart = time.monotonic()
    # a wait for progress, not a budget: reconnect back-off, the visibility timeout and the remaining work
    poll(lambda: _counts(pg_url, 1)["pending"] == 0, timeout_s=300, what="every file done after the restart")
    recovered_s = time.monotonic() - t_restart
    out, errs = sub.communicate(timeout=60)
    assert "Traceback" not in out + errs, errs
    assert sub.returncode == 0, out + errs
    rows = _exactly_once(pg_url, 1, folder)
    assert {r["status"] for r in rows} == {"done"}
    assert 0 < at_kill["pending"], at_kill  # the kill really was mid-batch
    assert w.proc.poll() is None, "the worker survived the broker restart"
    log = w.log()
    assert "Connection to broker lost" in log or "Cannot connect to redis" in log
    tot = task_totals(log)
    _report(
        "redis-restart",
        files=n,
        rows=len(rows),
        pending_at_kill=at_kill["pending"],
        done_s_after_restart=round(recovered_s, 1),
        duplicates=0,
        lost=0,
        analyses=tot["analysed"],
        skipped_redeliveries=tot["skipped"],
    )


# ------------------------------------------------------------------------------------ PostgreSQL restart


@pytest.fixture
def own_pg() -> PostgresCluster:  # type: ignore[misc]
    """A PostgreSQL cluster of this test alone (it is stopped mid-test)."""
    from services import ServiceUnavailable

    folder = temp_dir("ser-it-rel-pg-")
    cluster = PostgresCluster(folder)
    try:
        cluster.start()
    except ServiceUnavailable as e:
        pytest.skip(str(e))
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _pg_restart(c: PostgresCluster, down_s: float) -> None:
    """``pg_ctl stop -m fast`` (connections dropped), ``down_s`` seconds down, ``pg_ctl start``."""
    data = str(c.folder / "data")
    c._run([str(c.bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"])
    time.sleep(down_s)
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={c.port} -c unix_socket_directories={c.folder} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    c._run([str(c.bin_dir / "pg_ctl"), "-D", data, "-o", opts, "-l", str(c.folder / "pg.log"), "-w", "start"])


@pytest.mark.slow
def test_postgres_restarted_mid_batch(tmp_path, own_pg, broker_url, recordings, env_for, start_workers):
    """PostgreSQL stops (fast shutdown) mid-batch for 4 s: tasks retry with backoff, `submit --wait`
    rides it out, no row is lost or doubled."""
    from worker.storage.migrate import upgrade

    url = own_pg.create_database("faults")
    upgrade(url)
    n = 240
    folder = recordings(n)
    env = env_for(url, broker_url, SER_CHUNK_SIZE="4")
    w = start_workers(env, name="w", concurrency=2).wait_ready()
    sub = _submit_wait(env, str(folder))
    _wait_done_at_least(url, 1, 40)
    from worker.storage.db import dispose_engines

    dispose_engines()  # this test's own connections would only hold up the fast shutdown's bookkeeping
    _pg_restart(own_pg, down_s=4)
    at_restart = _counts(url, 1)
    out, errs = sub.communicate(timeout=240)
    assert "Traceback" not in out + errs, errs
    assert sub.returncode == 0, out + errs
    rows = _exactly_once(url, 1, folder)
    assert {r["status"] for r in rows} == {"done"}, {str(r["error"]) for r in rows if r["status"] != "done"}
    log = w.log()
    assert "Retry in" in log, "a task met the database down and was retried"
    assert w.proc.poll() is None
    tot = task_totals(log)
    _report(
        "postgres-restart",
        files=n,
        rows=len(rows),
        pending_after_restart=at_restart["pending"],
        retries=log.count("Retry in"),
        duplicates=0,
        lost=0,
        analyses=tot["analysed"],
    )


# ------------------------------------------------------------------------------------ producer Ctrl-C


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


INTERRUPT_AT_FIRST_MESSAGE = """
import os, signal, sys, time
import redis
client, pid = redis.Redis.from_url(sys.argv[1]), int(sys.argv[2])
end = time.monotonic() + 60
while time.monotonic() < end:
    if client.llen("classify") >= 1:
        os.kill(pid, signal.SIGINT)
        print("SIGINT at", client.llen("classify"))
        break
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print("producer gone before a message")
        break
    time.sleep(0.001)
"""


@pytest.mark.slow
def test_producer_interrupted_mid_enqueue_then_resume(
    tmp_path, pg_url, broker_url, redis_server, recordings, env_for, start_workers
):
    """SIGINT while `submit` publishes one message per file: the batch and every row stay; `submit
    --resume` queues the still-pending files; every file ends done exactly once."""
    n = 800
    folder = recordings(n)
    env = env_for(pg_url, broker_url)
    client = redis_server.client()
    prod = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "submit", str(folder), "--chunk-size", "1"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: a test run started in the background by a shell
        # (`make test &`) ignores SIGINT, a child would inherit that, and Python then never raises
        # KeyboardInterrupt (the producer would publish every message and exit 0)
        preexec_fn=_default_sigint,  # noqa: PLW1509 - only signal.signal between fork and exec
    )
    # Publishing 800 messages takes about 0.4 s: a small process of its own watches the queue and
    # sends the SIGINT at the first messages, whatever this test's process is busy with.
    watcher = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", INTERRUPT_AT_FIRST_MESSAGE, broker_url, str(prod.pid)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    try:
        out, errs = prod.communicate(timeout=30)
    finally:
        if prod.poll() is None:
            prod.kill()  # never leave a producer publishing into the next test's broker
    queued = client.llen("classify")
    assert prod.returncode == 130, f"{queued} queued; watcher: {watcher.stdout}{watcher.stderr}; " + out + errs
    assert "Traceback" not in out + errs, errs
    assert "interrupted" in errs and "submit --resume 1" in " ".join(errs.split()), errs
    assert 0 < queued < n, queued  # really interrupted in the middle of publishing
    rows = result_rows(pg_url, 1)
    assert len(rows) == n and {r["status"] for r in rows} == {"pending"}  # committed before enqueueing
    w = start_workers(env, name="w", concurrency=2).wait_ready()
    p = ser_batch(["submit", "--resume", "1", "--wait", "-q", "--chunk-size", "8"], env, timeout_s=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = _exactly_once(pg_url, 1, folder)
    assert {r["status"] for r in rows} == {"done"}
    # a pool process logs its task's counts after the task's last row write, which `--wait` may have seen first
    tot = poll(lambda: (t := task_totals(w.log()))["analysed"] >= n and t, timeout_s=60, what=f"{n} files logged")
    # The messages published before the interrupt and the resumed ones overlap; the overlap is
    # skipped by the task (rows already final), so each file is analysed about once, not twice.
    assert n <= tot["analysed"] < n + queued, tot
    _report(
        "producer-ctrl-c",
        files=n,
        queued_before_sigint=queued,
        rows=len(rows),
        duplicates=0,
        lost=0,
        analyses=tot["analysed"],
        skipped=tot["skipped"],
    )


# ------------------------------------------------------------------------------------ time limit


def test_task_over_its_time_limit_is_failed_once_not_redelivered(
    tmp_path, pg_url, broker_url, redis_server, recordings, env_for, start_workers
):
    """A chunk past SER_TASK_SOFT_TIME_LIMIT_S becomes a failed row with the reason; after more than the
    visibility timeout it has not come back (no redelivery loop), the other chunks are done."""
    import numpy as np
    import soundfile as sf

    folder = recordings(3)
    rng = np.random.default_rng(0)
    sf.write(str(folder / "zz_noise_10min.wav"), rng.uniform(-0.3, 0.3, 600 * 16000).astype(np.float32), 16000)
    env = env_for(
        pg_url,
        broker_url,
        SER_CHUNK_SIZE="1",
        SER_TASK_SOFT_TIME_LIMIT_S="4",
        SER_TASK_TIME_LIMIT_S="8",
        SER_VISIBILITY_TIMEOUT_S="12",
    )
    w = start_workers(env, name="w", concurrency=1).wait_ready()
    # 2-s windows every second: about 600 segments of the 10-minute file, about 30 s of work here (with
    # VAD segments it would finish in about a second); a 3.8-s file is 3 windows, each heard by the encoder
    # padded to 4 s: 0.06 s, 0.4 s for a pool process's first file, a tenth of the soft limit
    p = ser_batch(["submit", str(folder), "--wait", "-q", "--segment", "window:2:1"], env, timeout_s=120)
    assert p.returncode == 3, p.stdout + p.stderr
    time.sleep(15)  # > visibility timeout + the restore sweep: a redelivery would have happened by now
    rows = {Path(str(r["path"])).name: r for r in _exactly_once(pg_url, 1, folder)}
    noisy = rows.pop("zz_noise_10min.wav")
    assert noisy["status"] == "failed" and str(noisy["error"]).startswith("time limit exceeded"), noisy
    assert noisy["attempts"] == 1
    assert {r["status"] for r in rows.values()} == {"done"}
    log = w.log()
    deliveries = len(re.findall(r"ser\.classify\[[^\]]+\] received", log))
    assert deliveries == 4, "a message was delivered more than once"
    assert "redelivered chunk" not in log
    client = redis_server.client()
    assert client.llen("classify") == 0 and client.hlen("unacked") == 0
    _report("time-limit", files=4, rows=4, failed=1, deliveries=deliveries)
