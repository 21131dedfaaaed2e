from sqlalchemy import inspect

from worker.storage.db import get_engine
from worker.storage.migrate import HEAD_REVISION, current_revision, downgrade, ensure_schema, head_revision, upgrade


def test_empty_to_head_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    insp = inspect(get_engine(url))
    assert {"batches", "results", "models", "alembic_version"} <= set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("results")}
    assert {"batch_id", "path", "sha256", "duration_s", "sample_rate", "channels", "status", "error"} <= cols
    assert {"p_neutral", "p_surprised", "model_version", "processing_ms"} <= cols
    with get_engine(url).connect() as conn:  # an expression index: SQLAlchemy does not reflect it
        sql = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'uq_results_batch_path_channel'"
        ).scalar()
    assert "UNIQUE" in sql and "coalesce(channel, -1)" in sql
    downgrade(url, "base")
    assert "results" not in inspect(get_engine(url)).get_table_names()
    assert current_revision(url) is None
    assert ensure_schema(url) is True and ensure_schema(url) is False


def test_orm_matches_migrations(tmp_path):
    """The ORM models and the migrations describe the same schema (autogenerate finds no difference)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from worker.storage.db import Base

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_0004_adds_trust_flags_and_keeps_rows(tmp_path):
    """0003 -> 0004 keeps existing rows and adds the trust flags (NULL for old rows) and batch warnings."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url, "0003")
    eng = get_engine(url)
    with eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done, n_failed, n_ignored) VALUES (1, '2026-01-01', '{}', '[]', 'done', 'embedded', 1, 1, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO results (batch_id, path, status, attempts, created_at, updated_at) VALUES (1, 'a.wav', 'done', 0, '2026-01-01', '2026-01-01')"
            )
        )
    upgrade(url, "0004")
    insp = inspect(eng)
    for table in ("results", "segments"):
        assert {"ood_score", "out_of_domain", "low_confidence"} <= {c["name"] for c in insp.get_columns(table)}
    assert "warnings" in {c["name"] for c in insp.get_columns("batches")}
    with eng.connect() as conn:
        assert conn.execute(text("SELECT path, ood_score, out_of_domain FROM results")).all() == [("a.wav", None, None)]
    downgrade(url, "0003")
    assert "ood_score" not in {c["name"] for c in inspect(get_engine(url)).get_columns("results")}


def test_0006_moves_webhook_urls_out_of_batches(tmp_path):
    """Webhook URLs (tokens) leave ``batches.options`` for ``batch_webhooks``; the downgrade puts them back."""
    import json

    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url, "0005")
    eng = get_engine(url)
    hook = "https://hooks.example.org/ser/T0KEN?sig=abc"
    with eng.begin() as conn:
        for bid, opts in ((1, {"chunk_size": 8, "notify_url": hook}), (2, {"chunk_size": 8})):
            conn.execute(
                text(
                    "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done, "
                    "n_failed, n_ignored) VALUES (:i, '2026-01-01', :o, '[]', 'done', 'embedded', 0, 0, 0, 0)"
                ),
                {"i": bid, "o": json.dumps(opts)},
            )
    upgrade(url, "0006")
    with eng.connect() as conn:
        opts = {i: json.loads(o) for i, o in conn.execute(text("SELECT id, options FROM batches"))}
        assert conn.execute(text("SELECT batch_id, url FROM batch_webhooks")).all() == [(1, hook)]
    assert opts[1] == {"chunk_size": 8, "notify_url": "https://hooks.example.org/…"} and opts[2] == {"chunk_size": 8}
    downgrade(url, "0005")
    with eng.connect() as conn:
        assert json.loads(conn.execute(text("SELECT options FROM batches WHERE id = 1")).scalar())["notify_url"] == hook


def test_head_constant_is_alembics_head():
    # ensure_schema skips Alembic when the database is stamped HEAD_REVISION: it must be the head
    assert HEAD_REVISION == head_revision()


