"""Feature extraction over many files, speaker-independent cross-validation, and training.

Speaker-independent evaluation: folds are grouped by speaker (``GroupKFold``), so no speaker is in
both the training and the test part of a fold; on RAVDESS actors 1-20, 5 folds hold out 4 actors
each. When speakers are unknown, folds are ``StratifiedKFold`` and the report says so
(``"protocol": "stratified (speaker-dependent)"``).

Speaker-adaptive mode (``speaker_adaptive=True``): every speaker's rows are z-normalised by that
speaker's own statistics (:mod:`ser_model.speaker`) -- training speakers by theirs, a test speaker by
the statistics of its own files, as a batch with ``--speaker-from`` would do -- and the model is
trained on normalised rows; rows of speakers below the minimum file count fall back to a global model.

Augmentation (:func:`augment_table`) adds transformed copies of training files; in
:func:`cross_validate` a copy joins a fold's training part only when its source speaker is a training
speaker of that fold, so test speakers are never seen, not even augmented.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline

from ser_model.audio import AudioError, load_audio
from ser_model.datasets import LabelledFile
from ser_model.features import N_FEATURES, extract_features
from ser_model.featureset import FAST, extract, needs_encoder
from ser_model.metrics import OOF_KEYS, classification_metrics
from ser_model.model import ModelBundle, build_pipeline, new_meta
from ser_model.speaker import (
    MIN_BATCH_FILES,
    MIN_SPEAKER_FILES,
    MODE_BATCH,
    MODE_GLOBAL,
    MODE_SPEAKER,
    apply_speaker_stats,
    speaker_normalise,
    speaker_statistics,
)
from ser_model.trust import (
    OOD_PERCENTILE,
    DistanceTemperature,
    apply_temperature,
    expected_calibration_error,
    fit_distance_temperature,
    fit_ood,
    fit_ood_threshold,
    fit_temperature,
    label_prior,
    low_confidence_threshold,
    reliability_bins,
)

Progress = Callable[[int, int], None]


@dataclass
class FeatureTable:
    """Features of a labelled file set.

    Attributes:
        X: shape ``(n, n_features)``, float32 (989 for the fast feature set).
        labels: length n.
        speakers: length n (None entries when unknown).
        paths: length n.
        failed: ``(path, reason)`` of files that could not be used.
        fingerprint: SHA-256 over the sorted (content SHA-256, label, speaker) triples.
        feature_version: the feature set of ``X`` (:mod:`ser_model.featureset`).
    """

    X: np.ndarray
    labels: list[str]
    speakers: list[str | None]
    paths: list[str]
    failed: list[tuple[str, str]]
    fingerprint: str
    feature_version: str = FAST

    def subset(self, keep: np.ndarray) -> FeatureTable:
        """The rows where the boolean mask ``keep`` (shape ``(n,)``) is true; no failures, same fingerprint."""
        idx = np.flatnonzero(keep)
        return FeatureTable(
            self.X[idx],
            [self.labels[i] for i in idx],
            [self.speakers[i] for i in idx],
            [self.paths[i] for i in idx],
            [],
            self.fingerprint,
            self.feature_version,
        )


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_EXTRACTOR_MODULES = ("ser_model.audio", "ser_model.level", "ser_model.features")
_ENCODER_MODULES = ("ser_model.featureset", "ser_model.encoder")


@functools.lru_cache(maxsize=4)
def feature_cache_namespace(feature_version: str = FAST) -> str:
    """Folder of the feature cache for this code: ``FEATURE_VERSION`` and a digest of what computes features.

    The digest covers the source of the decoding, level and feature modules and the versions of
    numpy, SciPy, soxr and libsndfile. A cached vector is then never reused by other code or other
    libraries under an unchanged ``FEATURE_VERSION``: vectors cached by an unfinished ``ser-feat-3``
    during development once trained a default model 0.015 WA below the same command on fresh
    features. Recomputing costs little (about 3.5 ms per file).

    For the accurate feature set the digest also covers the encoder modules, the encoder's SHA-256
    and the CTranslate2 version.

    Args:
        feature_version: :data:`ser_model.featureset.FAST` or :data:`ser_model.featureset.ACCURATE`.

    Returns:
        ``"<feature version>-<12 hex digits>"``.
    """
    import importlib

    import scipy
    import soundfile
    import soxr

    h = hashlib.sha256()
    for name in _EXTRACTOR_MODULES + (_ENCODER_MODULES if needs_encoder(feature_version) else ()):
        h.update(Path(importlib.import_module(name).__file__ or "").read_bytes())
    for v in (np.__version__, scipy.__version__, soxr.__version__, soundfile.__libsndfile_version__):
        h.update(str(v).encode())
    if needs_encoder(feature_version):
        import ctranslate2

        from ser_model.encoder import default_encoder_dir, encoder_sha256

        h.update(f"{encoder_sha256(default_encoder_dir())}:{ctranslate2.__version__}".encode())
    return f"{feature_version}-{h.hexdigest()[:12]}"


def _encoder_for(feature_version: str) -> Any:
    """The process's speech encoder when ``feature_version`` needs one, else None."""
    if not needs_encoder(feature_version):
        return None
    from ser_model.encoder import get_encoder

    return get_encoder()


def _features_of(path: str, cache_dir: str | None, feature_version: str = FAST) -> tuple[str, np.ndarray | None, str]:
    """(content sha256, features or None, error reason) for one file, using the cache when given.

    The cache is ``cache_dir / feature_cache_namespace(feature_version) / <sha256>.npy``.
    """
    try:
        digest = file_sha256(path)
    except OSError as e:
        return "", None, f"cannot read file: {e.strerror or e}"
    cache_file = Path(cache_dir, feature_cache_namespace(feature_version), f"{digest}.npy") if cache_dir else None
    if cache_file is not None and cache_file.exists():
        try:
            x = np.load(cache_file, allow_pickle=False)
            if x.ndim == 1 and (x.shape[0] == N_FEATURES or needs_encoder(feature_version)):
                return digest, x, ""
        except (OSError, ValueError):
            pass
    try:
        y, _ = load_audio(path)
        x = extract(y, feature_version, _encoder_for(feature_version))
    except AudioError as e:
        return digest, None, str(e)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, x)
        os.replace(tmp, cache_file)
    return digest, x, ""


def _augmented_features_of(path: str, kind: str, seed: int) -> tuple[np.ndarray | None, str]:
    """Features of one augmented copy of ``path`` (``kind`` from :data:`ser_model.augment.AUGMENTATIONS`)."""
    from ser_model.augment import augment

    try:
        y, _ = load_audio(path)
        rng = np.random.default_rng([seed, int(hashlib.sha256(path.encode()).hexdigest()[:8], 16)])
        return extract_features(augment(y, kind, rng)), ""
    except AudioError as e:
        return None, str(e)


def _init_worker() -> None:
    """Keep BLAS single-threaded inside each extraction process (no oversubscription)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _parallel_map(
    fn: Callable[..., Any], *iterables: Sequence[Any], n_jobs: int | None, progress: Progress | None
) -> list[Any]:
    """``list(map(fn, *iterables))`` in ``n_jobs`` processes (default ``os.cpu_count()``; 1: this process),
    results in input order, ``progress(done, total)`` after each one."""
    n_jobs = n_jobs or os.cpu_count() or 1
    total = len(iterables[0]) if iterables else 0
    out: list[Any] = []
    with ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker) if n_jobs > 1 else nullcontext() as ex:
        for r in ex.map(fn, *iterables, chunksize=8) if ex is not None else map(fn, *iterables):
            out.append(r)
            if progress:
                progress(len(out), total)
    return out


def extract_table(
    files: Sequence[LabelledFile],
    *,
    n_jobs: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    feature_version: str = FAST,
) -> FeatureTable:
    """Extract features of labelled files in parallel.

    Args:
        files: the labelled files.
        feature_version: the feature set (:mod:`ser_model.featureset`): fast or accurate.
        n_jobs: processes; default ``os.cpu_count()``; 1 runs in this process.
        cache_dir: folder of cached feature vectors keyed by content SHA-256, under
            :func:`feature_cache_namespace` (reused across trainings of the same code); None
            disables the cache.
        progress: called as ``progress(done, total)`` after each file.

    Returns:
        The feature table; files that fail to decode are listed in ``failed``, not raised.
    """
    paths = [str(f.path) for f in files]
    cache = str(cache_dir) if cache_dir else None
    results = _parallel_map(
        _features_of, paths, [cache] * len(paths), [feature_version] * len(paths), n_jobs=n_jobs, progress=progress
    )
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
    return FeatureTable(X_arr, labels, speakers, kept, failed, fingerprint, feature_version)


def augment_table(
    table: FeatureTable,
    kinds: Sequence[str],
    *,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: Progress | None = None,
) -> FeatureTable:
    """Features of augmented copies of every file of ``table``, one copy per file and kind.

    Args:
        table: the original files (their paths, labels and speakers are reused).
        kinds: names from :data:`ser_model.augment.AUGMENTATIONS` (noise, stretch, pitch, shift).
        seed: base seed; the parameters of a copy are a deterministic function of seed and path.
        n_jobs: processes; default ``os.cpu_count()``; 1 runs in this process.
        progress: called as ``progress(done, total)``.

    Returns:
        A table of ``len(table.paths) * len(kinds)`` rows (failures listed in ``failed``), paths
        suffixed ``#<kind>``, speakers and labels of the source files.

    Raises:
        ValueError: an unknown augmentation name.
    """
    from ser_model.augment import parse_augmentations

    kinds = parse_augmentations(list(kinds))
    jobs = [(i, k) for k in kinds for i in range(len(table.paths))]
    args = ([table.paths[i] for i, _ in jobs], [k for _, k in jobs], [seed] * len(jobs))
    results = _parallel_map(_augmented_features_of, *args, n_jobs=n_jobs, progress=progress)
    copies = [(i, f"#{k}", x, err) for (i, k), (x, err) in zip(jobs, results, strict=True)]
    fp = hashlib.sha256(f"{table.fingerprint}:{','.join(kinds)}:{seed}".encode()).hexdigest()
    return _copies_table(table, copies, fp, N_FEATURES, FAST)


def _copies_table(
    table: FeatureTable,
    copies: Sequence[tuple[int, str, np.ndarray | None, str]],
    fingerprint: str,
    width: int,
    feature_version: str,
) -> FeatureTable:
    """A table of copies of ``table``'s files: ``(source row, path suffix, features or None, error)``
    each; a copy keeps its source's label and speaker, failed copies are listed in ``failed``."""
    X, labels, speakers, paths, failed = [], [], [], [], []
    for i, suffix, x, err in copies:
        p = table.paths[i] + suffix
        if x is None:
            failed.append((p, err))
            continue
        X.append(x)
        labels.append(table.labels[i])
        speakers.append(table.speakers[i])
        paths.append(p)
    X_arr = np.vstack(X).astype(np.float32) if X else np.zeros((0, width), np.float32)
    return FeatureTable(X_arr, labels, speakers, paths, failed, fingerprint, feature_version)


