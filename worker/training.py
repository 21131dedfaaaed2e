"""Training and evaluation jobs: the code path of local `ser-batch train` and of the ``ser.train`` task.

A training job extracts features (reusing cached vectors for the same file content and feature
version), cross-validates (grouped by speaker when speakers are known), fits the final model, writes
the bundle and its report (metrics JSON, confusion-matrix PNG, loss-curve PNG), stores the bundle in
the ``models`` table so every worker can load it, and optionally activates it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from worker.settings import Settings, get_settings
from worker.storage.db import ModelVersion, get_engine

CV_MODES = ("full", "quick", "none")
"""``train --cv``: how much cross-validation a training run pays for (see :class:`TrainRequest`)."""

BALANCE_RULES = ("speakers", "files", "none")
"""``train --balance``: how corpora are weighted against each other (:func:`corpus_balance_weights`)."""

BALANCED_KINDS = frozenset({"ravdess", "tess", "nemo"})
"""Source kinds that are corpora: balanced against each other by :func:`corpus_balance_weights`."""

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` with stage ``"features"``, ``"cross-validation"`` or ``"final model"``."""


@dataclass
class TrainRequest:
    """What to train on; JSON-serialisable so it can travel as a task argument.

    Attributes:
        data: folders (or CSV manifests for ``dataset="csv"``), as paths the trainer can open; an
            entry ``KIND:PATH`` is read as that kind (several kinds in one run, see
            :func:`ser_model.datasets.parse_sources`).
        dataset: ``ravdess``, ``tess``, ``folders`` or ``csv``: the kind of entries without ``KIND:``.
        emotions: label subset, or None for every label present.
        folds: cross-validation folds.
        activate: make the new model active when done.
        register: store the model in the database registry.
        output: bundle path; default ``<model_dir>/<name>-<UTC stamp>.npz``.
        report: report folder; default next to the bundle.
        workers: feature-extraction processes; default the settings' ``workers``.
        weights: training weight per source kind or ``KIND:PATH`` (``{"csv": 3.0}``), default 1.
        features: feature set, ``accurate`` (hand-crafted + Whisper encoder, the default) or
            ``fast`` (hand-crafted only); see :mod:`ser_model.featureset`.
        conditions: degraded copies per training file for multi-condition training
            (:func:`ser_model.training.condition_table`); 0 trains on the clean files only.
        seed: seed of the degraded copies.
        babble: folder of recordings of other voices (e.g. LibriSpeech) the degraded copies draw
            their babble from; None: other training speakers of the same fold group.
        cv: ``full`` (global, speaker-adaptive and batch-normalised cross-validation, and the
            calibration on held-out corpora or, with one corpus, held-out channels), ``quick`` (the default) (the global cross-validation only: WA, UAR,
            macro-F1 grouped by speaker and the calibration from its out-of-fold predictions) or
            ``none`` (no cross-validation: the final model only, without calibration or trust flags).
            The final model is always fitted on all the data.
        balance: how the named corpora (ravdess, tess, nemo sources) are weighted against each other
            (:func:`corpus_balance_weights`; multiplied by ``weights``): ``speakers`` (the default: each
            corpus in proportion to its number of speakers, whatever its number of files), ``files``
            (each corpus the same total weight) or ``none`` (every file 1).
        dimension_head: fit the arousal/valence heads beside the category model
            (:func:`ser_model.training.fit_dimension_head`; the default: leave-one-corpus-out the mean
            of head and mapping beat the mapping, ``benchmarks/results/dimensions.md``); False: the
            bundle maps its category probabilities onto the dimensions.
    """

    data: list[str]
    dataset: str = "ravdess"
    emotions: list[str] | None = None
    folds: int = 5
    activate: bool = False
    register: bool = True
    output: str | None = None
    report: str | None = None
    workers: int | None = None
    weights: dict[str, float] | None = None
    features: str = "accurate"
    conditions: int = 3
    seed: int = 0
    babble: str | None = None
    cv: str = "quick"
    balance: str = "speakers"
    dimension_head: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainOutcome:
    """Result of a training job (JSON-serialisable)."""

    version: str | None
    bundle_path: str
    sha256: str
    report_files: dict[str, str]
    metrics: dict[str, Any]
    n_files: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each stage (features, degraded copies, each cross-validation, final model, report)."""


def ordered_labels(present: set[str], wanted: Sequence[str] | None) -> list[str]:
    """The label order of a model: the user's order, else RAVDESS order, then other labels sorted."""
    from ser_model.labels import EMOTIONS

    if wanted:
        return list(wanted)
    return [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))


