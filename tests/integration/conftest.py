"""Fixtures with real parts: redis-server, a PostgreSQL cluster, Celery worker processes, RAVDESS files.

The servers start once per session on free loopback ports in temp folders and are stopped at the
end; each test gets an empty Redis (FLUSHALL) and a database of its own, migrated to head. Tests
skip with the reason when redis-server, the PostgreSQL binaries or the RAVDESS folder are missing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from services import (
    REPO,
    PostgresCluster,
    RedisServer,
    ServiceUnavailable,
    WorkerProcess,
    service_env,
    start_worker,
    temp_dir,
)

RAVDESS = Path(os.environ.get("SER_TEST_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))

os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numbacache")

INTEGRATION_TIMEOUT_S = 600
"""pytest-timeout for each integration test (a hung worker or broker fails the test, not the run);
the slowest test here takes about 2 minutes on the 2-core build machine."""

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every integration test a timeout unless it sets its own ``@pytest.mark.timeout``."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session."""
    folder = temp_dir("ser-it-redis-")
    try:
        server = RedisServer(folder).start()
    except ServiceUnavailable as e:
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session (as the postgres user when run as root)."""
    folder = temp_dir("ser-it-pg-")
    cluster = PostgresCluster(folder)
    try:
        cluster.start()
    except ServiceUnavailable as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, emptied for this test."""
    redis_server.client().flushall()
    return redis_server.url


_db_counter = iter(range(1_000_000))


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A new PostgreSQL database for this test, migrated to head with ``worker.storage.migrate.upgrade``."""
    from worker.storage.migrate import upgrade

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + f"_{next(_db_counter)}"
    url = pg_cluster.create_database(name)
    upgrade(url)
    return url


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory starting real worker subprocesses; all are stopped (or killed) after the test."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *, name: str, concurrency: int = 1, via_cli: bool = False) -> WorkerProcess:
        w = start_worker(env, tmp_path / "logs", name=name, concurrency=concurrency, via_cli=via_cli)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture(scope="session")
def ravdess_files() -> list[Path]:
    """The RAVDESS files of ``../shared/data/ravdess`` in a fixed order mixing actors and emotions."""
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS not found at {RAVDESS} (set SER_TEST_RAVDESS)")
    files = sorted(p for p in RAVDESS.rglob("*") if p.suffix.lower() in {".wav", ".flac"})
    if not files:
        pytest.skip(f"no audio files under {RAVDESS}")
    # Interleave by actor so that the first N files cover many speakers and emotions.
    by_actor: dict[str, list[Path]] = {}
    for f in files:
        by_actor.setdefault(f.parent.name, []).append(f)
    mixed: list[Path] = []
    for i in range(max(len(v) for v in by_actor.values())):
        mixed.extend(v[i] for v in by_actor.values() if i < len(v))
    return mixed


@pytest.fixture
def recordings(tmp_path: Path, ravdess_files: list[Path]) -> Callable[[int], Path]:
    """Factory: a folder of ``n`` RAVDESS files (symlinks), the same n files for the same n."""

    def make(n: int) -> Path:
        d = tmp_path / f"recordings_{n}"
        d.mkdir()
        for f in ravdess_files[:n]:
            (d / f.name).symlink_to(f)
        return d

    return make


@pytest.fixture
def env_for() -> Callable[..., dict[str, str]]:
    """Factory of subprocess environments: ``env_for(database_url, broker_url, SER_X="...")``."""
    return service_env
