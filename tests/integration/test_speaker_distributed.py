"""Speaker-adaptive batches through real workers give the embedded mode's labels and modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RAVDESS
from services import result_rows, ser_batch, wait_batch_finished

pytestmark = pytest.mark.integration


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "rec"
    d.mkdir()
    for actor, n in (("Actor_07", 60), ("Actor_08", 60), ("Actor_09", 5)):
        for f in sorted((RAVDESS / actor).glob("*.flac"))[:n]:
            (d / f.name).symlink_to(f)
    return d


def _modes(db_url: str, batch_id: int) -> dict[str, tuple[str, str, float]]:
    from sqlalchemy import text

    from worker.storage.db import get_engine

    with get_engine(db_url).connect() as c:
        q = text("SELECT path, emotion, analysis_mode, confidence FROM results WHERE batch_id = :b")
        return {p: (e, m, round(conf, 5)) for p, e, m, conf in c.execute(q, {"b": batch_id})}


def test_speaker_adaptive_labels_equal_in_both_modes(broker_url, pg_url, env_for, start_workers, tmp_path):
    if not RAVDESS.is_dir():
        pytest.skip(f"RAVDESS not found at {RAVDESS}")
    folder = _folder(tmp_path)
    sqlite_url = f"sqlite:///{tmp_path / 'embedded.db'}"
    e = ser_batch(["submit", str(folder), "--speaker-from", "ravdess", "-j", "2", "-q"], env_for(sqlite_url, None))
    assert e.returncode == 0, e.stdout + e.stderr
    embedded = _modes(sqlite_url, 1)

    env = env_for(pg_url, broker_url)
    start_workers(env, name="w1", concurrency=1).wait_ready()
    start_workers(env, name="w2", concurrency=1).wait_ready()
    d = ser_batch(["submit", str(folder), "--speaker-from", "ravdess", "--chunk-size", "7"], env)
    assert d.returncode == 0, d.stderr
    batch_id = int(d.stdout.strip().splitlines()[0])
    counts = wait_batch_finished(pg_url, batch_id, timeout_s=300)
    assert counts == {"pending": 0, "done": 125, "failed": 0, "total": 125}
    distributed = _modes(pg_url, batch_id)
    assert len(result_rows(pg_url, batch_id)) == 125
    assert distributed == embedded
    modes = {m for _, m, _ in distributed.values()}
    assert modes == {"speaker-adaptive", "global"}
    assert sum(m == "global" for _, m, _ in distributed.values()) == 5  # Actor_09: 5 files < 8
