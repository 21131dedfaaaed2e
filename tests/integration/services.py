"""Real services for integration tests and benchmarks: redis-server, a PostgreSQL cluster, Celery workers.

Each service runs on a free loopback port in a temporary folder and is stopped by its own process id.
PostgreSQL refuses to run as root, so as root the cluster is created and started as the ``postgres``
user (``runuser``) in a folder that user owns. Nothing here is a mock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServiceUnavailable(RuntimeError):
    """A binary the service needs is not installed (tests skip with this reason)."""


SLOW_SEGMENTS = ("--segment-min-s", "1", "--segment", "window:1:0.25")
"""`submit` options that make every 3.8-s RAVDESS file 13 window classifications (about 0.2 s: the
default model's encoder hears every window padded to 4 s).

The fault tests kill a worker *while it holds work*; with whole-file classification a 200-file batch
now takes about a second on two idle cores, and the kill could land after the last chunk. Windows keep
the same files (same rows, one per file) but make the batch last seconds, whatever the extractor speed.
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], T], *, timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Call ``check`` every ``every_s`` seconds until it returns a truthy value, for at most ``timeout_s``.

    The one bounded wait of the integration tests: exceptions from ``check`` (a database or broker
    still starting) count as "not yet" and the last one is named in the timeout message; a failed
    ``assert`` inside ``check`` fails at once.

    Returns:
        The first truthy value ``check`` returned.

    Raises:
        TimeoutError: ``check`` never returned a truthy value in time; the message says ``what`` was
            awaited and the last value or error seen.
    """
    end = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError:
            raise  # a failed assertion inside the check is a test failure, not "not yet"
        except Exception as e:  # a service still starting counts as "not yet"
            last = e
        if time.monotonic() >= end:
            raise TimeoutError(f"{what}: not reached after {timeout_s} s (last: {last!r})")
        time.sleep(every_s)


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``.

    Raises:
        TimeoutError: nothing listened within ``timeout_s`` seconds.
    """

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    poll(listening, timeout_s=timeout_s, every_s=0.05, what=f"something listening on port {port}")


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL it if it is still there."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass
class RedisServer:
    """A redis-server on a free loopback port, data in ``folder`` (no persistence)."""

    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts connections.

        Raises:
            ServiceUnavailable: redis-server is not installed.
        """
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServiceUnavailable("redis-server not installed (apt-get install redis-server)")
        self.port = free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction", "--logfile", "redis.log"]
        self.proc = subprocess.Popen(args, start_new_session=True)
        wait_for_port(self.port)
        return self

    def client(self):  # type: ignore[no-untyped-def]
        """A redis-py client on database 0."""
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None:
            _stop(self.proc)


@dataclass
class PostgresCluster:
    """A throw-away PostgreSQL cluster: trust auth, a unix socket in its folder, a free loopback port."""

    folder: Path
    port: int = 0
    bin_dir: Path | None = None
    pid: int | None = None
    _as_postgres: list[str] = field(default_factory=list)

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        return subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, text=True, **kw)

    def start(self) -> PostgresCluster:
        """``initdb`` + ``pg_ctl start``; as root both run as the ``postgres`` user.

        Raises:
            ServiceUnavailable: PostgreSQL binaries (or, as root, the postgres user / runuser) missing.
        """
        bins = [d for d in PG_BIN_DIRS if (d / "initdb").exists() and (d / "pg_ctl").exists()]
        if shutil.which("initdb") and shutil.which("pg_ctl"):
            bins.insert(0, Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
        if not bins:
            raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin_dir = bins[0]
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServiceUnavailable("running as root and runuser is missing (PostgreSQL refuses root)")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable("running as root and there is no postgres user") from None
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        data = self.folder / "data"
        self._run(
            [str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(self.folder / "pg.log"),
                "-w",
                "start",
            ]
        )
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        return self

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of database ``dbname`` over TCP on the loopback."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        """``CREATE DATABASE dbname``; returns its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; SIGINT (fast shutdown) to the recorded postmaster if its folder is gone."""
        if self.bin_dir is not None and (self.folder / "data" / "postmaster.pid").exists():
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])
        elif self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            pid = self.pid
            try:
                poll(lambda: not Path(f"/proc/{pid}").exists(), timeout_s=15, what=f"postmaster {pid} gone")
            except TimeoutError:
                pass  # best effort at the end of a session


def service_env(database_url: str, broker_url: str | None, **extra: str) -> dict[str, str]:
    """Environment for a ser-batch or celery subprocess pointing at the given services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_DATABASE_URL"] = database_url
    if broker_url:
        env["SER_BROKER_URL"] = broker_url
    env.setdefault("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR", "/tmp/numbacache"))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """A real ``celery -A worker.celery_app worker`` subprocess (its own process group)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> WorkerProcess:
        """Block until the worker logs ``ready`` (after its warm-up).

        Raises:
            RuntimeError: the worker exited or was not ready within ``timeout_s`` seconds.
        """

        def ready_or_exited() -> str | None:
            if " ready." in self.log():
                return "ready"
            return "exited" if self.proc.poll() is not None else None

        try:
            state = poll(ready_or_exited, timeout_s=timeout_s, every_s=0.2, what=f"worker {self.name} ready")
        except TimeoutError:
            raise RuntimeError(f"worker {self.name} not ready after {timeout_s} s:\n{self.log()[-4000:]}") from None
        if state == "exited":
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (main process and pool), like a machine dying."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), SIGKILL after 15 s."""
        _stop(self.proc)

    def tasks_succeeded(self) -> int:
        """Number of ``ser.classify`` tasks this worker logged as succeeded."""
        return self.log().count("succeeded in")


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str,
    concurrency: int = 1,
    via_cli: bool = False,
) -> WorkerProcess:
    """Start a worker subprocess (not yet waited for; see :meth:`WorkerProcess.wait_ready`).

    Args:
        env: environment (see :func:`service_env`).
        log_dir: its log goes to ``log_dir / f"{name}.log"``.
        name: node name prefix (``name@%h``).
        concurrency: pool processes.
        via_cli: start with ``ser-batch worker`` instead of the plain ``celery`` command.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    if via_cli:
        args = [sys.executable, "-m", "producer.cli", "worker", "-c", str(concurrency), "-n", f"{name}@%h"]
    else:
        args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "classify"]
        args += [f"--concurrency={concurrency}", f"--hostname={name}@%h", "--loglevel=info"]
        args += ["--without-gossip", "--without-mingle"]
    fh = open(log_path, "wb")  # noqa: SIM115 - kept open by the child
    proc = subprocess.Popen(args, env=dict(env), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return WorkerProcess(proc=proc, log_path=log_path, name=name)


def ser_batch(args: list[str], env: Mapping[str, str], timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run ``ser-batch ARGS`` in a subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def temp_dir(prefix: str) -> Path:
    """A new folder under the system temp dir (world-traversable, for the postgres user)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def result_rows(database_url: str, batch_id: int | None = None) -> list[dict[str, object]]:
    """Every ``results`` row (of one batch, or all) as dicts, ordered by id."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, get_engine

    q = select(Result).order_by(Result.id)
    if batch_id is not None:
        q = q.where(Result.batch_id == batch_id)
    with Session(get_engine(database_url)) as s:
        return [
            {
                c: getattr(r, c)
                for c in (
                    "batch_id",
                    "path",
                    "channel",
                    "role",
                    "status",
                    "emotion",
                    "confidence",
                    "error",
                    "attempts",
                    "ood_score",
                    "out_of_domain",
                    "low_confidence",
                )
            }
            | {"probabilities": r.probabilities}
            for r in s.scalars(q)
        ]


def wait_batch_finished(database_url: str, batch_id: int, timeout_s: float = 120.0) -> dict[str, int]:
    """Poll until no row of ``batch_id`` is pending; returns the counts.

    Raises:
        TimeoutError: rows still pending after ``timeout_s`` seconds.
    """

    def finished() -> dict[str, int] | None:
        counts = batch_counts(database_url, batch_id)
        return counts if counts["total"] and counts["pending"] == 0 else None

    return poll(finished, timeout_s=timeout_s, what=f"batch {batch_id} finished")


def batch_counts(database_url: str, batch_id: int) -> dict[str, int]:
    """``{"pending", "done", "failed", "total"}`` counted from the batch's rows."""
    from sqlalchemy.orm import Session

    from worker.storage.db import batch_counts as count_rows
    from worker.storage.db import get_engine

    with Session(get_engine(database_url)) as s:
        return count_rows(s, batch_id)