def babble_groups(speakers: Sequence[str | None], n_splits: int = 5) -> list[int]:
    """The group of every row whose speakers may be mixed into each other's babble.

    The groups are the test parts of the grouped cross-validation (``GroupKFold`` by speaker, as
    :func:`cross_validate` computes them): a degraded copy of a file whose speaker is in fold ``j``
    only hears speakers of fold ``j``, so when that copy trains fold ``k != j`` its babble comes from
    training speakers of fold ``k`` too -- never from a test speaker. Rows without a speaker form one
    group each (no babble of unknown origin).

    Returns:
        A group index per row (``-1 - i`` for row ``i`` without a speaker).
    """
    known = [i for i, s in enumerate(speakers) if s is not None]
    out = [-1 - i for i in range(len(speakers))]
    folds = speaker_folds([speakers[i] for i in known], n_splits)
    if folds is None:  # fewer than 2 speakers: one group
        for i in known:
            out[i] = 0
        return out
    for fold, (_, te) in enumerate(folds):
        for j in te:
            out[known[j]] = fold
    return out


def _condition_features_of(
    path: str,
    seed: tuple[int, ...],
    babble_paths: Sequence[str],
    feature_version: str,
    cache_file: str | None = None,
) -> tuple[np.ndarray | None, str, str]:
    """(features or None, error, condition family such as ``noise+telephone``) of one degraded copy of ``path``.

    With ``cache_file`` (an ``.npz`` path from :func:`copies_cache_key`) the computed copy is written
    there (atomically); :func:`condition_table` reads cached copies itself and calls this for the others."""
    from ser_model.degrade import apply, random_condition, room_bank

    try:
        rng = np.random.default_rng(seed)
        cond = random_condition(rng)
        voices: list[np.ndarray] = []
        if any(st.kind == "babble" for st in cond.steps):
            k = int(rng.integers(3, 8))
            picks = rng.choice(len(babble_paths), size=min(k, len(babble_paths)), replace=False) if babble_paths else []
            voices = [load_audio(babble_paths[int(i)])[0] for i in picks]
            if not voices:  # no other speaker to mix in: white noise at the same SNR instead
                from ser_model.degrade import Condition, Step

                cond = Condition(
                    cond.name,
                    tuple(
                        Step("noise", {"colour": "white", **st.params}) if st.kind == "babble" else st
                        for st in cond.steps
                    ),
                )
        rooms = room_bank(1) if any(st.kind == "reverb" for st in cond.steps) else None
        y, _ = load_audio(path)
        yd = apply(y, cond, rng, babble=voices, rooms=rooms)
        family = "+".join(st.kind for st in cond.steps)
        x = extract(yd, feature_version, _encoder_for(feature_version))
    except AudioError as e:
        return None, str(e), ""
    if cache_file is not None:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp.npz"
        np.savez(tmp, x=x, family=np.asarray(family))
        os.replace(tmp, cache_file)
    return x, "", family