def run_training(
    req: TrainRequest,
    *,
    settings: Settings | None = None,
    progress: StageProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainOutcome:
    """Run one training job end to end.

    Args:
        req: what to train on.
        settings: settings in force (database, caches, model dir).
        progress: stage progress callback.
        log: receives one-line messages (skipped files, ...).

    Returns:
        The registered version (None when ``register`` is false), bundle path and SHA-256,
        report files and the cross-validation metrics.

    Raises:
        ser_model.datasets.DatasetError: the data cannot be read as ``req.dataset``.
        ValueError: cross-validation impossible (too few speakers or examples per label).
    """
    from ser_model.datasets import DatasetError, group_unknown_speakers, load_sources, parse_sources
    from ser_model.featureset import FEATURE_SETS
    from ser_model.model import save_bundle
    from ser_model.report import write_report
    from ser_model.training import (
        check_cross_validation,
        condition_table,
        cross_validate,
        cross_validate_batch,
        extract_table,
        public_metrics,
        shared_fit_pool,
        train_bundle,
        training_params,
    )

    s = settings or get_settings()
    if req.features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {req.features!r}; choose from {', '.join(FEATURE_SETS)}")
    if req.conditions < 0:
        raise ValueError("--conditions must be 0 or more degraded copies per file")
    if req.cv not in CV_MODES:
        raise ValueError(f"unknown --cv {req.cv!r}; choose from {', '.join(CV_MODES)}")
    sources = parse_sources(req.data, req.dataset)
    files, source_of = load_sources(sources, emotions=req.emotions)
    multi = len({src.name for src in sources}) > 1
    n_per_file = 0
    if multi:
        files, n_per_file = group_unknown_speakers(files)
    labels = ordered_labels({f.label for f in files}, req.emotions)
    if log:
        log(f"{len(files)} labelled file(s), labels: {', '.join(labels)}")
        if n_per_file:
            log(f"{n_per_file} file(s) without a speaker: each is its own group in cross-validation")

    import time

    t_start = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    def bar(name: str) -> Callable[[int, int], None]:
        return lambda d, n: progress(name, d, n) if progress else None

    def stage(name: str) -> Callable[[int, int], None]:  # a stage timed on its own, with its bar
        mark(name)
        return bar(name)

    n_jobs = req.workers or s.workers
    table = extract_table(
        files,
        n_jobs=n_jobs,
        cache_dir=s.feature_cache_dir,
        progress=stage("features"),
        feature_version=FEATURE_SETS[req.features],
    )
    for path, reason in table.failed:
        if log:
            log(f"skipped {path}: {reason}")
    degraded = None
    babble_files = None
    if req.babble:
        from ser_model.datasets import iter_audio_files

        babble_files = [str(p) for p in iter_audio_files(Path(req.babble))]
        if not babble_files:
            raise DatasetError(f"--babble {req.babble}: no audio files there")
    if req.conditions:
        degraded = condition_table(
            table,
            req.conditions,
            seed=req.seed,
            n_splits=req.folds,
            n_jobs=n_jobs,
            progress=stage("degraded copies"),
            babble_files=babble_files,
            cache_dir=s.feature_cache_dir,
        )
        if log and degraded.failed:
            log(f"{len(degraded.failed)} degraded cop(y/ies) could not be used (e.g. {degraded.failed[0][1]})")
    conditions = {
        "copies": req.conditions,
        "seed": req.seed,
        "kinds": "coloured noise 0-30 dB, babble 0-25 dB, telephone (mu-law, A-law, GSM 06.10), "
        "simulated rooms RT60 0.2-1.0 s, MP3/Opus, clipping, combinations",
        "babble": "other voices: " + os.path.basename(os.path.normpath(req.babble))
        if req.babble
        else "other training speakers of the same fold group",
    }
    weights = None
    if req.weights:
        weights = source_weights(table.paths, source_of, req.weights)
    corpora = sorted({src.kind for src in sources if src.kind in BALANCED_KINDS})
    balance = {True: "speakers", False: "none"}.get(req.balance, req.balance)  # type: ignore[call-overload]
    if balance not in BALANCE_RULES:
        raise ValueError(f"unknown --balance {req.balance!r}; choose from {', '.join(BALANCE_RULES)}")
    if balance != "none" and len({src.name for src in sources if src.kind in BALANCED_KINDS}) > 1:
        bal = corpus_balance_weights(table.paths, source_of, table.speakers if balance == "speakers" else None)
        weights = bal if weights is None else weights * bal
    by_corpus = len(corpora) > 1
    multi_params = training_params(len(table.labels) * (1 + req.conditions))
    if req.cv != "none":
        check_cross_validation(table, req.folds)  # its errors now, not after minutes of other fits
    full = req.cv == "full" and _speaker_adaptive_possible(table.speakers)  # both need known speakers
    # what the three cross-validations share: the same folds over the same rows, weights and copies
    folds: dict[str, Any] = {
        "labels": labels,
        "n_splits": req.folds,
        "sample_weight": weights,
        "augmented": degraded,
        "params": multi_params,
        "n_jobs": n_jobs,
    }

    def global_cv() -> dict[str, Any]:
        cv = cross_validate(table, progress=bar("cross-validation (fits)"), **folds)
        if n_per_file:
            cv["protocol"] += f"; {n_per_file} file(s) without a speaker grouped one per file (speaker-dependent)"
        if multi:
            cv["per_source"] = per_source_metrics(cv, table, source_of, labels, req.weights or {})
        return cv

    if log and req.cv != "full":
        log(
            f"--cv {req.cv}: skipped "
            + (
                "the speaker-adaptive and batch-normalised cross-validation and the leave-one-channel-out "
                "calibration (their modes are fitted, not measured or calibrated)"
                if req.cv == "quick"
                else "all cross-validation: no metrics, no calibration, no trust flags"
            )
        )
    kinds = sorted({src.kind for src in sources})
    name = f"{'+'.join(kinds)}{len(labels)}"
    # The cross-validations and the final model run at once, each in a thread, their fits queued in
    # one process pool (ser_model.training.shared_fit_pool): no core idles at the end of a stage.
    # Every fit gives the same weights wherever it runs, so the bundle is the one the stages give
    # one after the other.
    mark("cross-validation and final model (fits)")
    if progress:
        progress("final model", 0, 1)
    stage_threads = 4 if (n_jobs or os.cpu_count() or 1) > 1 else 1  # one process: one stage after the other
    with ThreadPoolExecutor(stage_threads, thread_name_prefix="train") as threads, shared_fit_pool(n_jobs):
        cv_f = threads.submit(global_cv) if req.cv != "none" else None
        speaker_f = batch_f = None
        if full:
            speaker_f = threads.submit(
                cross_validate,
                table,
                speaker_adaptive=True,
                progress=bar("speaker-adaptive cross-validation (fits)"),
                **folds,
            )
            batch_f = threads.submit(
                cross_validate_batch,
                table,
                by_corpus=by_corpus,
                progress=bar("batch-normalised cross-validation (fits)"),
                **folds,
            )
        bundle_f = threads.submit(
            train_bundle,
            table,
            labels=labels,
            cv_report=cv_f,
            speaker_cv_report=speaker_f,
            name=name,
            dataset=f"{'+'.join(kinds)}: {', '.join(req.data)}",
            sample_weight=weights,
            augmented=degraded,
            conditions=conditions if req.conditions else None,
            batch_cv_report=batch_f,
            params=multi_params,
            batch_normalised=_speaker_adaptive_possible(table.speakers),
            by_corpus=by_corpus,
            held_out_calibration=req.cv == "full",
            n_jobs=n_jobs,
            dimension_head=req.dimension_head,
        )
        cv = cv_f.result() if cv_f is not None else None
        speaker_cv = speaker_f.result() if speaker_f is not None else None
        batch_cv = batch_f.result() if batch_f is not None else None
        bundle = bundle_f.result()
    bundle.meta.update(cv_mode=req.cv, corpora=corpora, balance=balance if by_corpus else "none")
    if progress:
        progress("final model", 1, 1)
    mark("report and registry")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(req.output) if req.output else Path(s.model_dir) / f"{name}-{stamp}.npz"
    digest = save_bundle(bundle, out)
    rep_dir = Path(req.report) if req.report else out.with_name(out.stem + "-report")
    written = write_report(
        rep_dir,
        cv,
        bundle.meta["loss_curve"],
        title=f"{name}: {cv['protocol'] if cv else 'no cross-validation'}",
        calibration=(bundle.meta["metrics"].get("trust") or {}).get("calibration"),
    )
    if speaker_cv is not None:
        from ser_model.report import plot_confusion

        sa = public_metrics(speaker_cv)
        (rep_dir / "metrics_speaker_adaptive.json").write_text(json.dumps(sa, indent=2) + "\n")
        written["confusion_speaker_adaptive"] = plot_confusion(
            speaker_cv, rep_dir / "confusion_matrix_speaker_adaptive.png", title=f"{name}: {speaker_cv['protocol']}"
        )
    version = None
    if req.register:
        version = register_bundle(out, digest, bundle, f"{name}-{stamp}", activate=req.activate, url=s.database_url)
    metrics = public_metrics(cv)
    if speaker_cv is not None:
        metrics["speaker_adaptive"] = public_metrics(speaker_cv)
    if batch_cv is not None:
        metrics["batch_normalised"] = public_metrics(batch_cv)
    if "trust" in bundle.meta["metrics"]:
        metrics["trust"] = bundle.meta["metrics"]["trust"]
    mark("end")
    ends = [t for _, t in marks[1:]]
    timings = {name: round(t1 - t0, 1) for (name, t0), t1 in zip(marks, ends, strict=False)}
    timings["total"] = round(time.perf_counter() - t_start, 1)
    return TrainOutcome(
        timings_s=timings,
        version=version,
        bundle_path=str(out),
        sha256=digest,
        report_files={k: str(v) for k, v in written.items()},
        metrics=metrics,
        n_files=len(table.labels),
        skipped=list(table.failed),
        labels=labels,
    )


def corpus_balance_weights(
    paths: Sequence[str], source_of: dict[str, str], speakers: Sequence[str | None] | None = None
) -> Any:
    """Per-row weights that give every corpus source the same total weight, whatever its size.

    The rule: a file of a corpus source (a kind of :data:`BALANCED_KINDS`) with ``n_s`` files, among
    ``S`` such sources holding ``N`` files together, weighs ``N / (S * n_s)``; the weights of those
    files then sum to ``N / S`` per corpus (TESS' 2,800 files weigh as much together as RAVDESS'
    1,200 or nEMO's 1,120) and average 1. Files of other sources (``csv``, ``folders``: a user's own
    recordings) weigh 1, and ``--weight`` multiplies on top. Degraded copies weigh what their file
    weighs (:func:`ser_model.training.copy_weights`).

    With ``speakers`` (one key per row) a corpus' total weight is instead proportional to its number
    of speakers: ``N * k_s / (K * n_s)`` per file for a corpus of ``k_s`` of the ``K`` speakers (a
    corpus of two voices, however many files, counts as two voices).

    Returns:
        numpy ``(n,)`` float64.
    """
    from collections import Counter

    import numpy as np

    kind = {src: src.split(":", 1)[0] for src in set(source_of.values())}
    counts = Counter(source_of.get(p, "") for p in paths if kind.get(source_of.get(p, ""), "") in BALANCED_KINDS)
    total = sum(counts.values())
    share = {src: 1.0 / len(counts) for src in counts}
    if speakers is not None:
        voices: dict[str, set[str | None]] = {src: set() for src in counts}
        for p, spk in zip(paths, speakers, strict=True):
            if source_of.get(p, "") in counts:
                voices[source_of[p]].add(spk)
        k_total = sum(len(v) for v in voices.values())
        share = {src: len(v) / k_total for src, v in voices.items()}
    return np.asarray(
        [total * share[source_of[p]] / counts[source_of[p]] if source_of.get(p, "") in counts else 1.0 for p in paths],
        dtype=np.float64,
    )


def _source_weight(source: str, weights: dict[str, float]) -> float:
    """The weight of a source named ``kind:path``: by its full name, else by its kind, else 1."""
    return float(weights.get(source, weights.get(source.split(":", 1)[0], 1.0)))


def source_weights(paths: Sequence[str], source_of: dict[str, str], weights: dict[str, float]) -> Any:
    """Per-row training weights (numpy, shape ``(n,)``) of a feature table from per-source weights."""
    import numpy as np

    return np.asarray([_source_weight(source_of.get(p, ""), weights) for p in paths], dtype=np.float64)


def per_source_metrics(
    cv: dict[str, Any], table: Any, source_of: dict[str, str], labels: Sequence[str], weights: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """WA, UAR, macro-F1, per-class recall and confusion of each source, from the out-of-fold predictions.

    Each row's prediction comes from the fold in which it was a test row, so these are the
    cross-validated numbers restricted to one source's files (e.g. the user's own recordings).

    Returns:
        ``{source name: classification_metrics + {"weight", "speakers"}}``; ``per_class_recall`` and
        ``macro_f1`` cover the labels present in that source, ``confusion`` the model's whole label set.
    """
    from sklearn.metrics import f1_score

    from ser_model.metrics import classification_metrics

    out: dict[str, dict[str, Any]] = {}
    pred = cv["predictions"]
    for src in sorted(set(source_of.values())):
        rows = [i for i, p in enumerate(table.paths) if source_of.get(p) == src and pred[i] is not None]
        if not rows:
            continue
        truth = [table.labels[i] for i in rows]
        m = classification_metrics(truth, [pred[i] for i in rows], labels)
        present = [lab for lab in labels if lab in set(truth)]
        m["per_class_recall"] = {k: v for k, v in m["per_class_recall"].items() if k in present}
        # macro-F1 over the labels this source has (absent labels would add F1 = 0 terms)
        m["macro_f1"] = float(
            f1_score(truth, [pred[i] for i in rows], labels=present, average="macro", zero_division=0)
        )
        unknown = any(str(table.speakers[i]).startswith("file:") for i in rows)
        m.update(weight=_source_weight(src, weights), speakers="unknown (per-file groups)" if unknown else "known")
        out[src] = m
    return out


def _speaker_adaptive_possible(speakers: Sequence[str | None]) -> bool:
    """Speaker-adaptive CV needs known speakers, at least two of them with the minimum file count."""
    from collections import Counter

    from ser_model.speaker import MIN_SPEAKER_FILES

    if any(s is None for s in speakers):
        return False
    return sum(n >= MIN_SPEAKER_FILES for n in Counter(speakers).values()) >= 2


def register_bundle(path: Path, digest: str, bundle: Any, stem: str, *, activate: bool, url: str | None = None) -> str:
    """Store a saved bundle in the ``models`` table (bytes included) and optionally activate it.

    Returns:
        The new version string ``<name>-<stamp>-<sha8>``.
    """
    from worker.storage.registry import activate as activate_version
    from worker.storage.registry import ensure_default_model, json_safe

    version = f"{stem}-{digest[:8]}"
    with Session(get_engine(url)) as session, session.begin():
        ensure_default_model(session)
        session.add(
            ModelVersion(
                version=version,
                labels=list(bundle.labels),
                metrics=json_safe(dict(bundle.meta.get("metrics", {}))),
                checksum=digest,
                feature_version=bundle.feature_version,
                active=False,
                source="db",
                bundle=Path(path).read_bytes(),
            )
        )
        session.flush()
        if activate:
            activate_version(session, version)
    return version


def evaluate_model(
    data: Sequence[str],
    dataset: str,
    *,
    version: str | None = None,
    emotions: Sequence[str] | None = None,
    settings: Settings | None = None,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Metrics of a registered model on labelled data.

    Files whose label is not in the model's label set are left out (and counted).

    Returns:
        :func:`ser_model.metrics.classification_metrics` plus ``model_version``, ``n_skipped_labels``
        and ``failed`` (files that could not be decoded).

    Raises:
        ser_model.datasets.DatasetError: unreadable data.
        worker.storage.registry.RegistryError: unknown or unloadable model.
        ValueError: no file with a label the model knows, or none of them could be read.
    """
    import numpy as np

    from ser_model.datasets import load_dataset
    from ser_model.metrics import classification_metrics
    from ser_model.training import extract_table
    from worker.storage.registry import load_model

    s = settings or get_settings()
    model = load_model(version, url=s.database_url)
    bundle = model.bundle
    files = load_dataset(data, dataset, emotions=emotions, min_labels=1)
    known = [f for f in files if f.label in bundle.labels]  # type: ignore[attr-defined]
    if not known:
        raise ValueError(f"none of the files has a label of model {model.version} ({', '.join(bundle.labels)})")  # type: ignore[attr-defined]
    table = extract_table(
        known,
        n_jobs=s.workers,
        cache_dir=s.feature_cache_dir,
        progress=(lambda d, n: progress("features", d, n)) if progress else None,
        feature_version=bundle.feature_version,  # type: ignore[attr-defined]
    )
    if not table.paths:
        path, why = table.failed[0] if table.failed else ("", "no file")
        raise ValueError(f"none of the {len(known)} file(s) could be read (e.g. {path}: {why})")
    proba = bundle.predict_proba(table.X)  # type: ignore[attr-defined]
    pred = list(np.asarray(bundle.labels, dtype=object)[proba.argmax(axis=1)])  # type: ignore[attr-defined]
    rep = classification_metrics(table.labels, pred, bundle.labels)  # type: ignore[attr-defined]
    rep.update(model_version=model.version, n_skipped_labels=len(files) - len(known), failed=table.failed)
    return rep


def default_report_dir(settings: Settings, name: str) -> str:
    """``<model_dir>/reports/<name>``."""
    return os.path.join(settings.model_dir, "reports", name)