def batch_record(database_url: str, batch_id: int) -> dict[str, object]:
    """The ``batches`` row as a user reads it: plain SQL, no ORM (status, n_done, n_failed, finished_at)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(database_url)
    try:
        with eng.connect() as conn:
            row = (
                conn.execute(
                    text("SELECT status, n_done, n_failed, finished_at FROM batches WHERE id = :id"), {"id": batch_id}
                )
                .mappings()
                .one()
            )
            return dict(row)
    finally:
        eng.dispose()


def link_corpus(sources: list[Path], folder: Path, n: int) -> str:
    """``n`` distinct names in ``folder`` linking to ``sources`` in turn (load tests and benchmarks).

    Each name is a hard link, or a symlink where a hard link is impossible (another file system).

    Returns:
        ``"hard links"`` or ``"symlinks"`` (the kind used for the last that needed a fallback).
    """
    folder.mkdir(parents=True)
    kind = "hard links"
    for i in range(n):
        src = sources[i % len(sources)]
        dst = folder / f"{i:05d}_{src.name}"
        try:
            os.link(src, dst)
        except OSError:
            dst.symlink_to(src)
            kind = "symlinks"
    return kind


def pool_rss_mb(worker_pid: int) -> list[float]:
    """VmRSS (MB) of each pool process of the Celery worker ``worker_pid``, read from /proc."""
    out = []
    for child in Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split():
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:  # the pool process ended between the two reads
            pass
    return out