def _content_digest(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return hashlib.sha256(path.encode()).hexdigest()


_DEGRADE_MODULES = ("ser_model.degrade", "ser_model.augment")


@functools.lru_cache(maxsize=4)
def copies_cache_namespace(feature_version: str = FAST) -> str:
    """Folder of cached degraded copies: :func:`feature_cache_namespace` and a digest of the code that
    degrades (the degradation modules, the copy function, pyroomacoustics' version).

    Returns:
        ``"copies-<feature namespace>-<12 hex digits>"``.
    """
    import importlib
    import inspect

    h = hashlib.sha256()
    for name in _DEGRADE_MODULES:
        h.update(Path(importlib.import_module(name).__file__ or "").read_bytes())
    h.update(inspect.getsource(_condition_features_of).encode())
    try:
        import pyroomacoustics

        h.update(str(pyroomacoustics.__version__).encode())
    except ImportError:  # pragma: no cover - a declared dependency
        pass
    return f"copies-{feature_cache_namespace(feature_version)}-{h.hexdigest()[:12]}"


def copies_cache_key(content_digest: str, seed: tuple[int, ...], babble_digests: Sequence[str]) -> str:
    """The cache key of one degraded copy: what decides its samples and nothing else.

    The file's content, the copy's seed (base seed, content, copy index) and the content of the
    voices its babble may be drawn from (sorted): a copy is recomputed when any of them changes,
    and reused wherever the same file is stored and whatever else is in the training set.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256(content_digest.encode())
    h.update(repr(tuple(int(v) for v in seed)).encode())
    for d in sorted(babble_digests):
        h.update(d.encode())
    return h.hexdigest()


def condition_table(
    table: FeatureTable,
    copies: int,
    *,
    seed: int = 0,
    n_splits: int = 5,
    n_jobs: int | None = None,
    progress: Progress | None = None,
    babble_files: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FeatureTable:
    """Multi-condition training copies: ``copies`` degraded versions of every file of ``table``.

    Each copy goes through a channel drawn by :func:`ser_model.degrade.random_condition` (coloured
    noise, babble, telephone codecs, simulated rooms, MP3/Opus, clipping, combinations), seeded by
    ``(seed, SHA-256 of the file's content, copy)``, so the same files give the same copies wherever
    they are stored. Babble mixes 3-7 recordings of ``babble_files`` -- voices of people who are
    no speaker of the training data (LibriSpeech readers), so never a test speaker of any fold --
    or, without them, of *other* speakers of the same :func:`babble_groups` group (never a test
    speaker of any fold). Used like :func:`augment_table`: copies join a fold's training part only.

    Args:
        table: the clean files (their paths, labels, speakers and feature set are reused).
        copies: degraded copies per file (0 gives an empty table).
        seed: base seed.
        n_splits: folds of the cross-validation the copies will be used in (for the babble groups).
        n_jobs: processes; default ``os.cpu_count()``; 1 runs in this process.
        progress: called as ``progress(done, total)``.
        babble_files: recordings of other voices to draw babble from; None: the training speakers'.
        cache_dir: feature cache folder; copies are cached under :func:`copies_cache_namespace`
            by :func:`copies_cache_key`, so a retrain after adding files computes the new files'
            copies only (with ``babble_files``; without them a file's babble pool, and so its copies,
            change when files join its group). None disables the cache.

    Returns:
        A table of up to ``len(table.paths) * copies`` rows, paths suffixed ``#cond<k>:<family>``
        (``family`` the condition's step kinds, e.g. ``reverb+noise``; failures in ``failed``), the
        same feature set as ``table``.
    """
    groups = babble_groups(table.speakers, n_splits)
    # seeded by content, not by path: the same files give the same copies wherever they are stored
    digests = [_content_digest(p) for p in table.paths]
    external = sorted(str(p) for p in babble_files) if babble_files else None
    ext_digests = [_content_digest(p) for p in external] if external else []
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    ns_dir = Path(cache_dir, copies_cache_namespace(table.feature_version)) if cache_dir else None
    pools: dict[tuple[int, str | None, int], tuple[list[str], list[str]]] = {}

    def pool_of(i: int) -> tuple[list[str], list[str]]:
        if external is not None:
            return external, ext_digests
        spk = table.speakers[i]
        key = (groups[i], spk, i if spk is None else -1)
        if key not in pools:
            members = [j for j in by_group[groups[i]] if j != i and (spk is None or table.speakers[j] != spk)]
            pools[key] = ([table.paths[j] for j in members], [digests[j] for j in members])
        return pools[key]

    jobs: list[tuple[int, int]] = [(i, c) for c in range(copies) for i in range(len(table.paths))]
    args_path, args_seed, args_babble, args_fv, args_cache = [], [], [], [], []
    pool_digest: dict[int, str] = {}
    for i, c in jobs:
        paths, pdig = pool_of(i)
        s_ = (seed, int(digests[i][:8], 16), c)
        args_path.append(table.paths[i])
        args_seed.append(s_)
        args_babble.append(paths)
        args_fv.append(table.feature_version)
        if ns_dir is not None:
            if id(paths) not in pool_digest:
                pool_digest[id(paths)] = hashlib.sha256("".join(sorted(pdig)).encode()).hexdigest()
            key = copies_cache_key(digests[i], s_, [pool_digest[id(paths)]])
            args_cache.append(str(ns_dir / key[:2] / f"{key}.npz"))
        else:
            args_cache.append(None)
    # copies already cached are read here; only the others go to the pool (a warm retrain of 15,000
    # copies then reads files instead of shipping every job and its babble list to a process)
    results: list[Any] = [None] * len(jobs)
    todo: list[int] = []
    for k, cf in enumerate(args_cache):
        if cf is not None and os.path.exists(cf):
            try:
                with np.load(cf, allow_pickle=False) as z:
                    results[k] = (np.asarray(z["x"]), "", str(z["family"]))
                continue
            except (OSError, ValueError, KeyError):
                pass
        todo.append(k)
    if progress and len(todo) < len(jobs):
        progress(len(jobs) - len(todo), len(jobs))
    done_before = len(jobs) - len(todo)
    computed = _parallel_map(
        _condition_features_of,
        [args_path[k] for k in todo],
        [args_seed[k] for k in todo],
        [args_babble[k] for k in todo],
        [args_fv[k] for k in todo],
        [args_cache[k] for k in todo],
        n_jobs=n_jobs,
        progress=(lambda d, n: progress(done_before + d, len(jobs))) if progress else None,
    )
    for k, r in zip(todo, computed, strict=True):
        results[k] = r
    made = [
        (i, f"#cond{c}:{family or 'failed'}", x, err) for (i, c), (x, err, family) in zip(jobs, results, strict=True)
    ]
    babble_tag = hashlib.sha256("".join(ext_digests).encode()).hexdigest()[:12] if external else "speakers"
    fp = hashlib.sha256(f"{table.fingerprint}:conditions:{copies}:{seed}:{babble_tag}".encode()).hexdigest()
    return _copies_table(table, made, fp, table.X.shape[1], table.feature_version)


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


def _normalised(table: FeatureTable, speaker_adaptive: bool, min_files: int) -> tuple[np.ndarray, np.ndarray]:
    """(features for the model, adapted mask): per-speaker z-normalised rows when speaker-adaptive."""
    if not speaker_adaptive:
        return table.X, np.zeros(len(table.labels), dtype=bool)
    return speaker_normalise(table.X, table.speakers, min_files=min_files)


def fit_weighted(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Pipeline:
    """Fit the scaler + MLP pipeline with per-row weights (None or all ones: a plain fit).

    scikit-learn >= 1.7 takes ``sample_weight`` in ``MLPClassifier.fit`` (the loss of a row is
    multiplied by its weight); with older versions each row is repeated ``round(weight)`` times (at
    least once), which is the same for integer weights.

    Args:
        pipeline: unfitted pipeline from :func:`ser_model.model.build_pipeline`.
        X: features, shape ``(n, N_FEATURES)``.
        y: class indices, shape ``(n,)``.
        sample_weight: positive weights, shape ``(n,)``, or None.

    Returns:
        ``pipeline``, fitted. scikit-learn's ``ConvergenceWarning`` is silenced: the epoch budget
        (``max_iter``) is a fixed, cross-validated choice, not a failure to converge.
    """
    import inspect
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if sample_weight is None or np.all(sample_weight == 1.0):
            return pipeline.fit(X, y)
        if "sample_weight" in inspect.signature(MLPClassifier.fit).parameters:
            return pipeline.fit(X, y, mlp__sample_weight=np.asarray(sample_weight, dtype=np.float64))
        reps = np.maximum(1, np.rint(sample_weight).astype(int))
        return pipeline.fit(np.repeat(X, reps, axis=0), np.repeat(y, reps))


REFERENCE_ROWS = 4800
"""Training rows the MLP's 300-epoch budget was chosen on: RAVDESS actors 1-20, 1,200 files and 3 degraded
copies each (``benchmarks/accuracy.py``)."""

SAMPLE_PASSES = REFERENCE_ROWS * 300 // 2
"""Rows the MLP sees in one fit (epochs x rows), whatever the size of the training set: half the
reference recipe's (:data:`REFERENCE_ROWS` rows, 300 epochs), with the features projected on
:data:`PCA_COMPONENTS` principal components (``benchmarks/results/training.md``)."""

PCA_COMPONENTS = 512
"""Principal components of the standardised features the MLP takes (:func:`ser_model.model.build_pipeline`).

Measured on the packaged three-corpus recipe against the earlier fits (all 1,757 features, twice
:data:`SAMPLE_PASSES`), same folds and seed: grouped cross-validation WA 0.680 against 0.674, mean
leave-one-corpus-out WA 0.396 against 0.381 each file alone (0.450 against 0.428 batch-normalised),
for a third of the time of every fit. 384 components lost 0.013 WA in the grouped cross-validation
(TESS 0.70 against 0.74)."""


def training_params(
    n_rows: int, epochs: int = 300, min_epochs: int = 30, passes: int = SAMPLE_PASSES
) -> dict[str, Any]:
    """:func:`ser_model.model.build_pipeline` arguments for ``n_rows`` training rows: an epoch budget
    of ``passes / n_rows`` (the same number of rows seen, so the same cost, whatever the size of the
    training set), between ``min_epochs`` and ``epochs``, and the projection on :data:`PCA_COMPONENTS`
    principal components (:func:`pipeline_for` leaves it out for narrower features).

    With the default :data:`SAMPLE_PASSES`: 300 epochs up to 2,400 rows, 200 for RAVDESS with two
    degraded copies (3,600 rows), 141 for the three shared corpora alone (5,120), 47 for them with two
    degraded copies each (15,360). Minibatches stay 200 rows (``batch_size="auto"``).

    Args:
        n_rows: training rows (files and their degraded copies).
        epochs: the most epochs (small sets).
        min_epochs: the fewest epochs (large sets: never a handful of passes).
        passes: rows seen in one fit.

    Returns:
        ``{"max_iter": e, "n_components": PCA_COMPONENTS}`` with ``min_epochs <= e <= epochs``.

    Raises:
        ValueError: ``n_rows < 1``.
    """
    if n_rows < 1:
        raise ValueError(f"no training rows ({n_rows})")
    return {"max_iter": int(max(min_epochs, min(epochs, round(passes / n_rows)))), "n_components": PCA_COMPONENTS}


DIMENSION_ALPHA = 0.1
"""L2 strength of the dimension head's logistic regressions, per unit of mean loss over the rows
(scikit-learn's ``C`` is ``1 / (alpha * n_rows)``, so that the penalty weighs the same against a few
hundred rows as against the packaged recipe's 15,360): a strong penalty on 1,757 standardised
features. Leave-one-corpus-out binary UAR (mean of the three shared corpora, arousal / valence; 7,000
to 12,000 training rows; a one-off sweep, not kept in a result file) was flat for ``C`` between 1e-4 and 3e-3 (0.766-0.770 / 0.679-0.687; ``alpha``
about 0.03-1) and lower at 1e-2 (0.749 / 0.676)."""


def fit_dimension_head(
    X: np.ndarray,
    labels: Sequence[str],
    sample_weight: np.ndarray | None = None,
    *,
    alpha: float = DIMENSION_ALPHA,
) -> Any:
    """Fit the arousal/valence head: two linear logistic regressions on the standardised features.

    Each training row's category gives its side of 0.5 on each dimension
    (:func:`ser_model.dimensions.positions`: high or low arousal, positive or negative valence, the
    binary groupings of Schuller et al. 2010), so a corpus with only some categories still teaches
    both dimensions. For each dimension a scikit-learn ``LogisticRegression`` (L2, lbfgs) is fitted
    with the rows' weights rescaled so that both sides weigh the same (what the mix of categories in
    the training corpora would otherwise decide); its output, the probability of high arousal or of
    positive valence, the head's estimate, 0.5 the boundary; a bundle averages it with its mapped
    category probabilities (:meth:`ser_model.model.ModelBundle.dimensions`). A linear model was
    chosen over an MLP regression onto the positions because it did better on corpora it never heard
    (``benchmarks/results/dimensions.md``; simpler models are the usual cross-corpus baseline,
    Schuller et al. 2010). One BLAS thread: the same weights in any process.

    Args:
        X: features ``(n, n_features)``.
        labels: category of each row, length ``n`` (each must have a position).
        sample_weight: per-row weights ``(n,)`` (e.g. the corpus balance) or None (all 1).
        alpha: L2 strength per unit of mean loss (:data:`DIMENSION_ALPHA`).

    Returns:
        :class:`ser_model.dimensions.DimensionHead` (``output="logistic"``), or None when a dimension
        has rows (of positive weight) on one side only (e.g. only angry and happy: both high arousal),
        which leaves nothing to learn; the bundle then maps its category probabilities.

    Raises:
        KeyError: a label without a position.
        ValueError: ``len(labels)`` or ``len(sample_weight)`` is not ``n``, or a weight is negative or
            not finite.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ser_model.dimensions import DimensionHead, binary, positions
    from ser_model.threads import one_blas_thread

    X = np.asarray(X, dtype=np.float64)
    if len(labels) != X.shape[0]:
        raise ValueError(f"{len(labels)} labels for {X.shape[0]} feature rows")
    sides = binary(positions(labels))
    base = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if base.shape != (X.shape[0],):
        raise ValueError(f"sample_weight has shape {base.shape}, expected ({X.shape[0]},)")
    if not np.isfinite(base).all() or (base < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if any(base[sides[:, j] == side].sum() <= 0 for j in range(sides.shape[1]) for side in (True, False)):
        return None  # a dimension with (weighted) rows on one side only: nothing to learn
    coefs, intercepts = [], []
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaler = StandardScaler().fit(X)
        Z = scaler.transform(X)
        for j in range(sides.shape[1]):
            w = base.copy()
            for side in (True, False):
                w[sides[:, j] == side] *= 0.5 / w[sides[:, j] == side].sum()
            lr = LogisticRegression(C=1.0 / (alpha * len(w)), max_iter=2000)
            lr.fit(Z, sides[:, j], sample_weight=w * len(w))
            coefs.append(lr.coef_[0])
            intercepts.append(lr.intercept_[0])
    return DimensionHead(
        mean=np.asarray(scaler.mean_, dtype=np.float64),
        scale=np.asarray(scaler.scale_, dtype=np.float64),
        coefs=[np.stack(coefs, axis=1)],
        intercepts=[np.asarray(intercepts, dtype=np.float64)],
        output="logistic",
        meta={
            "targets": "side of 0.5 of ser_model.dimensions.CATEGORY_POSITIONS of each training file's category",
            "model": "StandardScaler + one L2 LogisticRegression per dimension, sides weighted equally",
            "alpha": alpha,
        },
    )


def _fit_head(X: np.ndarray, labels: list[str], w: np.ndarray | None) -> Any:
    return fit_dimension_head(X, labels, w)


FitJob = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]
"""``(X, y, sample_weight)`` of one pipeline fit."""


def pipeline_for(params: dict[str, Any], n_rows: int, n_features: int) -> Pipeline:
    """:func:`ser_model.model.build_pipeline` of ``params`` for a training matrix ``(n_rows, n_features)``.

    A PCA cannot keep more components than the matrix has rows or columns: ``n_components`` is
    lowered to ``n_rows``, and the step is left out when it would keep every feature (a rotation
    alone saves nothing: the first layer would be as wide).
    """
    params = dict(params)
    k = params.get("n_components")
    if k:
        params["n_components"] = None if k >= n_features else min(k, n_rows)
    return build_pipeline(**params)


def _fit_one(params: dict[str, Any], X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> Pipeline:
    """One :func:`fit_weighted` of a fresh pipeline on one BLAS thread (the same numbers in any process)."""
    from ser_model.threads import one_blas_thread

    with one_blas_thread():
        return fit_weighted(pipeline_for(params, *X.shape), X, y, w)


def fit_pipelines(
    params: dict[str, Any] | None, jobs: Sequence[FitJob], *, n_jobs: int | None = 1, progress: Progress | None = None
) -> list[Pipeline]:
    """Fit one pipeline per job, in ``n_jobs`` processes.

    Every fit runs on one BLAS thread with the pipeline's own ``random_state``, so the fitted
    weights are the same whatever ``n_jobs`` is (tested): the processes only change when each fit
    runs. The fits of one cross-validation are independent, so on 2 cores two run at once instead of
    one fit using both cores' BLAS threads, which scikit-learn's small matrix products barely use.

    Args:
        params: :func:`ser_model.model.build_pipeline` arguments.
        jobs: ``(X, y, sample_weight)`` per fit.
        n_jobs: processes (a fork-started pool); None: ``os.cpu_count()``; 1 fits in this process.
        progress: called as ``progress(done, total)`` after each fit.

    Returns:
        The fitted pipelines, in the order of ``jobs``.
    """
    p = dict(params or {})
    return parallel_calls([(_fit_one, (p, X, y, w)) for X, y, w in jobs], n_jobs=n_jobs, progress=progress)


def parallel_calls(
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    *,
    n_jobs: int | None = 1,
    progress: Progress | None = None,
) -> list[Any]:
    """``[fn(*args) for fn, args in calls]`` in ``n_jobs`` fork-started processes (each on one BLAS
    thread), results in the order of ``calls``; 1 (or one call) runs them in this process.

    Args:
        calls: ``(function, arguments)`` pairs; functions and arguments must pickle.
        n_jobs: processes; None: ``os.cpu_count()``.
        progress: called as ``progress(done, total)`` after each call.

    Returns:
        The results.
    """
    n = min(n_jobs or os.cpu_count() or 1, len(calls))
    out: list[Any] = []
    shared = _SHARED_POOL
    if n_jobs != 1 and shared is not None and calls:  # queue in the pool every stage of this run shares
        return _collect([shared.submit(fn, *args) for fn, args in calls], progress)
    if n <= 1:
        for fn, args in calls:
            out.append(fn(*args))
            if progress:
                progress(len(out), len(calls))
        return out
    with _process_pool(n) as ex:
        return _collect([ex.submit(fn, *args) for fn, args in calls], progress)


def _process_pool(n: int) -> ProcessPoolExecutor:
    """``n`` fork-started processes (where the platform has fork), each on one BLAS thread."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker)


def _collect(futures: list[Future[Any]], progress: Progress | None) -> list[Any]:
    out: list[Any] = []
    for f in futures:
        out.append(f.result())
        if progress:
            progress(len(out), len(futures))
    return out


_SHARED_POOL: ProcessPoolExecutor | None = None
"""The pool of :func:`shared_fit_pool` while its block runs."""


@contextmanager
def shared_fit_pool(n_jobs: int | None) -> Iterator[None]:
    """Inside the block, every :func:`parallel_calls` (of any thread) queues its calls in one pool of
    ``n_jobs`` processes.

    ``ser-batch train`` runs its cross-validations and its final fits from several threads at once
    (:func:`worker.training.run_training`): their fits share this pool, so the processes stay busy
    until the last fit instead of idling at the end of every stage (on 2 processes the 21 fits of
    ``--cv full`` take 11 rounds instead of 13, the 8 of ``--cv quick`` 4 instead of 5). A fit gives
    the same weights in any process (one BLAS thread, its own ``random_state``), so the results are
    those of running the stages one after the other (tested). The processes start here, in the
    calling thread, before any stage thread exists. With ``n_jobs`` 1 nothing is shared: each call
    runs where it is made.

    Args:
        n_jobs: processes; None: ``os.cpu_count()``.
    """
    global _SHARED_POOL
    n = n_jobs or os.cpu_count() or 1
    if n <= 1:
        yield
        return
    ex = _process_pool(n)
    ex.submit(int).result()  # fork the processes now (ProcessPoolExecutor forks them all at the first call)
    previous, _SHARED_POOL = _SHARED_POOL, ex
    try:
        yield
    finally:
        _SHARED_POOL = previous
        ex.shutdown(wait=True, cancel_futures=True)


def _weights(
    sample_weight: np.ndarray | None, rows: np.ndarray, n_extra: int = 0, extra: np.ndarray | None = None
) -> np.ndarray | None:
    """Weights of ``rows`` (training rows of a fold) followed by those of ``n_extra`` copies: ``extra``
    (the weights of their source files, :func:`copy_weights`) or ones."""
    if sample_weight is None:
        return None
    tail = np.ones(n_extra) if extra is None else np.asarray(extra, dtype=np.float64)
    return np.concatenate([np.asarray(sample_weight, dtype=np.float64)[rows], tail])


def copy_weights(
    sample_weight: np.ndarray | None, table: FeatureTable, augmented: FeatureTable | None
) -> np.ndarray | None:
    """The weight of every copy of ``augmented``: its source file's weight in ``sample_weight`` (a copy
    weighs what its file weighs, so a corpus balanced by weight stays balanced with its copies; a
    copy whose source is not in ``table`` weighs 1).

    Returns:
        ``(n_aug,)`` float64, or None without ``sample_weight`` or copies.
    """
    if sample_weight is None or augmented is None or not len(augmented.labels):
        return None
    index = {p: i for i, p in enumerate(table.paths)}
    w = np.asarray(sample_weight, dtype=np.float64)
    src = [index.get(p.rsplit("#", 1)[0], -1) for p in augmented.paths]
    return np.asarray([w[i] if i >= 0 else 1.0 for i in src], dtype=np.float64)


def speaker_folds(speakers: Sequence[str | None], n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The speaker-independent folds of every cross-validation here: ``GroupKFold`` by speaker.

    ``min(n_splits, number of speakers)`` folds of row indices ``(train, test)``; no speaker is in
    both parts of a fold. ``GroupKFold`` assigns groups to folds from the group sizes alone, so
    :func:`cross_validate`, :func:`cross_validate_batch` and :func:`held_out_channel_predictions`
    given the same speakers get the same folds.

    Returns:
        The folds, or None when a row has no speaker or there are fewer than 2 speakers.
    """
    if any(s is None for s in speakers) or len(set(speakers)) < 2:
        return None
    groups = np.asarray(speakers, dtype=object)
    k = min(n_splits, len(set(speakers)))
    return list(GroupKFold(n_splits=k).split(np.zeros((len(groups), 1)), groups=groups))


def check_cross_validation(table: FeatureTable, n_splits: int = 5) -> None:
    """Raise the ``ValueError`` :func:`cross_validate` would raise for ``table``'s folds, without fitting.

    Raises:
        ValueError: speakers unknown (or fewer than 2) and fewer than 2 examples of some label.
    """
    if speaker_folds(table.speakers, n_splits) is None:
        _stratified_folds(table, n_splits)


def _stratified_folds(table: FeatureTable, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    y = np.asarray(table.labels)
    k = min(n_splits, int(min(np.unique(y, return_counts=True)[1])))
    if k < 2:
        raise ValueError("need at least 2 examples per label for cross-validation")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=0).split(table.X, y))


def cross_validate(
    table: FeatureTable,
    *,
    labels: Sequence[str],
    n_splits: int = 5,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    speaker_adaptive: bool = False,
    min_speaker_files: int = MIN_SPEAKER_FILES,
    augmented: FeatureTable | None = None,
    splits: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    sample_weight: np.ndarray | None = None,
    n_jobs: int | None = 1,
) -> dict[str, Any]:
    """Speaker-independent cross-validation (GroupKFold by speaker) of the MLP pipeline.

    Args:
        table: features, labels and speakers.
        labels: label order of the report.
        n_splits: folds; reduced to the number of speakers when there are fewer.
        params: keyword arguments for :func:`ser_model.model.build_pipeline`.
        progress: called as ``progress(fold_done, n_folds)``.
        speaker_adaptive: z-normalise each speaker's rows by that speaker's statistics
            (:func:`ser_model.speaker.speaker_normalise`) before training and testing; rows of
            speakers with fewer than ``min_speaker_files`` rows are classified by a global model
            trained on the raw features of the fold.
        min_speaker_files: see :data:`ser_model.speaker.MIN_SPEAKER_FILES`.
        augmented: extra training rows from :func:`augment_table`; a row is used in a fold only when
            its speaker is one of the fold's training speakers (speaker-independent), or, without
            speakers, when its source file is in the training part. In speaker-adaptive mode the copies
            are normalised by their source speaker's statistics of the original files.
        splits: explicit ``(train_index, test_index)`` pairs over ``table`` (e.g. to compare
            pipelines on identical folds); overrides the folds chosen here.
        sample_weight: per-row training weights, shape ``(n,)`` (see :func:`fit_weighted`); used
            only when a row is in a fold's training part, never on test rows (metrics are unweighted).
        n_jobs: processes fitting the folds' models (:func:`fit_pipelines`; the same result for any
            number); ``progress`` then counts fitted models.

    Returns:
        :func:`ser_model.metrics.classification_metrics` over the pooled out-of-fold predictions
        (rows in no test part, possible with ``splits``, are left out),
        plus ``protocol``, ``n_splits``, ``per_fold_wa``, ``predictions`` (out-of-fold labels, None
        for untested rows), ``proba`` (out-of-fold raw softmax probabilities ``(n, len(labels))``, NaN
        for untested rows), ``ood_scores`` (``(n,)`` out-of-fold :class:`ser_model.trust.OODDetector`
        scores of the raw features, NaN when speaker-adaptive or untested; :data:`OOF_KEYS` lists the
        per-row keys, which :func:`public_metrics` drops),
        ``speaker_adaptive`` and ``n_speaker_adapted`` (test rows classified in that mode); with
        ``augmented`` and known speakers also ``aug_proba`` ``(n_aug, len(labels))`` and
        ``aug_ood_scores`` ``(n_aug,)``: the out-of-fold predictions and scores of the *test*
        speakers' augmented copies (NaN where not tested), which calibrate confidence under degraded
        conditions (:func:`fit_trust`). The fold's out-of-domain detector is fitted on its clean and
        augmented training rows.

    Raises:
        ValueError: fewer than 2 speakers (grouped) or fewer examples per class than folds.
    """
    y = np.asarray(table.labels)
    speakers = table.speakers
    by_speaker = speaker_folds(speakers, n_splits)
    grouped = by_speaker is not None
    if splits is not None:
        splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splits]
        protocol = f"given splits, {len(splits)} folds"
    elif by_speaker is not None:
        splits = by_speaker
        protocol = f"speaker-independent: GroupKFold by speaker, {len(splits)} folds, {len(set(speakers))} speakers"
    else:
        splits = _stratified_folds(table, n_splits)
        protocol = f"stratified (speaker-dependent): StratifiedKFold, {len(splits)} folds, speakers unknown"
    if speaker_adaptive:
        protocol += f"; speaker-adaptive normalisation (>= {min_speaker_files} files per speaker)"
    labels = list(labels)
    y_idx = encode_labels(table.labels, labels)
    Xn, adapted = _normalised(table, speaker_adaptive, min_speaker_files)
    aug_X = aug_y = aug_spk = aug_src = aug_idx = None
    n_aug = len(augmented.labels) if augmented is not None else 0
    aug_proba = np.full((n_aug, len(labels)), np.nan)
    aug_ood = np.full(n_aug, np.nan)
    aug_w = copy_weights(sample_weight, table, augmented)
    if augmented is not None and len(augmented.labels):
        aug_idx = np.arange(n_aug)
        aug_y = encode_labels(augmented.labels, labels)
        aug_spk = np.asarray([s if s is not None else "" for s in augmented.speakers], dtype=object)
        src_index = {p: i for i, p in enumerate(table.paths)}
        aug_src = np.asarray([src_index.get(p.rsplit("#", 1)[0], -1) for p in augmented.paths])
        aug_X = augmented.X
        if speaker_adaptive:
            stats = speaker_statistics(table.X, table.speakers, min_files=min_speaker_files)
            aug_X, aug_adapted = apply_speaker_stats(augmented.X, augmented.speakers, stats)
            keep = aug_adapted
            aug_X, aug_y, aug_spk, aug_src = aug_X[keep], aug_y[keep], aug_spk[keep], aug_src[keep]
            aug_idx = aug_idx[keep]
            aug_w = None if aug_w is None else aug_w[keep]
    spk_arr = np.asarray([s if s is not None else "" for s in speakers], dtype=object)
    pred = np.empty(len(y), dtype=object)
    proba = np.full((len(y), len(labels)), np.nan)
    ood_scores = np.full(len(y), np.nan)
    per_fold = []
    jobs: list[FitJob] = []
    uses: list[np.ndarray | None] = []
    fold_job: list[int] = []
    glob_job: list[int | None] = []
    for tr, te in splits:
        tr_rows = tr[adapted[tr]] if speaker_adaptive else tr
        Xtr, ytr = Xn[tr_rows], y_idx[tr_rows]
        use = None
        if aug_X is not None:
            use = np.isin(aug_spk, spk_arr[tr]) if grouped else np.isin(aug_src, tr)
            Xtr, ytr = np.vstack([Xtr, aug_X[use]]), np.concatenate([ytr, aug_y[use]])
        uses.append(use)
        fold_job.append(len(jobs))
        extra = None if (aug_w is None or use is None) else aug_w[use]
        jobs.append((Xtr, ytr, _weights(sample_weight, tr_rows, len(ytr) - len(tr_rows), extra)))
        glob_job.append(None)
        if speaker_adaptive and (~adapted[te]).any():  # a global model for the test rows not adapted
            glob_job[-1] = len(jobs)
            jobs.append((table.X[tr], y_idx[tr], _weights(sample_weight, tr)))
    models = fit_pipelines(params, jobs, n_jobs=n_jobs, progress=progress)
    for i, (tr, te) in enumerate(splits):
        model, use = models[fold_job[i]], uses[i]
        fold_proba = np.zeros((len(te), len(labels)))
        ad = adapted[te]
        if ad.any():
            fold_proba[ad] = class_proba(model, Xn[te[ad]], len(labels))
        if (~ad).any():
            glob = model if glob_job[i] is None else models[glob_job[i]]
            fold_proba[~ad] = class_proba(glob, table.X[te[~ad]], len(labels))
        proba[te] = fold_proba
        pred[te] = np.asarray(labels, dtype=object)[fold_proba.argmax(axis=1)]
        te_aug = None
        if aug_X is not None and grouped:  # the test speakers' degraded copies, out of fold too
            te_aug = np.isin(aug_spk, spk_arr[te])
            if te_aug.any():
                aug_proba[aug_idx[te_aug]] = class_proba(model, aug_X[te_aug], len(labels))
        if not speaker_adaptive and len(tr) >= 3:
            det = fit_ood(table.X[tr] if aug_X is None else np.vstack([table.X[tr], aug_X[use]]))
            ood_scores[te] = det.score(table.X[te])
            if te_aug is not None and te_aug.any():
                aug_ood[aug_idx[te_aug]] = det.score(aug_X[te_aug])
        per_fold.append(float(np.mean(pred[te] == y[te])))
    tested = np.zeros(len(y), dtype=bool)
    for _, te in splits:
        tested[te] = True
    report = classification_metrics(list(y[tested]), list(pred[tested]), labels)
    report.update(
        protocol=protocol,
        n_splits=len(splits),
        per_fold_wa=per_fold,
        predictions=list(pred),
        proba=proba,
        ood_scores=ood_scores,
        aug_proba=aug_proba,
        aug_ood_scores=aug_ood,
        speaker_adaptive=speaker_adaptive,
        n_speaker_adapted=int(adapted.sum()),
    )
    return report


def channel_groups(paths: Sequence[str]) -> list[str]:
    """Normalisation group of every training row for the batch-normalised model.

    A batch is one recording channel; the training rows that share one are: the clean files (one
    studio), and the degraded copies of :func:`condition_table` of one kind of channel (their path
    suffix ``#cond<k>:<family>``, e.g. every ``telephone`` copy). Normalising each group by its own
    statistics teaches the model what a batch normalised by its own statistics looks like.
    """
    return [p.rsplit("#", 1)[1].split(":", 1)[1] if "#cond" in p else "clean" for p in paths]


def corpus_of(speaker: str | None) -> str:
    """The corpus of a namespaced speaker key (``"ravdess:07"`` -> ``"ravdess"``); ``"data"`` otherwise."""
    return speaker.split(":", 1)[0] if speaker and ":" in speaker else "data"


def batch_groups(paths: Sequence[str], speakers: Sequence[str | None], by_corpus: bool) -> list[str]:
    """Normalisation group of every row for the batch-normalised model: :func:`channel_groups`, and with
    ``by_corpus`` each corpus apart (``"nemo/clean"``, ``"ravdess/telephone"``): a batch is one source
    and one channel, so each training corpus is normalised by its own statistics (per-corpus
    normalisation, Schuller et al. 2010)."""
    fam = channel_groups(paths)
    if not by_corpus:
        return fam
    return [f"{corpus_of(s)}/{f}" for s, f in zip(speakers, fam, strict=True)]


def _batch_rows(X: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """``X`` z-normalised per group (every group of at least 2 rows; others centred by nothing)."""
    return speaker_normalise(X, list(groups), min_files=2)[0]


def cross_validate_batch(
    table: FeatureTable,
    *,
    labels: Sequence[str],
    n_splits: int = 5,
    params: dict[str, Any] | None = None,
    augmented: FeatureTable | None = None,
    progress: Progress | None = None,
    by_corpus: bool = False,
    n_jobs: int | None = 1,
    sample_weight: np.ndarray | None = None,
) -> dict[str, Any]:
    """Speaker-independent cross-validation of the batch-normalised model.

    Folds as :func:`cross_validate` (GroupKFold by speaker). A fold's training rows are normalised
    per :func:`channel_groups` group (the clean training files together; the degraded copies of the
    fold's training speakers by kind of channel); its test part -- several speakers the model never
    heard, one recording channel -- is normalised as one batch by its own statistics, as
    ``submit --normalise batch`` does.

    Args:
        by_corpus: normalise the training rows of each corpus by that corpus' own statistics
            (:func:`batch_groups`), as a user's batch from one source is normalised by its own.
        n_jobs: processes fitting the folds' models (:func:`fit_pipelines`).
        sample_weight: per-row training weights of ``table`` (copies weigh what their file weighs).

    Returns:
        The report of :func:`cross_validate` (``ood_scores`` all NaN; ``aug_proba`` for the test
        speakers' degraded copies, each kind of channel normalised as one batch; ``batch_normalised``
        True).

    Raises:
        ValueError: fewer than 2 speakers.
    """
    speakers = table.speakers
    splits = speaker_folds(speakers, n_splits)
    if splits is None:
        raise ValueError("batch-normalised cross-validation needs at least 2 known speakers")
    y = np.asarray(table.labels)
    k = len(splits)
    labels = list(labels)
    y_idx = encode_labels(table.labels, labels)
    spk_arr = np.asarray(speakers, dtype=object)
    aug_y = aug_spk = aug_grp = None
    if augmented is not None and len(augmented.labels):
        aug_y = encode_labels(augmented.labels, labels)
        aug_spk = np.asarray([s if s is not None else "" for s in augmented.speakers], dtype=object)
        aug_grp = np.asarray(batch_groups(augmented.paths, augmented.speakers, by_corpus), dtype=object)
    pred = np.empty(len(y), dtype=object)
    proba = np.full((len(y), len(labels)), np.nan)
    aug_proba = np.full((len(aug_y) if aug_y is not None else 0, len(labels)), np.nan)
    per_fold = []
    src_groups = batch_groups(table.paths, table.speakers, by_corpus)
    aug_w = copy_weights(sample_weight, table, augmented)
    jobs: list[FitJob] = []
    for tr, _ in splits:
        Xtr, ytr, grp = table.X[tr], y_idx[tr], [src_groups[j] for j in tr]
        w = _weights(sample_weight, tr)
        if aug_y is not None:
            use = np.isin(aug_spk, spk_arr[tr])
            Xtr = np.vstack([Xtr, augmented.X[use]])  # type: ignore[union-attr]
            ytr = np.concatenate([ytr, aug_y[use]])
            grp += list(aug_grp[use])  # type: ignore[index]
            w = _weights(sample_weight, tr, int(use.sum()), None if aug_w is None else aug_w[use])
        jobs.append((_batch_rows(Xtr, grp), ytr, w))
    models = fit_pipelines(params, jobs, n_jobs=n_jobs, progress=progress)
    for i, (_, te) in enumerate(splits):
        model = models[i]
        te_groups = [src_groups[j].replace("/clean", "/batch") if by_corpus else "batch" for j in te]
        fold_proba = class_proba(model, _batch_rows(table.X[te], te_groups), len(labels))
        if aug_y is not None:  # the test speakers' degraded copies, one batch per kind of channel
            te_aug = np.isin(aug_spk, spk_arr[te])
            if te_aug.any():
                Xa = _batch_rows(augmented.X[te_aug], list(aug_grp[te_aug]))  # type: ignore[union-attr,index]
                aug_proba[te_aug] = class_proba(model, Xa, len(labels))
        proba[te] = fold_proba
        pred[te] = np.asarray(labels, dtype=object)[fold_proba.argmax(axis=1)]
        per_fold.append(float(np.mean(pred[te] == y[te])))
    report = classification_metrics(list(y), list(pred), labels)
    report.update(
        protocol=f"speaker-independent: GroupKFold by speaker, {k} folds, {len(set(speakers))} speakers; "
        "batch-normalised (each fold's test speakers normalised together as one batch)",
        n_splits=len(splits),
        per_fold_wa=per_fold,
        predictions=list(pred),
        proba=proba,
        ood_scores=np.full(len(y), np.nan),
        aug_proba=aug_proba,
        batch_normalised=True,
    )
    return report


def channel_kinds(paths: Sequence[str]) -> list[frozenset[str]]:
    """The step kinds of every row's channel: ``{"reverb", "babble"}`` for a
    :func:`condition_table` copy ``...#cond1:reverb+babble``, the empty set for a clean file."""
    return [frozenset(g.split("+")) if g != "clean" else frozenset() for g in channel_groups(paths)]


def held_out_channel_predictions(
    table: FeatureTable,
    augmented: FeatureTable,
    *,
    labels: Sequence[str],
    n_splits: int = 5,
    params: dict[str, Any] | None = None,
    sample_weight: np.ndarray | None = None,
    progress: Progress | None = None,
    n_jobs: int | None = 1,
) -> dict[str, np.ndarray]:
    """Out-of-fold predictions of degraded copies through a kind of channel their model never heard.

    The calibration data of :func:`cross_validate` are files of unseen speakers, but through channels
    whose kind (noise, babble, telephone, room, codec, clipping) the fold's model and out-of-domain
    detector were trained on: their scores span about 0.8-2, and they say nothing about recordings
    farther away (another corpus scores 2.4-2.9). Here, for every fold (GroupKFold by speaker, the
    folds of :func:`cross_validate`) and every kind of channel of ``augmented``, a model and a detector
    are fitted on the fold's clean training files plus its training speakers' copies *without* that
    kind, and the test speakers' copies *with* it are predicted and scored: files both of an unseen
    speaker and of an unseen kind of channel, with their true labels (leave-one-condition-out, as
    in multi-condition ASR evaluation). :func:`fit_trust` adds them to the global calibration.

    Args:
        table: the clean training files (known speakers).
        augmented: their :func:`condition_table` copies (paths ``#cond<k>:<family>``).
        labels: label order.
        n_splits: folds (as the cross-validation).
        params: :func:`ser_model.model.build_pipeline` arguments.
        sample_weight: per-row weights of ``table`` ``(n,)`` (copies weigh 1).
        progress: called as ``progress(done, total)`` after each fitted model.

    Returns:
        ``proba`` ``(m, len(labels))`` raw probabilities, ``ood_scores`` ``(m,)``, ``y`` ``(m,)`` class
        indices, ``kind`` ``(m,)`` the held-out kind; a copy whose channel has two kinds appears once
        per kind. Empty arrays when speakers are unknown or ``augmented`` has no condition copies.
    """
    labels = list(labels)
    empty = _empty_held_out(len(labels))
    speakers = table.speakers
    splits = speaker_folds(speakers, n_splits)
    if splits is None or not len(augmented.labels):
        return empty
    kinds_of = channel_kinds(augmented.paths)
    kinds = sorted(set().union(*kinds_of))
    if not kinds:
        return empty
    y_idx = encode_labels(table.labels, labels)
    aug_y = encode_labels(augmented.labels, labels)
    spk = np.asarray(speakers, dtype=object)
    aug_spk = np.asarray([s if s is not None else "" for s in augmented.speakers], dtype=object)
    has = {k: np.fromiter((k in ks for ks in kinds_of), dtype=bool, count=len(kinds_of)) for k in kinds}
    aug_w = copy_weights(sample_weight, table, augmented)
    cells: list[tuple[np.ndarray, str]] = []
    jobs: list[FitJob] = []
    for tr, te in splits:
        tr_aug, te_aug = np.isin(aug_spk, spk[tr]), np.isin(aug_spk, spk[te])
        for kind in kinds:
            use, test = tr_aug & ~has[kind], te_aug & has[kind]
            if test.any():
                cells.append((test, kind))
                jobs.append(
                    (
                        np.vstack([table.X[tr], augmented.X[use]]),
                        np.concatenate([y_idx[tr], aug_y[use]]),
                        _weights(sample_weight, tr, int(use.sum()), None if aug_w is None else aug_w[use]),
                    )
                )
    tests = [(augmented.X[test], aug_y[test], kind) for test, kind in cells]
    return _held_out(labels, params, jobs, tests, n_jobs=n_jobs, progress=progress)


def _empty_held_out(n_labels: int) -> dict[str, np.ndarray]:
    """The held-out predictions of nothing (see :func:`held_out_channel_predictions`)."""
    return {
        "proba": np.zeros((0, n_labels)),
        "ood_scores": np.zeros(0),
        "y": np.zeros(0, dtype=np.int64),
        "kind": np.zeros(0, dtype=object),
    }


def _held_out(
    labels: Sequence[str],
    params: dict[str, Any] | None,
    jobs: Sequence[FitJob],
    tests: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    n_jobs: int | None,
    progress: Progress | None,
) -> dict[str, np.ndarray]:
    """Fit one model per job and predict and score its test rows ``(X, y, kind)`` with it and with an
    out-of-domain detector of the job's training rows; the dict of :func:`held_out_channel_predictions`."""
    return _held_out_results(labels, jobs, tests, fit_pipelines(params, jobs, n_jobs=n_jobs, progress=progress))


def _held_out_results(
    labels: Sequence[str],
    jobs: Sequence[FitJob],
    tests: Sequence[tuple[np.ndarray, np.ndarray, str]],
    models: list[Any],
) -> dict[str, np.ndarray]:
    """The dict of :func:`_held_out` from the models fitted on ``jobs``."""
    if not jobs:
        return _empty_held_out(len(labels))
    out_p, out_s, out_y, out_k = [], [], [], []
    for (Xte, yte, kind), (Xtr, _, _), model in zip(tests, jobs, models, strict=True):
        out_p.append(class_proba(model, Xte, len(labels)))
        out_s.append(fit_ood(Xtr).score(Xte))
        out_y.append(yte)
        out_k += [kind] * len(yte)
    return {
        "proba": np.vstack(out_p),
        "ood_scores": np.concatenate(out_s),
        "y": np.concatenate(out_y),
        "kind": np.asarray(out_k, dtype=object),
    }


def held_out_corpus_predictions(
    table: FeatureTable,
    augmented: FeatureTable | None,
    *,
    labels: Sequence[str],
    params: dict[str, Any] | None = None,
    sample_weight: np.ndarray | None = None,
    n_jobs: int | None = 1,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of each training corpus by a model trained on the *other* corpora (leave-one-corpus-out).

    The multi-corpus counterpart of :func:`held_out_channel_predictions`, and what a deployed model
    meets most: recordings of a corpus (a studio, a language, a way of acting) it never heard. For every
    corpus (:func:`corpus_of` of the speaker keys) a model and an out-of-domain detector are fitted on
    the other corpora's clean files and copies, and that corpus' clean files and copies whose label
    the model knows are predicted and scored. :func:`fit_trust` adds them to the global calibration, so
    the temperature's growth with the out-of-domain score and its cap are fitted on files as far from
    the training data as a new corpus is. One fit per corpus.

    Args:
        table: the clean training files (speakers namespaced by corpus, ``"nemo:EB0"``).
        augmented: their :func:`condition_table` copies, or None.
        labels: label order.
        params: :func:`ser_model.model.build_pipeline` arguments.
        sample_weight: per-row weights of ``table`` (copies weigh what their file weighs).
        n_jobs: processes for the fits (:func:`fit_pipelines`).
        progress: called as ``progress(done, total)`` after each fit.

    Returns:
        As :func:`held_out_channel_predictions`, ``kind`` ``"corpus:<name>"``; empty arrays with fewer
        than two corpora.
    """
    labels = list(labels)
    jobs, tests = _held_out_corpus_jobs(table, augmented, labels, sample_weight)
    return _held_out(labels, params, jobs, tests, n_jobs=n_jobs, progress=progress)


def _held_out_corpus_jobs(
    table: FeatureTable, augmented: FeatureTable | None, labels: list[str], sample_weight: np.ndarray | None
) -> tuple[list[FitJob], list[tuple[np.ndarray, np.ndarray, str]]]:
    """The fits and test rows of :func:`held_out_corpus_predictions` (none with fewer than two corpora)."""
    corpus = np.asarray([corpus_of(sp) for sp in table.speakers], dtype=object)
    names = sorted(set(corpus))
    if len(names) < 2 or any(sp is None for sp in table.speakers):
        return [], []
    y_idx = encode_labels(table.labels, labels)
    has_aug = augmented is not None and len(augmented.labels) > 0
    aug_corpus = (
        np.asarray([corpus_of(sp) for sp in augmented.speakers], dtype=object) if has_aug else np.zeros(0, object)
    )  # type: ignore[union-attr]
    aug_y = encode_labels(augmented.labels, labels) if has_aug else np.zeros(0, np.int64)  # type: ignore[union-attr]
    aug_w = copy_weights(sample_weight, table, augmented)
    jobs: list[FitJob] = []
    tests: list[tuple[np.ndarray, np.ndarray, str]] = []
    for c in names:
        tr = np.flatnonzero(corpus != c)
        known = np.unique(y_idx[tr])
        Xtr, ytr = table.X[tr], y_idx[tr]
        w = _weights(sample_weight, tr)
        Xte = table.X[(corpus == c) & np.isin(y_idx, known)]
        yte = y_idx[(corpus == c) & np.isin(y_idx, known)]
        if has_aug:
            use = aug_corpus != c
            Xtr = np.vstack([Xtr, augmented.X[use]])  # type: ignore[union-attr]
            ytr = np.concatenate([ytr, aug_y[use]])
            w = _weights(sample_weight, tr, int(use.sum()), None if aug_w is None else aug_w[use])
            te_a = (aug_corpus == c) & np.isin(aug_y, known)
            Xte = np.vstack([Xte, augmented.X[te_a]])  # type: ignore[union-attr]
            yte = np.concatenate([yte, aug_y[te_a]])
        if len(np.unique(ytr)) < 2 or not len(yte):
            continue
        jobs.append((Xtr, ytr, w))
        tests.append((Xte, yte, f"corpus:{c}"))
    return jobs, tests


def public_metrics(report: dict[str, Any] | None) -> dict[str, Any]:
    """A :func:`cross_validate` report without its per-row out-of-fold entries (:data:`OOF_KEYS`)."""
    return {k: v for k, v in (report or {}).items() if k not in OOF_KEYS}


def class_proba(model: Pipeline, X: np.ndarray, n_labels: int) -> np.ndarray:
    """``predict_proba`` over all ``n_labels`` classes (a class missing from a fold's training part gets 0).

    Args:
        model: a fitted pipeline whose ``classes_`` are label indices.
        X: features ``(n, n_features)``.
        n_labels: number of labels of the label order the indices refer to.

    Returns:
        float64 ``(n, n_labels)``, column ``k`` the probability of label ``k``.
    """
    p = model.predict_proba(X)
    out = np.zeros((X.shape[0], n_labels))
    out[:, np.asarray(model.classes_, dtype=int)] = p
    return out


def _calibration(
    proba: np.ndarray,
    y_idx: np.ndarray,
    scores: np.ndarray,
    held_out: dict[str, np.ndarray] | None = None,
    cap: float | None = None,
) -> tuple[DistanceTemperature, float, dict[str, Any]]:
    """Temperature model, low-confidence threshold and a calibration summary from out-of-fold predictions.

    ``held_out`` of :func:`held_out_channel_predictions` joins the distance-aware temperature fit. Held-out
    *corpora* (:func:`held_out_corpus_predictions`, several training corpora) replace it: the temperature is
    then one plain temperature fitted on those files alone, each predicted by a model that never heard
    its corpus, because a deployed model meets recordings of a new corpus, not new speakers of its
    training corpora. Leave-one-corpus-out (``benchmarks/results/calibration_loco.md``), the mean
    calibrated confidence on the left-out corpus was off its WA by +0.23 / -0.23 / +0.23 (RAVDESS /
    TESS / nEMO left out) with out-of-fold and held-out files mixed in a distance-aware fit (the
    out-of-domain score does not say how well a new corpus is labelled: TESS, flagged out of domain on
    every file, is the best labelled), by +0.07 / -0.23 / +0.05 this way: never over-confident by more
    than 0.07, and under-confident where it errs. Out-of-fold files of the training corpora are then
    under-confident (their summary says so). The
    threshold, ECE and reliability are of the out-of-fold files (``proba``). ``cap``: a given
    :attr:`DistanceTemperature.s_max` (else fitted)."""
    plain = fit_temperature(proba, y_idx)
    corpora = held_out if held_out is not None and any(str(k).startswith("corpus:") for k in held_out["kind"]) else None
    if corpora is not None:
        temp = DistanceTemperature(t0=fit_temperature(corpora["proba"], corpora["y"]))
    elif held_out is not None and len(held_out["y"]):
        temp = fit_distance_temperature(
            np.vstack([proba, held_out["proba"]]),
            np.concatenate([y_idx, held_out["y"]]),
            np.concatenate([scores, held_out["ood_scores"]]),
        )
    else:
        temp = fit_distance_temperature(proba, y_idx, scores, cap=cap)
    cal = apply_temperature(proba, temp.temperatures(scores, len(y_idx)))
    correct = cal.argmax(axis=1) == y_idx
    thr = low_confidence_threshold(cal.max(axis=1), correct)
    low = cal.max(axis=1) < thr
    summary = {
        "method": "temperature scaling (Guo et al. 2017) fitted on files of held-out corpora, each predicted by "
        "a model of the other corpora: calibrated for a corpus the model never heard (out-of-fold files of the "
        "training corpora come out under-confident)"
        if corpora is not None
        else "distance-aware temperature scaling T(s) = t0 * (1 + growth * min(max(0, s - ref), "
        "s_max - ref) ** power) (Guo et al. 2017; Tomani et al. 2023), power and cap s_max fitted"
        + (" on out-of-fold files and copies through held-out kinds of channel" if held_out is not None else ""),
        "n_held_out_channel": int(len(held_out["y"])) if held_out is not None else 0,
        "temperature": temp.to_dict(),
        "plain_temperature": plain,
        "n": int(len(y_idx)),
        "wa": float(correct.mean()),
        "ece_before": expected_calibration_error(proba, y_idx),
        "ece_after": expected_calibration_error(cal, y_idx),
        "ece_plain_temperature": expected_calibration_error(apply_temperature(proba, plain), y_idx),
        "mean_confidence_before": float(proba.max(axis=1).mean()),
        "mean_confidence_after": float(cal.max(axis=1).mean()),
        "low_confidence_threshold": thr,
        "low_confidence_share": float(low.mean()),
        "wa_confident": float(correct[~low].mean()) if (~low).any() else None,
        "reliability_before": reliability_bins(proba, y_idx),
        "reliability_after": reliability_bins(cal, y_idx),
    }
    if corpora is not None:  # how the calibration does on the files it was fitted for
        h_cal = apply_temperature(corpora["proba"], temp.temperatures(None, len(corpora["y"])))
        summary["held_out_corpora"] = {
            "n": int(len(corpora["y"])),
            "wa": float(np.mean(h_cal.argmax(axis=1) == corpora["y"])),
            "mean_confidence_before": float(corpora["proba"].max(axis=1).mean()),
            "mean_confidence_after": float(h_cal.max(axis=1).mean()),
            "ece_after": expected_calibration_error(h_cal, corpora["y"]),
        }
    return temp, thr, summary


def fit_trust(
    table: FeatureTable,
    labels: Sequence[str],
    cv_report: dict[str, Any],
    speaker_cv_report: dict[str, Any] | None = None,
    batch_cv_report: dict[str, Any] | None = None,
    augmented: FeatureTable | None = None,
    held_out: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibration, low-confidence thresholds and the out-of-domain detector from cross-validation.

    Everything is fitted on *out-of-fold* predictions of speaker-independent cross-validation
    (:func:`cross_validate`), i.e. on files of speakers the fold's model never heard, which is how the
    deployed model meets new recordings: distance-aware temperature scaling
    (:class:`ser_model.trust.DistanceTemperature`; Guo et al. 2017, Tomani et al. 2023) per pipeline, the
    low-confidence threshold (:func:`ser_model.trust.low_confidence_threshold`) on the calibrated
    confidences, and the out-of-domain threshold as the :data:`ser_model.trust.OOD_PERCENTILE`
    percentile of the out-of-fold detector scores. The detector itself is then fitted on all of
    ``table``.

    Args:
        table: the training features.
        labels: label order of the bundle.
        cv_report: global :func:`cross_validate` report (with ``proba`` and ``ood_scores``).
        speaker_cv_report: speaker-adaptive report, or None.
        batch_cv_report: batch-normalised report (:func:`cross_validate_batch`), or None.
        augmented: the degraded training copies (:func:`condition_table`) the reports were run
            with: their out-of-fold predictions (``aug_proba``) join the calibration, so confidence
            is fitted on clean *and* degraded recordings of unseen speakers, and the out-of-domain
            detector is fitted on clean and degraded rows (its threshold the percentile of both
            out-of-fold scores): a degraded recording like those of training is not out of domain.
        held_out: :func:`held_out_channel_predictions` (global pipeline): copies through a kind of
            channel their model and detector never saw join the global temperature fit, so the
            temperature's growth and cap (:class:`ser_model.trust.DistanceTemperature`) are fitted on
            files as far from the training data as another corpus is; the other pipelines keep their
            own ``t0`` and ``growth`` under the global pipeline's cap. Without it every cap is fitted
            on the out-of-fold files alone. :func:`held_out_corpus_predictions` (several training
            corpora) instead: the global temperature is one plain temperature fitted on those files
            alone (a new corpus is what a deployed model meets; see :func:`_calibration`).

    Returns:
        ``(trust, summary)``: ``trust`` for :attr:`ser_model.model.ModelBundle.trust`; ``summary``
        for ``meta["metrics"]["trust"]`` (``calibration`` per mode with ECE before/after, reliability
        bins and thresholds; ``ood`` with the threshold and the out-of-fold out-of-domain share;
        ``train_prior``), which the model registry shows without unpickling the bundle.

    Raises:
        ValueError: ``cv_report`` has no out-of-fold probabilities.
    """

    y_idx = encode_labels(table.labels, labels)
    n_aug = len(augmented.labels) if augmented is not None else 0
    X_all = table.X if not n_aug else np.vstack([table.X, augmented.X])  # type: ignore[union-attr]
    y_all = y_idx if not n_aug else np.concatenate([y_idx, encode_labels(augmented.labels, labels)])  # type: ignore[union-attr]
    det = fit_ood(X_all)
    oof_scores = np.asarray(cv_report.get("ood_scores", np.full(len(y_idx), np.nan)), dtype=np.float64)
    aug_scores = np.asarray(cv_report.get("aug_ood_scores", np.full(n_aug, np.nan)), dtype=np.float64)
    if aug_scores.shape != (n_aug,):
        aug_scores = np.full(n_aug, np.nan)
    oof_scores = np.concatenate([oof_scores, aug_scores])
    missing = np.isnan(oof_scores)
    if missing[: len(y_idx)].all():  # no out-of-fold scores: fall back to the training rows' own scores
        oof_scores, missing = det.score(X_all), np.zeros(len(y_all), dtype=bool)
    det.threshold = fit_ood_threshold(oof_scores[~missing])
    temps: dict[str, dict[str, float]] = {}
    thresholds: dict[str, float] = {}
    calibration: dict[str, Any] = {}
    for mode, rep in ((MODE_GLOBAL, cv_report), (MODE_SPEAKER, speaker_cv_report), (MODE_BATCH, batch_cv_report)):
        if rep is None or rep.get("proba") is None:
            continue
        proba = np.asarray(rep["proba"], dtype=np.float64)
        aug_p = np.asarray(rep.get("aug_proba", np.full((n_aug, proba.shape[1]), np.nan)), dtype=np.float64)
        if aug_p.shape != (n_aug, proba.shape[1]):
            aug_p = np.full((n_aug, proba.shape[1]), np.nan)
        proba = np.vstack([proba, aug_p])
        use = ~np.isnan(proba).any(axis=1) & ~missing
        if not use.any():
            continue
        cap = temps[MODE_GLOBAL].get("s_max") if mode != MODE_GLOBAL and held_out is not None else None
        temp, thresholds[mode], calibration[mode] = _calibration(
            proba[use], y_all[use], oof_scores[use], held_out if mode == MODE_GLOBAL else None, cap
        )
        calibration[mode]["n_degraded"] = int(use[len(y_idx) :].sum())
        temps[mode] = temp.to_dict()
    if MODE_GLOBAL not in temps:
        raise ValueError("the cross-validation report has no out-of-fold probabilities")
    trust = {
        "temperature": temps,
        "low_confidence_threshold": thresholds,
        "ood": det.to_dict(),
        "train_prior": label_prior(table.labels, labels),
    }
    summary = {
        "calibration": calibration,
        "ood": {
            "method": "Mahalanobis in PCA space of standardised features + residual",
            "n_components": int(det.components.shape[0]),
            "percentile": OOD_PERCENTILE,
            "threshold": det.threshold,
            "oof_out_of_domain_share": float(np.mean(oof_scores[~missing] > det.threshold)),
        },
        "train_prior": trust["train_prior"],
    }
    return trust, summary


def _slim(pipeline: Pipeline) -> Pipeline:
    """Drop the fitted MLP's training state (Adam moments, best-loss weight copies) to keep bundles small.

    None of it is used by prediction; a slimmed model cannot be refitted with ``warm_start``.
    """
    mlp = pipeline.named_steps.get("mlp")
    for attr in ("_optimizer", "_best_coefs", "_best_intercepts"):
        if mlp is not None and hasattr(mlp, attr):
            setattr(mlp, attr, None)
    return pipeline


Report = dict[str, Any] | Future[dict[str, Any]]
"""A cross-validation report, or the future of one still being computed in another thread."""


def _report(r: Any) -> dict[str, Any] | None:
    """The report itself (waiting for a future one)."""
    return r.result() if isinstance(r, Future) else r


def pipeline_rows(
    table: FeatureTable,
    augmented: FeatureTable | None,
    labels: Sequence[str],
    sample_weight: np.ndarray | None = None,
    *,
    speaker_adaptive: bool = True,
    batch_normalised: bool = False,
    by_corpus: bool = False,
    min_speaker_files: int = MIN_SPEAKER_FILES,
) -> tuple[dict[str, FitJob], dict[str, Any]]:
    """The training rows of each pipeline of a bundle, as :func:`train_bundle` fits them.

    - global (:data:`MODE_GLOBAL`): the files of ``table`` and their copies ``augmented``, as they are;
    - speaker-adaptive (:data:`MODE_SPEAKER`, with ``speaker_adaptive``): the rows of the speakers
      with at least ``min_speaker_files`` clean files, each z-normalised by its speaker's statistics
      over the clean files (:func:`ser_model.speaker.speaker_statistics`; copies by their source
      speaker's); left out when fewer than two such speakers or fewer than two labels among them;
    - batch-normalised (:data:`MODE_BATCH`, with ``batch_normalised``): every row z-normalised per
      :func:`batch_groups` group (per corpus with ``by_corpus``).

    Copies weigh what their file weighs (:func:`copy_weights`).

    Args:
        table: the clean training files, ``X`` ``(n, d)``.
        augmented: their degraded copies ``(m, d)``, or None.
        labels: the label order of the ``y`` indices.
        sample_weight: ``(n,)`` weights of ``table``'s rows, or None.

    Returns:
        ``({mode: (X, y, w)}, speaker statistics)``: in the order global, speaker-adaptive,
        batch-normalised; ``y`` label indices, ``w`` None without ``sample_weight``.
    """
    y_idx = encode_labels(table.labels, labels)
    has_copies = augmented is not None and len(augmented.labels) > 0
    X, y = table.X, y_idx
    if has_copies:
        X = np.vstack([X, augmented.X])
        y = np.concatenate([y, encode_labels(augmented.labels, labels)])
    all_rows = np.arange(len(y_idx))
    aug_w = copy_weights(sample_weight, table, augmented)
    rows: dict[str, FitJob] = {MODE_GLOBAL: (X, y, _weights(sample_weight, all_rows, len(y) - len(y_idx), aug_w))}
    stats: dict[str, Any] = {}
    if speaker_adaptive:
        stats = speaker_statistics(table.X, table.speakers, min_files=min_speaker_files)
        Z, adapted = apply_speaker_stats(table.X, table.speakers, stats)
        Zs, ys, ws = Z[adapted], y_idx[adapted], _weights(sample_weight, all_rows[adapted])
        if has_copies:
            Za, ad_a = apply_speaker_stats(augmented.X, augmented.speakers, stats)
            Zs = np.vstack([Zs, Za[ad_a]])
            ys = np.concatenate([ys, encode_labels(augmented.labels, labels)[ad_a]])
            ws = (
                None
                if ws is None
                else np.concatenate([ws, aug_w[ad_a] if aug_w is not None else np.ones(int(ad_a.sum()))])
            )
        if len(stats) >= 2 and len(np.unique(ys)) >= 2:
            rows[MODE_SPEAKER] = (Zs, ys, ws)
    if batch_normalised:
        groups = batch_groups(table.paths, table.speakers, by_corpus) + (
            batch_groups(augmented.paths, augmented.speakers, by_corpus) if augmented is not None else []
        )
        rows[MODE_BATCH] = (_batch_rows(X, groups), y, rows[MODE_GLOBAL][2])
    return rows, stats


def train_bundle(
    table: FeatureTable,
    *,
    labels: Sequence[str] | None = None,
    cv_report: Report | None = None,
    params: dict[str, Any] | None = None,
    name: str = "model",
    dataset: str = "",
    speaker_adaptive: bool = True,
    min_speaker_files: int = MIN_SPEAKER_FILES,
    speaker_cv_report: Report | None = None,
    augmented: FeatureTable | None = None,
    sample_weight: np.ndarray | None = None,
    conditions: dict[str, Any] | None = None,
    batch_cv_report: Report | None = None,
    batch_normalised: bool | None = None,
    by_corpus: bool = False,
    held_out_calibration: bool = True,
    n_jobs: int | None = 1,
    dimension_head: bool = False,
) -> ModelBundle:
    """Fit the pipeline on all of ``table`` and wrap it in a :class:`ModelBundle`.

    Args:
        table: training features.
        labels: label order; default the sorted labels present.
        cv_report: cross-validation metrics to store in the bundle (``predictions`` dropped). This and
            the other two reports may be ``concurrent.futures.Future`` s of reports still being
            computed in other threads (``train`` fits its cross-validations and its final models at
            once, :func:`shared_fit_pool`): the final fits run first and the reports are awaited
            when the calibration needs them.
        params: :func:`ser_model.model.build_pipeline` arguments.
        name: short model name recorded in the metadata.
        dataset: description of the training data.
        speaker_adaptive: also fit ``speaker_pipeline`` on per-speaker z-normalised features of the
            speakers with at least ``min_speaker_files`` files (skipped when fewer than two such
            speakers or fewer than two labels among their files).
        min_speaker_files: stored in ``meta["min_speaker_files"]`` and used for the training speakers.
        speaker_cv_report: speaker-adaptive cross-validation metrics for ``meta["speaker_metrics"]``.
            With ``cv_report`` (and this), their out-of-fold probabilities and scores also fit the
            bundle's calibration and out-of-domain detector (:func:`fit_trust`).
        augmented: extra training rows from :func:`augment_table` (normalised by their source
            speaker's statistics for the speaker-adaptive pipeline). When they are
            :func:`condition_table` copies and ``cv_report`` is given, the global calibration is also
            fitted on :func:`held_out_channel_predictions` (one more model per fold and kind of
            channel: 30 for 5 folds and the 6 kinds, about as long again as the cross-validation).
        sample_weight: per-row weights of ``table``, shape ``(n,)`` (augmented copies weigh 1).
        conditions: the multi-condition training recorded in ``meta["conditions"]`` (copies per
            file, seed, the kinds of channel), or None.
        batch_cv_report: when given (:func:`cross_validate_batch`), a batch-normalised pipeline is
            fitted too (rows normalised per :func:`channel_groups` group), its metrics stored in
            ``meta["batch_metrics"]`` and its calibration fitted.
        batch_normalised: fit the batch-normalised pipeline; default: when ``batch_cv_report`` is given.
        by_corpus: normalise each training corpus by its own statistics for that pipeline
            (:func:`batch_groups`).
        held_out_calibration: fit the global calibration on held-out predictions too: with several
            corpora (``by_corpus``) :func:`held_out_corpus_predictions` (one fit per corpus), else with
            condition copies :func:`held_out_channel_predictions` (30 more fits); False skips them
            (``train --cv quick``).
        n_jobs: processes for the fits (:func:`fit_pipelines`); the bundle is the same for any number.
        dimension_head: also fit the arousal/valence heads (:func:`fit_dimension_head`), one on the
            rows and weights of each pipeline (global, speaker-adaptive, batch-normalised), when every
            label has a position and both sides of each dimension are present; otherwise the bundle
            maps its category probabilities (:meth:`ser_model.model.ModelBundle.dimensions`). False
            here; ``ser-batch train`` (:class:`worker.training.TrainRequest`) turns it on by default.

    Returns:
        The fitted bundle; ``meta`` holds metrics, data fingerprint, params, versions, the feature
        count, the training conditions and, for the accurate feature set, the encoder
        (``meta["encoder"]``: name, SHA-256 of ``model.bin``, embedding size).

    Raises:
        ValueError: ``table`` is empty.
    """
    if len(table.labels) == 0:
        raise ValueError("no usable training files")
    labels = list(labels) if labels else sorted(set(table.labels))
    if batch_normalised is None:
        batch_normalised = batch_cv_report is not None
    rows, stats = pipeline_rows(
        table,
        augmented,
        labels,
        sample_weight,
        speaker_adaptive=speaker_adaptive,
        batch_normalised=batch_normalised,
        by_corpus=by_corpus,
        min_speaker_files=min_speaker_files,
    )
    jobs: list[FitJob] = list(rows.values())  # global, then speaker-adaptive, then batch-normalised
    index = {mode: i for i, mode in enumerate(rows)}
    speaker_job, batch_job = index.get(MODE_SPEAKER), index.get(MODE_BATCH)
    from ser_model.dimensions import has_positions

    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [(_fit_one, (dict(params or {}), *j)) for j in jobs]
    head_calls: dict[str, int] = {}  # mode -> index in calls: a head on the rows of each pipeline
    if dimension_head and has_positions(labels):
        for mode, job in ((MODE_GLOBAL, 0), (MODE_SPEAKER, speaker_job), (MODE_BATCH, batch_job)):
            if job is not None:
                head_calls[mode] = len(calls)
                Xj, yj, wj = jobs[job]
                calls.append((_fit_head, (Xj, [labels[i] for i in yj], wj)))
    held_out_jobs: list[FitJob] | None = None
    if held_out_calibration and by_corpus and cv_report is not None:  # their fits queue with the final ones
        held_out_jobs, held_out_tests = _held_out_corpus_jobs(table, augmented, labels, sample_weight)
        first_held_out = len(calls)
        calls += [(_fit_one, (dict(params or {}), *j)) for j in held_out_jobs]
    fitted = parallel_calls(calls, n_jobs=n_jobs)
    cv_report, speaker_cv_report = _report(cv_report), _report(speaker_cv_report)
    batch_cv_report = _report(batch_cv_report)
    pipeline = _slim(fitted[0])
    speaker_pipeline = _slim(fitted[speaker_job]) if speaker_job is not None else None
    batch_weights = None
    if batch_job is not None:
        from ser_model.inference import MLPWeights

        batch_weights = MLPWeights.from_pipeline(fitted[batch_job])
    metrics = public_metrics(cv_report)
    trust: dict[str, Any] = {}
    if cv_report is not None and cv_report.get("proba") is not None:
        held_out = None
        if held_out_jobs is not None:  # held_out_corpus_predictions, fitted with the final models
            held_out = _held_out_results(labels, held_out_jobs, held_out_tests, fitted[first_held_out:])
        elif held_out_calibration and augmented is not None and any("#cond" in p for p in augmented.paths):
            held_out = held_out_channel_predictions(
                table,
                augmented,
                labels=labels,
                n_splits=int(cv_report.get("n_splits", 5)),
                params=params,
                sample_weight=sample_weight,
                n_jobs=n_jobs,
            )
        trust, metrics["trust"] = fit_trust(
            table, labels, cv_report, speaker_cv_report, batch_cv_report, augmented=augmented, held_out=held_out
        )
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
        augmentations=sorted({p.rsplit("#", 1)[1] for p in augmented.paths if "#cond" not in p}) if augmented else [],
        conditions=conditions or {"copies": 0},
        n_features=int(table.X.shape[1]),
    )
    encoder = _encoder_for(table.feature_version)
    if encoder is not None:
        meta["encoder"] = encoder.info.to_dict()
    if speaker_pipeline is not None:
        meta.update(
            min_speaker_files=min_speaker_files,
            speaker_metrics=public_metrics(speaker_cv_report),
            n_speakers_adapted=len(stats),
        )
    if batch_weights is not None:
        meta.update(
            batch_metrics=public_metrics(batch_cv_report) if batch_cv_report is not None else {},
            min_batch_files=MIN_BATCH_FILES,
            batch_by_corpus=by_corpus,
        )
    bundle = ModelBundle(
        pipeline=pipeline,
        labels=labels,
        feature_version=table.feature_version,
        meta=meta,
        speaker_pipeline=speaker_pipeline,
        trust=trust,
    )
    if batch_weights is not None:
        bundle.weights[MODE_BATCH] = batch_weights
    heads = {mode: fitted[i] for mode, i in head_calls.items() if fitted[i] is not None}
    if MODE_GLOBAL in heads:
        bundle.dimension_head = heads.pop(MODE_GLOBAL)
        bundle.dimension_heads = heads
        meta["dimensions"] = {
            "source": "mean of the trained dimension head and the category probabilities weighted by "
            "ser_model.dimensions.CATEGORY_POSITIONS",
            "modes": sorted([MODE_GLOBAL, *heads]),
            **(bundle.dimension_head.meta or {}),
        }
    else:
        meta["dimensions"] = {"source": "category probabilities weighted by ser_model.dimensions.CATEGORY_POSITIONS"}
    return bundle
