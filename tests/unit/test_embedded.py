"""Embedded submit's own choices: chunk size, a light start (no Alembic, no scikit-learn), a clean exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from producer.embedded import MAX_AUTO_CHUNK, auto_chunk_size
from tests.conftest import REPO, tone, write
from tests.unit.test_cli import no_traceback, rows, run


@pytest.mark.parametrize(
    ("n_files", "workers", "expected"),
    [
        (1200, 2, MAX_AUTO_CHUNK),  # capped
        (200, 2, 25),  # ceil(200 / 8): four units per process
        (18, 2, 3),
        (3, 2, 1),
        (0, 2, 1),
        (10, 1, 3),
    ],
)
def test_auto_chunk_size_is_four_units_per_process_capped(n_files, workers, expected):
    assert auto_chunk_size(n_files, workers) == expected


def test_configured_chunk_size_wins_over_the_automatic_one(monkeypatch):
    from producer.submit import configured_chunk_size
    from worker.settings import get_settings

    monkeypatch.delenv("SER_CHUNK_SIZE", raising=False)
    get_settings.cache_clear()
    try:
        assert configured_chunk_size(None) is None  # embedded picks
        assert configured_chunk_size(5) == 5
        monkeypatch.setenv("SER_CHUNK_SIZE", "7")
        get_settings.cache_clear()
        assert configured_chunk_size(None) == 7
        assert configured_chunk_size(5) == 5
    finally:
        get_settings.cache_clear()


def test_submit_closes_its_database_and_classifies_every_file(tmp_path):
    folder = tmp_path / "rec"
    for i in range(5):
        write(folder / f"t{i}.wav", tone(150.0 + 40 * i, seconds=1.5), 16000)
    db = tmp_path / "ser.db"
    p = run(["submit", str(folder), "-q"], db)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert sorted(r["status"] for r in rows(db)) == ["done"] * 5
    # the database is left closed cleanly (SQLite checkpointed and removed its WAL), gc.freeze() or not
    assert not Path(f"{db}-wal").exists()


def test_a_database_at_head_is_opened_without_alembic_or_scikit_learn(tmp_path):
    db = tmp_path / "ser.db"
    no_traceback(run(["db", "upgrade"], db))
    code = (
        "import sys\n"
        "from producer.common import open_engine\n"
        "from worker.storage.registry import load_model\n"
        "open_engine()\n"
        "m = load_model()\n"
        "import numpy as np\n"
        "m.bundle.predict_proba(np.zeros((1, m.bundle.weights['global'].n_features), np.float32))\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'alembic', 'sklearn'}))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SER_")},
            "SER_DATABASE_URL": f"sqlite:///{db}",
        },
        check=True,
    )
    assert p.stdout.strip() == "[]", p.stderr
