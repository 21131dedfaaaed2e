"""Feature extraction over many files, speaker-independent cross-validation, and training.

Speaker-independent evaluation: folds are grouped by speaker (``GroupKFold``), so no speaker is in
both the training and the test part of a fold; on RAVDESS actors 1-20, 5 folds hold out 4 actors
each. When speakers are unknown, folds are ``StratifiedKFold`` and the report says so
(``"protocol": "stratified (speaker-dependent)"``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, StratifiedKFold

from ser_model.audio import AudioError, load_audio
from ser_model.datasets import LabelledFile
from ser_model.features import FEATURE_VERSION, N_FEATURES, extract_features
from ser_model.metrics import classification_metrics
from ser_model.model import ModelBundle, build_pipeline, new_meta

Progress = Callable[[int, int], None]


@dataclass
class FeatureTable:
    """Features of a labelled file set.

    Attributes:
        X: shape ``(n, N_FEATURES)``, float32.
        labels: length n.
        speakers: length n (None entries when unknown).
        paths: length n.
        failed: ``(path, reason)`` of files that could not be used.
        fingerprint: SHA-256 over the sorted (content SHA-256, label, speaker) triples.
    """

    X: np.ndarray
    labels: list[str]
    speakers: list[str | None]
    paths: list[str]
    failed: list[tuple[str, str]]
    fingerprint: str


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _features_of(path: str, cache_dir: str | None) -> tuple[str, np.ndarray | None, str]:
    """(content sha256, features or None, error reason) for one file, using the cache when given."""
    try:
        digest = file_sha256(path)
    except OSError as e:
        return "", None, f"cannot read file: {e.strerror or e}"
    cache_file = Path(cache_dir, FEATURE_VERSION, f"{digest}.npy") if cache_dir else None
    if cache_file is not None and cache_file.exists():
        try:
            x = np.load(cache_file)
            if x.shape == (N_FEATURES,):
                return digest, x, ""
        except (OSError, ValueError):
            pass
    try:
        y, _ = load_audio(path)
        x = extract_features(y)
    except AudioError as e:
        return digest, None, str(e)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, x)
        os.replace(tmp, cache_file)
    return digest, x, ""


def _init_worker() -> None:
    """Keep BLAS single-threaded inside each extraction process (no oversubscription)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def extract_table(
    files: Sequence[LabelledFile],
    *,
    n_jobs: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> FeatureTable:
    """Extract features of labelled files in parallel.

    Args:
        files: the labelled files.
        n_jobs: processes; default ``os.cpu_count()``; 1 runs in this process.
        cache_dir: folder of cached feature vectors keyed by content SHA-256 and
            :data:`FEATURE_VERSION` (reused across trainings); None disables the cache.
        progress: called as ``progress(done, total)`` after each file.

    Returns:
        The feature table; files that fail to decode are listed in ``failed``, not raised.
    """
    n_jobs = n_jobs or os.cpu_count() or 1
    paths = [str(f.path) for f in files]
    cache = str(cache_dir) if cache_dir else None
    results: list[tuple[str, np.ndarray | None, str]] = []
    if n_jobs == 1:
        for i, p in enumerate(paths):
            results.append(_features_of(p, cache))
            if progress:
                progress(i + 1, len(paths))
    else:
        with ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker) as ex:
            for i, r in enumerate(ex.map(_features_of, paths, [cache] * len(paths), chunksize=8)):
                results.append(r)
                if progress:
                    progress(i + 1, len(paths))
    X, labels, speakers, kept, failed, fp = [], [], [], [], [], []
    for f, (digest, x, err) in zip(files, results, strict=True):
        if x is None:
            failed.append((str(f.path), err))
            continue
        X.append(x)
        labels.append(f.label)
        speakers.append(f.speaker)
        kept.append(str(f.path))
        fp.append(f"{digest}:{f.label}:{f.speaker or ''}")
    fingerprint = hashlib.sha256("\n".join(sorted(fp)).encode()).hexdigest()
    X_arr = np.vstack(X).astype(np.float32) if X else np.zeros((0, N_FEATURES), np.float32)
    return FeatureTable(X_arr, labels, speakers, kept, failed, fingerprint)


