from sqlalchemy import inspect

from worker.db import get_engine
from worker.migrate import HEAD_REVISION, current_revision, downgrade, ensure_schema, head_revision, upgrade


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
    uniques = insp.get_unique_constraints("results")
    assert any(u["column_names"] == ["batch_id", "path"] for u in uniques)
    downgrade(url, "base")
    assert "results" not in inspect(get_engine(url)).get_table_names()
    assert current_revision(url) is None
    assert ensure_schema(url) is True and ensure_schema(url) is False


def test_orm_matches_migrations(tmp_path):
    """The ORM models and the migrations describe the same schema (autogenerate finds no difference)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from worker.db import Base

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