def _populate_0005(url: str) -> None:
    from sqlalchemy import text

    upgrade(url, "0005")
    with get_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done, n_failed,"
                " n_ignored) VALUES (1, '2026-01-01', '{}', '[]', 'done', 'embedded', 2, 2, 0, 0)"
            )
        )
        for rid, path in ((1, "a.wav"), (2, "b.wav")):
            conn.execute(
                text(
                    "INSERT INTO results (id, batch_id, path, status, emotion, attempts, created_at, updated_at)"
                    " VALUES (:id, 1, :p, 'done', 'sad', 1, '2026-01-01', '2026-01-01')"
                ),
                {"id": rid, "p": path},
            )
        conn.execute(
            text(
                "INSERT INTO segments (result_id, idx, start_s, end_s, emotion) VALUES (1, 0, 0.0, 2.5, 'sad'),"
                " (1, 1, 3.0, 5.0, 'calm')"
            )
        )


def test_0007_channels_on_a_populated_database(tmp_path):
    """0005 -> 0007 keeps rows and segments (channel NULL), the new key holds, and back to 0006."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from worker.storage.db import upsert_results

    url = f"sqlite:///{tmp_path / 'c.db'}"
    _populate_0005(url)
    upgrade(url, "0007")
    eng = get_engine(url)
    with eng.connect() as conn:
        assert conn.execute(text("SELECT path, channel, role, emotion FROM results ORDER BY id")).all() == [
            ("a.wav", None, None, "sad"),
            ("b.wav", None, None, "sad"),
        ]
        assert conn.execute(text("SELECT idx, channel, emotion FROM segments ORDER BY idx")).all() == [
            (0, None, "sad"),
            (1, None, "calm"),
        ]
    # the old rows are upserted in place by a mixed row, and channels of a file are rows of their own
    with Session(eng) as s, s.begin():
        upsert_results(s, [{"batch_id": 1, "path": "a.wav", "status": "done", "emotion": "happy"}])
        upsert_results(
            s,
            [
                {"batch_id": 1, "path": "b.wav", "channel": c, "status": "done", "emotion": e}
                for c, e in ((0, "angry"), (1, "calm"))
            ],
        )
        upsert_results(s, [{"batch_id": 1, "path": "b.wav", "channel": 1, "status": "done", "emotion": "fearful"}])
    with eng.connect() as conn:
        rows = conn.execute(text("SELECT id, path, channel, emotion FROM results ORDER BY path, channel")).all()
    assert [tuple(r)[1:] for r in rows] == [
        ("a.wav", None, "happy"),
        ("b.wav", None, "sad"),
        ("b.wav", 0, "angry"),
        ("b.wav", 1, "fearful"),
    ]
    assert rows[0][0] == 1  # updated in place: same id, its segments kept
    with pytest.raises(IntegrityError), eng.begin() as conn:  # two mixed rows of one file conflict (NULL as -1)
        conn.execute(
            text(
                "INSERT INTO results (batch_id, path, status, attempts, created_at, updated_at)"
                " VALUES (1, 'a.wav', 'done', 0, '2026-01-01', '2026-01-01')"
            )
        )
    downgrade(url, "0006")
    with get_engine(url).connect() as conn:  # channel 0 of a split file is kept, the other channels dropped
        assert conn.execute(text("SELECT path, emotion FROM results ORDER BY path, id")).all() == [
            ("a.wav", "happy"),
            ("b.wav", "sad"),
        ]
    upgrade(url)
    assert current_revision(url) == head_revision()


def test_0010_status_counters_are_filled_for_final_batches(tmp_path):
    """0009 -> 0010 counts the flagged labelled rows of final batches; a running batch waits for its finaliser."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url, "0009_arousal_valence")
    eng = get_engine(url)
    with eng.begin() as conn:
        for bid, status in ((1, "done_with_failures"), (2, "running")):
            conn.execute(
                text(
                    "INSERT INTO batches (id, created_at, options, source_paths, status, mode, n_files, n_done,"
                    " n_failed, n_ignored) VALUES (:id, '2026-01-01', '{}', '[]', :status, 'embedded', 4, 3, 1, 0)"
                ),
                {"id": bid, "status": status},
            )
            # (status, low_confidence, out_of_domain): flags count over labelled rows only
            for i, (st, low, ood) in enumerate(
                (("done", 1, 0), ("done", 1, 1), ("done", 0, None), ("failed", 1, 1)), start=1
            ):
                conn.execute(
                    text(
                        "INSERT INTO results (batch_id, path, status, low_confidence, out_of_domain, attempts,"
                        " created_at, updated_at) VALUES (:b, :p, :st, :low, :ood, 1, '2026-01-01', '2026-01-01')"
                    ),
                    {"b": bid, "p": f"{i}.wav", "st": st, "low": low, "ood": ood},
                )
    upgrade(url, "0010_status_counters")
    with eng.connect() as conn:
        got = conn.execute(text("SELECT id, n_low_confidence, n_out_of_domain FROM batches ORDER BY id")).all()
    assert [tuple(r) for r in got] == [(1, 2, 1), (2, None, None)]
    indexes = {i["name"] for i in inspect(get_engine(url)).get_indexes("results")}
    assert "ix_results_batch_progress" in indexes and "ix_results_batch_status" not in indexes
    downgrade(url, "0009_arousal_valence")
    insp = inspect(get_engine(url))
    cols = {c["name"] for c in insp.get_columns("batches")}
    assert "n_low_confidence" not in cols and "n_out_of_domain" not in cols
    indexes = {i["name"] for i in insp.get_indexes("results")}
    assert "ix_results_batch_status" in indexes and "ix_results_batch_progress" not in indexes
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM results")).scalar() == 8  # rows untouched


