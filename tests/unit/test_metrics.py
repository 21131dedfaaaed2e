"""WA, UAR and macro-F1 mean what they say when the data lacks some of the model's labels."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from ser_model.metrics import classification_metrics
from tests.unit.test_cli import EXAMPLES, run

LABELS = ["neutral", "calm", "happy", "sad"]


def test_uar_and_macro_f1_average_over_the_labels_present():
    y_true = ["neutral", "neutral", "calm", "calm"]  # happy and sad have no file
    y_pred = ["neutral", "calm", "calm", "happy"]
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["labels_present"] == ["neutral", "calm"]
    assert m["uar"] == pytest.approx((0.5 + 0.5) / 2)
    # F1 neutral: tp 1, fp 0, fn 1 -> 2/3; calm: tp 1, fp 1, fn 1 -> 1/2; happy (absent) is not a term
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["per_class_recall"] == {"neutral": 0.5, "calm": 0.5, "happy": 0.0, "sad": 0.0}
    assert len(m["confusion"]) == 4  # the whole label set, for the plots


def test_all_labels_present_is_unchanged():
    y = ["neutral", "calm", "happy", "sad"]
    m = classification_metrics(y, y, LABELS)
    assert m["labels_present"] == LABELS and m["macro_f1"] == 1.0 and m["uar"] == 1.0


def test_evaluate_says_what_it_averages_over(tmp_path):
    data = tmp_path / "three"
    data.mkdir()
    for name in ("03-01-01-01-01-01-01.wav", "03-01-02-02-01-01-01.wav", "03-01-03-02-01-01-01.wav"):
        shutil.copy(EXAMPLES / name, data / name)  # neutral, calm, happy of actor 01 (in the fast model's training)
    p = run(["evaluate", str(data), "--model", "fast", "--report", str(tmp_path / "out")], tmp_path / "ser.db")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in p.stdout.splitlines() if ln.count("│") == 3}
    assert lines["UAR (mean over the 3 of 8 labels present)"] == lines["WA (accuracy)"] == "1.000"
    assert lines["macro-F1 (mean over the 3 of 8 labels present)"] == "1.000"  # was 3/8 = 0.375 over all 8 labels
    assert lines["recall angry"] == "no files" and re.fullmatch(r"\d\.\d{3}", lines["recall calm"])
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["labels_present"] == ["neutral", "calm", "happy"] and doc["macro_f1"] == 1.0
