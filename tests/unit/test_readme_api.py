"""The README's Python API example runs as written (from the repository root) and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    m = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert m, f"no python block after {heading!r}"
    return m.group(1)


def test_readme_python_api_example_runs():
    code = _readme_block("### Python API")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2, p.stdout
    path, emotion, conf, top = lines[0].split()
    assert path.endswith("03-01-05-02-01-01-01.wav") and emotion == top == "angry"  # actor 01: in training data
    assert 0.0 < float(conf) <= 1.0
    assert lines[1].startswith("examples/recordings/ATTRIBUTION.md failed: not a readable audio file")
