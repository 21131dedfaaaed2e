"""The layers and rooms of the code are a contract (import-linter, ``[tool.importlinter]`` in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ser_model", "worker", "producer", "ser_batch")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="import-linter not installed (pip install -e '.[test]')"
)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own venv's console script, fixed arguments
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def copy_tree(dest: Path) -> None:
    """The four packages' Python files and pyproject.toml, as the checkout has them."""
    for pkg in PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            out = dest / src.relative_to(ROOT)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
    shutil.copyfile(ROOT / "pyproject.toml", dest / "pyproject.toml")


def test_the_code_keeps_its_contracts():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "imports", "expect"),
    [
        # a circle hidden in a function-level import, inside the engine
        (
            "worker/engine/assess.py",
            "from worker.engine.chunk import run_chunk",
            "worker.engine.assess -> worker.engine.chunk",
        ),
        # the engine reaching up into the Celery adapter (embedded mode would need Celery)
        (
            "worker/engine/rows.py",
            "from worker.celery_app.publish import enqueue_chunks",
            "worker.engine.rows -> worker.celery_app.publish",
        ),
        # the ML core reaching up into the worker
        ("ser_model/labels.py", "from worker.storage.db import Result", "ser_model.labels -> worker.storage.db"),
        # storage importing Celery
        ("worker/storage/db.py", "import celery", "worker.storage.db -> celery"),
    ],
)
def test_an_upward_import_or_a_circle_breaks_them(tmp_path, module, imports, expect):
    copy_tree(tmp_path)
    with (tmp_path / module).open("a") as fh:
        fh.write(f"\n\ndef _violation() -> None:\n    {imports}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert expect in run.stdout, run.stdout
