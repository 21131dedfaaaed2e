"""docker-compose.yml and Dockerfile, checked without a Docker engine (none runs on our machines).

Static checks, so not marked ``integration``: they run with the fast suite too.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from services import REPO

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e '.[test]'")

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _volumes(service: dict) -> dict[str, str]:
    """``{target: "source:target[:mode]"}`` of a service's short-syntax volumes."""
    out = {}
    for v in service.get("volumes", []):
        body = v[:-3] if v.endswith((":ro", ":rw")) else v
        out[body.rsplit(":", 1)[1]] = v  # the source may hold ${VAR:-default}
    return out


def test_services_are_all_there(compose):
    assert {"redis", "postgres", "migrate", "worker", "producer"} <= set(compose["services"])
    assert {"redis-data", "pg-data"} <= set(compose["volumes"])


def test_redis_never_evicts_and_persists(compose):
    cmd = compose["services"]["redis"]["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_postgres_has_a_healthcheck_and_migrate_waits_for_it(compose):
    pg = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    mig = compose["services"]["migrate"]
    assert mig["command"] == ["ser-batch", "db", "upgrade"]
    assert mig["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mig.get("restart") == "no"


def test_workers_scale_and_start_after_the_migration(compose):
    w = compose["services"]["worker"]
    assert "container_name" not in w and "ports" not in w  # both would break --scale worker=N
    assert w["command"][:2] == ["ser-batch", "worker"]
    assert w["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert w["depends_on"]["redis"]["condition"] == "service_healthy"


def test_a_stalled_worker_is_restarted_and_health_checked(compose):
    """The watchdog exits a stalled worker (code 70): the restart policy must bring it back."""
    w = compose["services"]["worker"]
    assert w["restart"] in ("unless-stopped", "always", "on-failure")
    assert "inspect ping" in " ".join(w["healthcheck"]["test"])


def test_recordings_read_only_at_the_same_path_in_producer_and_workers(compose):
    prod, work = (_volumes(compose["services"][s]) for s in ("producer", "worker"))
    assert "/recordings" in prod and "/recordings" in work
    assert prod["/recordings"] == work["/recordings"]
    assert prod["/recordings"].endswith(":ro")


def test_every_service_of_ours_talks_to_the_same_postgres_and_redis(compose):
    for name in ("migrate", "worker", "producer"):
        env = compose["services"][name]["environment"]
        assert env["SER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["SER_DATABASE_URL"]
        assert env["SER_BROKER_URL"] == "redis://redis:6379/0"


def test_dockerfile_copies_what_exists_and_installs_the_cli():
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                if src != "README.md":  # written by the docs work; required by pyproject anyway
                    assert (REPO / src).exists(), src
    assert re.search(r"pip install \.", text)
    assert "USER ser" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (apt)")
def test_docker_compose_config_accepts_the_file(tmp_path):
    p = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "--project-directory", str(REPO), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    resolved = yaml.safe_load(p.stdout)
    assert resolved["services"]["worker"]["environment"]["SER_BROKER_URL"] == "redis://redis:6379/0"
