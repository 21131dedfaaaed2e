"""Settings and the database's storage: wrong URLs are found before anything is written, and a database
that cannot be written says so in words (what happened, what is kept, what to do next)."""

from __future__ import annotations

import resource
import signal
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO, tone, write
from tests.unit.test_cli import EXAMPLES, cli, no_traceback, run, sql


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed command: exactly one line on stderr, starting ``error:``."""
    no_traceback(p)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) > 40, p.stderr
    assert "[SQL:" not in p.stderr and "sqlalche.me" not in p.stderr and "Error:" not in errors[0], p.stderr
    return errors[0]


@pytest.mark.parametrize("value", ["garbage", "localhost:6379", "amqp://guest@localhost//"])
def test_a_broker_url_without_redis_scheme_is_a_usage_error_before_a_batch_exists(tmp_path, value):
    db = tmp_path / "ser.db"
    p = run(["submit", str(EXAMPLES)], db, SER_BROKER_URL=value)
    assert p.returncode == 2, p.stdout + p.stderr
    line = one_line_error(p)
    assert "SER_BROKER_URL" in line and "redis://" in line and "rediss://" in line
    assert not db.exists() or sql(db, "SELECT count(*) AS n FROM batches")[0]["n"] == 0


def test_an_empty_broker_url_means_embedded_mode(tmp_path):
    p = run(["config"], tmp_path / "ser.db", SER_BROKER_URL="")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@localhost/ser", "postgresql://u:pw@localhost/ser", "oracle://u:pw@h/x", "garbage"]
)
def test_an_unsupported_database_url_names_the_supported_ones(tmp_path, url):
    exe, env = cli(tmp_path / "unused.db")
    env["SER_DATABASE_URL"] = url
    p = subprocess.run([*exe, "status"], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert p.returncode == 2, p.stdout + p.stderr
    line = one_line_error(p)
    assert "SER_DATABASE_URL" in line and "sqlite:///" in line and "postgresql+psycopg://" in line
    assert "pw" not in line  # the password is not repeated


def test_a_read_only_database_says_so_and_records_nothing(tmp_path):
    db = tmp_path / "ser.db"
    assert run(["submit", "-q", str(EXAMPLES / "03-01-01-01-01-01-01.wav")], db).returncode == 0
    exe, env = cli(db)
    env["SER_DATABASE_URL"] = f"sqlite:///file:{db}?mode=ro&uri=true"  # read-only whoever runs it (even root)
    p = subprocess.run([*exe, "submit", "-q", str(EXAMPLES)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert not (tmp_path / "file:").exists()  # a URI is not a path: no folder named after it
    line = one_line_error(p)
    assert "read-only" in line and "nothing already written is lost" in line and "no batch was recorded" in line
    assert [tuple(r) for r in sql(db, "SELECT id, status FROM batches")] == [(1, "done")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as a full disk: Linux")
def test_a_database_that_fills_up_mid_batch_names_the_batch_to_resume(tmp_path):
    """A file size limit stands in for a full disk: writes past it fail as they would on a full one."""
    db = tmp_path / "ser.db"
    assert run(["submit", "-q", str(EXAMPLES / "03-01-01-01-01-01-01.wav")], db).returncode == 0
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    folder = tmp_path / "many"
    for i in range(120):
        write(folder / f"t{i:03d}.wav", tone(freq=120.0 + 3 * i, seconds=0.6), 16000)
    limit = db.stat().st_size + 48 * 1024  # room for the batch row and its pending rows, not for the labels

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    exe, env = cli(db)
    p = subprocess.run(
        [*exe, "submit", "-q", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=small_files,  # noqa: PLW1509 - no threads in this test process' children yet
    )
    assert p.returncode == 1, p.stdout + p.stderr
    line = one_line_error(p)
    assert "cannot write to the database" in line and "nothing already written is lost" in line
    assert "`ser-batch submit --resume 2`" in line, line
    assert sql(db, "SELECT count(*) AS n FROM results WHERE batch_id = 2")[0]["n"] == 120
    r = run(["submit", "-q", "--resume", "2"], db)  # with room again, the batch finishes
    assert r.returncode == 0, r.stdout + r.stderr
    assert sql(db, "SELECT count(*) AS n FROM results WHERE batch_id = 2 AND status = 'done'")[0]["n"] == 120
