from sqlalchemy import inspect

from worker.db import get_engine
from worker.migrate import current_revision, downgrade, ensure_schema, head_revision, upgrade


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
