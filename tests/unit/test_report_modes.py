"""The HTML report's model box gives the cross-validated WA of the mode the batch's files were labelled in."""

from __future__ import annotations

import re
import shutil

import pytest

from ser_model.model import DEFAULT_MODEL_PATH, read_sidecar
from tests.unit.test_cli import EXAMPLES, run, sql

SIDE = read_sidecar(DEFAULT_MODEL_PATH)


def model_box(html: str) -> str:
    """The text of the report's "Model" section, tags stripped."""
    section = html.split("<h2>Model</h2>", 1)[1].split("<footer>", 1)[0]
    return " ".join(re.sub(r"<[^>]+>", " ", section).split())


def report_of(db, batch: int, tmp_path) -> str:
    out = tmp_path / f"report-{batch}.html"
    p = run(["report", str(batch), "--output", str(out)], db)
    assert p.returncode == 0, p.stdout + p.stderr
    return out.read_text()


@pytest.mark.parametrize(
    ("options", "copies", "mode", "key"),
    [
        (["--speaker-from", "ravdess"], 1, "speaker-adaptive", "speaker_metrics"),  # actor 01's 8 files: one speaker
        (["--normalise", "batch"], 3, "batch-normalised", "batch_metrics"),  # 24 files: above the 20-file minimum
        ([], 1, "global", "metrics"),
    ],
)
def test_model_box_shows_the_wa_of_the_batchs_mode(tmp_path, options, copies, mode, key):
    data = tmp_path / "in"
    for i in range(copies):
        shutil.copytree(EXAMPLES, data / f"copy{i}")
    db = tmp_path / "ser.db"
    p = run(["submit", "-q", *options, str(data)], db)
    assert p.returncode == 0, p.stdout + p.stderr
    modes = {r["analysis_mode"] for r in sql(db, "SELECT DISTINCT analysis_mode FROM results")}
    assert modes == ({"utterance"} if mode == "global" else {mode})
    box = model_box(report_of(db, 1, tmp_path))
    wa = f"{SIDE[key]['wa']:.3f}"
    assert f"WA (accuracy), {mode} {wa}" in box, box
    assert f"{mode} ({8 * copies} labelled file(s)" in box
    others = {"global", "speaker-adaptive", "batch-normalised"} - {mode}
    assert not any(f"WA (accuracy), {o}" in box for o in others), box
    if mode != "global":  # the global model's WA is not the number of these files
        assert f"{SIDE['metrics']['wa']:.3f}" not in box, box


def test_mode_metrics_of_a_stored_bundle_come_from_its_document():
    """A trained model's bundle lives in the database: its per-mode metrics are read from bundle.json."""
    from ser_model.model import FAST_MODEL_PATH
    from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER
    from worker.storage.db import ModelVersion
    from worker.storage.registry import mode_metrics

    side = read_sidecar(FAST_MODEL_PATH)
    row = ModelVersion(version="x", source="db", metrics={"wa": 0.5}, bundle=FAST_MODEL_PATH.read_bytes())
    got = mode_metrics(row)
    assert got[MODE_GLOBAL] == {"wa": 0.5}
    assert got[MODE_SPEAKER]["wa"] == side["speaker_metrics"]["wa"] and got[MODE_BATCH] == side["batch_metrics"]
    assert mode_metrics(ModelVersion(version="y", source="db", metrics={}, bundle=b"not a zip")) == {}
