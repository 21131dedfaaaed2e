"""Load, scaled down for CI: 1,000 distinct file names (links to real RAVDESS files) through 2 worker
processes. Nothing lost, no duplicates, pool-process RSS roughly flat, `status` timed (reported, not
asserted). The 10,000-file version is ``benchmarks/load.py`` (numbers in benchmarks/results/load.md).
"""

from __future__ import annotations

import time

import pytest
from services import batch_counts, link_corpus, poll, pool_rss_mb, result_rows, ser_batch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_FILES = 1000


def test_thousand_files_two_pool_processes_nothing_lost_rss_flat(
    tmp_path, pg_url, broker_url, ravdess_files, env_for, start_workers
):
    folder = tmp_path / "load"
    link_corpus(ravdess_files, folder, N_FILES)
    env = env_for(pg_url, broker_url)
    w = start_workers(env, name="load", concurrency=2).wait_ready()
    rss = {"ready": pool_rss_mb(w.proc.pid)}
    t0 = time.perf_counter()
    p = ser_batch(["submit", str(folder)], env)
    assert p.returncode == 0, p.stderr
    batch_id = int(p.stdout.strip().splitlines()[0])
    status_s: dict[str, float] = {}
    marks = {"early": N_FILES // 10, "middle": N_FILES // 2}

    def finished_sampling_on_the_way() -> bool:
        c = batch_counts(pg_url, batch_id)
        for name, at in list(marks.items()):
            if c["done"] + c["failed"] >= at:
                rss[name] = pool_rss_mb(w.proc.pid)
                t = time.perf_counter()
                st = ser_batch(["status", str(batch_id)], env)
                status_s[name] = time.perf_counter() - t
                assert st.returncode == 0, st.stderr
                del marks[name]
        return c["pending"] == 0

    poll(finished_sampling_on_the_way, timeout_s=600, every_s=0.2, what=f"{N_FILES} files finished")
    wall = time.perf_counter() - t0
    rss["end"] = pool_rss_mb(w.proc.pid)
    t = time.perf_counter()
    st = ser_batch(["status", str(batch_id)], env)
    status_s["end"] = time.perf_counter() - t
    assert st.returncode == 0 and "pending" in st.stdout
    rows = result_rows(pg_url, batch_id)
    paths = [str(r["path"]) for r in rows]
    assert len(paths) == len(set(paths)) == N_FILES  # no duplicates
    assert sorted(paths) == sorted(str(f) for f in folder.iterdir())  # nothing lost
    assert {r["status"] for r in rows} == {"done"}
    assert {r["attempts"] for r in rows} == {1}  # every file started once
    assert len(rss["end"]) == 2 == len(rss["early"])
    # Roughly flat: from 10 % of the batch to its end each pool process grows by well under the
    # size of one decoded file's working set per 100 files (a leak of even 100 kB/file would show).
    for early, last in zip(rss["early"], rss["end"], strict=True):
        assert last <= early * 1.2 + 25, rss
    print(
        f"\n[load] files={N_FILES} rows={len(rows)} duplicates=0 lost=0 wall={wall:.1f}s "
        f"files/s={N_FILES / wall:.1f} rss_mb={ {k: [round(x) for x in v] for k, v in rss.items()} } "
        f"status_s={ {k: round(v, 2) for k, v in status_s.items()} }"
    )