def encode_labels(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Integer class indices of ``values`` in ``labels``.

    Raises:
        ValueError: a value is not in ``labels``.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label set {list(labels)}")
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))


def cross_validate(
    table: FeatureTable,
    *,
    labels: Sequence[str],
    n_splits: int = 5,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Speaker-independent cross-validation (GroupKFold by speaker) of the MLP pipeline.

    Args:
        table: features, labels and speakers.
        labels: label order of the report.
        n_splits: folds; reduced to the number of speakers when there are fewer.
        params: keyword arguments for :func:`ser_model.model.build_pipeline`.
        progress: called as ``progress(fold_done, n_folds)``.

    Returns:
        :func:`ser_model.metrics.classification_metrics` over the pooled out-of-fold predictions,
        plus ``protocol``, ``n_splits``, ``per_fold_wa`` and ``predictions`` (out-of-fold labels).

    Raises:
        ValueError: fewer than 2 speakers (grouped) or fewer examples per class than folds.
    """
    y = np.asarray(table.labels)
    speakers = table.speakers
    grouped = all(s is not None for s in speakers) and len(set(speakers)) >= 2
    if grouped:
        k = min(n_splits, len(set(speakers)))
        splits = list(GroupKFold(n_splits=k).split(table.X, y, groups=np.asarray(speakers)))
        protocol = f"speaker-independent: GroupKFold by speaker, {k} folds, {len(set(speakers))} speakers"
    else:
        k = min(n_splits, int(min(np.unique(y, return_counts=True)[1])))
        if k < 2:
            raise ValueError("need at least 2 examples per label for cross-validation")
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(table.X, y))
        protocol = f"stratified (speaker-dependent): StratifiedKFold, {k} folds, speakers unknown"
    labels = list(labels)
    y_idx = encode_labels(table.labels, labels)
    pred = np.empty(len(y), dtype=object)
    per_fold = []
    base = build_pipeline(**(params or {}))
    for i, (tr, te) in enumerate(splits):
        model = clone(base).fit(table.X[tr], y_idx[tr])
        pred[te] = np.asarray(labels, dtype=object)[model.predict(table.X[te])]
        per_fold.append(float(np.mean(pred[te] == y[te])))
        if progress:
            progress(i + 1, len(splits))
    report = classification_metrics(list(y), list(pred), labels)
    report.update(protocol=protocol, n_splits=len(splits), per_fold_wa=per_fold, predictions=list(pred))
    return report


def train_bundle(
    table: FeatureTable,
    *,
    labels: Sequence[str] | None = None,
    cv_report: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    name: str = "model",
    dataset: str = "",
) -> ModelBundle:
    """Fit the pipeline on all of ``table`` and wrap it in a :class:`ModelBundle`.

    Args:
        table: training features.
        labels: label order; default the sorted labels present.
        cv_report: cross-validation metrics to store in the bundle (``predictions`` dropped).
        params: :func:`ser_model.model.build_pipeline` arguments.
        name: short model name recorded in the metadata.
        dataset: description of the training data.

    Returns:
        The fitted bundle; ``meta`` holds metrics, data fingerprint, params, versions.

    Raises:
        ValueError: ``table`` is empty.
    """
    if len(table.labels) == 0:
        raise ValueError("no usable training files")
    labels = list(labels) if labels else sorted(set(table.labels))
    pipeline = build_pipeline(**(params or {})).fit(table.X, encode_labels(table.labels, labels))
    metrics = {k: v for k, v in (cv_report or {}).items() if k != "predictions"}
    loss = [float(v) for v in pipeline.named_steps["mlp"].loss_curve_]
    meta = new_meta(
        name=name,
        dataset=dataset,
        metrics=metrics,
        data_fingerprint=table.fingerprint,
        n_train=len(table.labels),
        n_speakers=len({s for s in table.speakers if s is not None}),
        params=params or {},
        loss_curve=loss,
    )
    return ModelBundle(pipeline=pipeline, labels=labels, meta=meta)