def test_0009_arousal_valence_on_a_database_made_at_0008(tmp_path):
    """A database created at 0008 with a labelled row and its segments gets the two columns, NULL for
    those rows (their dimensions were never computed); new rows store them; back to 0008 keeps the rows."""
    from sqlalchemy import select, text
    from sqlalchemy.orm import Session

    from worker.storage.db import Result, Segment, upsert_results

    url = f"sqlite:///{tmp_path / 'd.db'}"
    _populate_0005(url)
    upgrade(url, "0008")
    eng = get_engine(url)
    assert not {"arousal", "valence"} & {c["name"] for c in inspect(eng).get_columns("results")}
    upgrade(url, "0009_arousal_valence")
    assert current_revision(url) == "0009_arousal_valence"
    insp = inspect(eng)
    for table in ("results", "segments"):
        cols = {c["name"]: c for c in insp.get_columns(table)}
        assert {"arousal", "valence"} <= set(cols)
        assert cols["arousal"]["nullable"] and cols["valence"]["nullable"]
    with Session(eng) as s:  # the ORM reads the old rows: NULL, not a made-up 0.5
        old = s.scalars(select(Result).order_by(Result.id)).all()
        assert [(r.path, r.emotion, r.arousal, r.valence) for r in old] == [
            ("a.wav", "sad", None, None),
            ("b.wav", "sad", None, None),
        ]
        assert {(sg.arousal, sg.valence) for sg in s.scalars(select(Segment))} == {(None, None)}
    with Session(eng) as s, s.begin():  # a row labelled now stores both
        upsert_results(
            s, [{"batch_id": 1, "path": "c.wav", "status": "done", "emotion": "angry", "arousal": 0.8, "valence": 0.2}]
        )
    with eng.connect() as conn:
        got = conn.execute(text("SELECT path, arousal, valence FROM results ORDER BY id")).all()
    assert [tuple(r) for r in got] == [("a.wav", None, None), ("b.wav", None, None), ("c.wav", 0.8, 0.2)]
    downgrade(url, "0008")
    insp = inspect(get_engine(url))
    assert "arousal" not in {c["name"] for c in insp.get_columns("segments")}
    assert "valence" not in {c["name"] for c in insp.get_columns("results")}
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM results")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM segments")).scalar() == 2
        # the rebuilt results table keeps its unique key and the pending-rows index
        idx = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())
    assert "coalesce(channel, -1)" in idx["uq_results_batch_path_channel"]
    assert "status = 'pending'" in idx["ix_results_pending"]
