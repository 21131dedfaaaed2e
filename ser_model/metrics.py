"""Classification metrics used for every reported number: WA, UAR, macro-F1, per-class recall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

OOF_KEYS = ("predictions", "proba", "ood_scores", "aug_proba", "aug_ood_scores")
"""Per-row out-of-fold entries of a cross-validation report (not metrics; not stored in bundles or reports)."""


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Weighted accuracy, unweighted average recall, macro-F1, per-class recall and the confusion matrix.

    Terms as in the SER literature (e.g. Schuller et al., INTERSPEECH 2009 Emotion Challenge):
    weighted accuracy (WA) is plain accuracy (classes weighted by their frequency); unweighted
    average recall (UAR) is the mean of per-class recalls (``sklearn balanced_accuracy``).

    UAR and macro-F1 both average over the labels present in ``y_true`` (``labels_present``): a label
    of the model with no file in the data has no recall to measure, and counting it as 0 would pull
    the mean down by what the data lacks, not by what the model gets wrong. Predictions of an absent
    label still count, as errors of the true label's recall and F1.

    Args:
        y_true: true labels, length n.
        y_pred: predicted labels, length n.
        labels: the label set, fixing the order of per-class values and confusion rows/columns.

    Returns:
        ``{"n": n, "wa": float, "uar": float, "macro_f1": float, "per_class_recall": {label: float},
        "labels": [...], "labels_present": [...], "confusion": [[int]] (rows true, columns predicted)}``;
        ``per_class_recall`` and ``confusion`` cover every label of ``labels`` (0 for an absent one).

    Raises:
        ValueError: lengths differ or n == 0.
    """
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need equal, non-zero lengths, got {len(y_true)} and {len(y_pred)}")
    labels = list(labels)
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    truth = set(y_true)
    present = [i for i, lab in enumerate(labels) if lab in truth]
    present_labels = [labels[i] for i in present]
    return {
        "n": len(y_true),
        "wa": float(accuracy_score(y_true, y_pred)),
        "uar": float(np.mean(recalls[present])) if present else 0.0,
        "macro_f1": (
            float(f1_score(y_true, y_pred, labels=present_labels, average="macro", zero_division=0)) if present else 0.0
        ),
        "per_class_recall": {lab: float(r) for lab, r in zip(labels, recalls, strict=True)},
        "labels": labels,
        "labels_present": present_labels,
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
