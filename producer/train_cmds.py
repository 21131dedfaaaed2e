"""Training and model-registry commands: ``train``, ``evaluate``, ``models list/show/activate/export/convert/import``.

Plain functions with typer annotations; :mod:`producer.cli` registers them on the command tree.
"""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from producer.common import (
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    aware,
    cli_settings,
    console,
    err,
    open_engine,
    progress_bar,
    resolve_model_option,
)
from producer.tables import fmt_metric, print_metrics, print_trust


class DatasetKind(StrEnum):
    """How labels (and speakers) of training data are read."""

    ravdess = "ravdess"
    tess = "tess"
    nemo = "nemo"
    folders = "folders"
    csv = "csv"


class BalanceRule(StrEnum):
    """How corpora are weighted against each other (``worker.training.BALANCE_RULES``)."""

    speakers = "speakers"
    files = "files"
    none = "none"


class CvMode(StrEnum):
    """How much cross-validation `train` runs (``worker.training.CV_MODES``)."""

    full = "full"
    quick = "quick"
    none = "none"


class FeatureSet(StrEnum):
    """Feature set of a model (``ser_model.featureset``)."""

    accurate = "accurate"
    fast = "fast"


def train(
    data: Annotated[
        list[str],
        typer.Argument(
            help="Training data: PATH (read as --dataset) or KIND:PATH with KIND ravdess, tess, nemo, folders or csv; "
            "several sources of different kinds may be mixed, e.g. ravdess:DIR csv:tolabel.csv."
        ),
    ],
    dataset: Annotated[
        DatasetKind, typer.Option(help="How labels (and speakers) of PATHs without KIND: are read.")
    ] = DatasetKind.ravdess,
    emotions: Annotated[str | None, typer.Option(help="Comma-separated subset of labels, e.g. calm,happy,sad.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Bundle file to write [default: in SER_MODEL_DIR].")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json and the plots [default: next to the bundle].")
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds (grouped by speaker).")] = 5,
    register: Annotated[bool, typer.Option(help="Register the model in the database.")] = True,
    activate: Annotated[bool, typer.Option(help="Make it the active model for new work.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Processes.")] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Train on this machine even when SER_BROKER_URL is set.")
    ] = False,
    weight: Annotated[
        list[str] | None,
        typer.Option(help="KIND=W or KIND:PATH=W: training weight of those sources' files, e.g. csv=3 [default: 1]."),
    ] = None,
    features: Annotated[
        FeatureSet,
        typer.Option(help="accurate: hand-crafted features + Whisper encoder; fast: hand-crafted features only."),
    ] = FeatureSet.accurate,
    conditions: Annotated[
        int,
        typer.Option(
            min=0,
            help="Degraded copies per training file (noise, babble, telephone, rooms, codecs); 0 = clean only.",
        ),
    ] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the degraded copies.")] = 0,
    babble: Annotated[
        Path | None,
        typer.Option(
            help="Folder of recordings of other voices (e.g. the shared LibriSpeech folder) that the "
            "degraded copies' babble is drawn from [default: other training speakers].",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    cv: Annotated[
        CvMode,
        typer.Option(
            help="Cross-validation to pay for: full (every mode, calibration on held-out channels; the packaged recipe), quick "
            "(grouped WA/UAR/macro-F1 and calibration of the global model only), none (final model only, "
            "no metrics or trust flags). The final model is always fitted on all the data."
        ),
    ] = CvMode.quick,
    dimension_head: Annotated[
        bool,
        typer.Option(
            help="Train arousal/valence heads (a logistic regression per dimension, on the same "
            "features); a file's dimensions are then the mean of the head's and the category "
            "probabilities mapped onto the dimensions. Off: the mapping alone, which did worse on "
            "corpora the model never heard (benchmarks, dimensions.md)."
        ),
    ] = True,
    balance: Annotated[
        BalanceRule,
        typer.Option(
            help="How corpora (ravdess, tess, nemo sources) are weighted against each other: speakers (in "
            "proportion to their speakers, whatever their files), files (each the same total weight) or none."
        ),
    ] = BalanceRule.speakers,
) -> None:
    """Train an MLP on labelled recordings, report speaker-independent metrics, save and register a bundle.

    Labels come from RAVDESS, TESS or nEMO names (fear -> fearful, ps -> surprised, anger -> angry), from one folder per
    label, or from a CSV manifest with columns path,label[,speaker]. With SER_BROKER_URL set (and no
    --local) the job runs as a `ser.train` task on the `training` queue and this command follows it.
    """
    from ser_model.datasets import DatasetError
    from ser_model.labels import parse_emotion_list
    from worker.settings import prepare_process_env
    from worker.training import TrainRequest

    s = cli_settings()
    try:
        wanted = parse_emotion_list(emotions)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    from ser_model.datasets import parse_sources, parse_weights

    try:
        sources = parse_sources(data, dataset.value)
        weights = parse_weights(weight or [], sources)
    except DatasetError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    missing = [src.path for src in sources if not Path(src.path).exists()]
    if missing:
        raise CliError(f"training data not found: {', '.join(missing)}", EXIT_USAGE)
    req = TrainRequest(
        data=[_abs_source(d, src) for d, src in zip(data, sources, strict=True)],
        weights=weights or None,
        dataset=dataset.value,
        emotions=list(wanted) if wanted else None,
        folds=folds,
        activate=activate,
        register=register,
        output=str(output.resolve()) if output else None,
        report=str(report.resolve()) if report else None,
        workers=workers,
        features=features.value,
        conditions=conditions,
        seed=seed,
        babble=str(babble.resolve()) if babble else None,
        cv=cv.value,
        balance=balance.value,
        dimension_head=dimension_head,
    )
    if s.broker_url and not local:
        if not register:
            raise CliError("--no-register needs --local: a queued training job always registers its model", EXIT_USAGE)
        outcome = _train_remote(req)
    else:
        from worker.training import run_training

        prepare_process_env(s)
        open_engine()  # migrate/open the database before the long work
        with progress_bar(False) as progress:
            tasks: dict[str, Any] = {}

            def on(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            try:
                result = run_training(req, settings=s, progress=on, log=lambda m: err.print(m, highlight=False))
            except (DatasetError, ValueError) as e:
                raise CliError(str(e), EXIT_USAGE) from None
        outcome = result.__dict__
    if "wa" in outcome["metrics"]:
        print_metrics(outcome["metrics"])
    else:
        err.print("no cross-validation (--cv none): no metrics, no calibration, no trust flags for this model")
    if outcome["metrics"].get("per_source"):
        from producer.labelling import print_per_source

        print_per_source(outcome["metrics"]["per_source"])
    if outcome["metrics"].get("speaker_adaptive"):
        sa = dict(outcome["metrics"]["speaker_adaptive"])
        sa["protocol"] = "with --speaker-from: " + str(sa.get("protocol", "speaker-adaptive"))
        print_metrics(sa)
    if outcome["metrics"].get("batch_normalised"):
        bn = dict(outcome["metrics"]["batch_normalised"])
        bn["protocol"] = "with --normalise batch: " + str(bn.get("protocol", "batch-normalised"))
        print_metrics(bn)
    if outcome["metrics"].get("trust"):
        print_trust(outcome["metrics"]["trust"])
    if outcome.get("timings_s"):
        err.print(
            "time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in outcome["timings_s"].items()),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"bundle: {escape(str(outcome['bundle_path']))} (sha256 {outcome['sha256'][:16]}...)")
    rep = outcome["report_files"]
    console.print("report: " + ", ".join(str(v) for v in rep.values()), highlight=False)
    if outcome["version"]:
        active = " (active)" if activate else " (not active: `ser-batch models activate VERSION`)"
        console.print(f"registered model version [bold]{outcome['version']}[/]{active}")


def _abs_source(arg: str, src: Any) -> str:
    """``arg`` with its path made absolute, keeping its ``KIND:`` prefix when it had one."""
    return f"{src.kind}:{os.path.abspath(src.path)}" if arg != src.path else os.path.abspath(arg)


def _train_remote(req: Any) -> dict[str, Any]:
    """Queue a training job on the broker and follow its progress through the ``jobs`` table."""
    import uuid

    from sqlalchemy.orm import Session

    from worker.storage.db import Job

    engine = open_engine()
    job_id = uuid.uuid4().hex
    with Session(engine) as session, session.begin():
        session.add(Job(id=job_id, kind="train", status="queued", request=req.to_json()))
    from worker.celery_app.publish import enqueue_train

    enqueue_train(job_id, req.to_json())
    err.print(
        f"training job {job_id} queued on 'training'; waiting for a worker (`ser-batch worker --queues training`)"
    )
    return _follow_job(job_id)


def _follow_job(job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    from worker.storage.db import Job

    engine = open_engine(migrate=False)
    with progress_bar(False) as progress:
        tasks: dict[str, Any] = {}
        while True:
            with Session(engine) as session:
                job = session.get(Job, job_id)
                assert job is not None
                status, stage, done, total, message, result = (
                    job.status,
                    job.stage,
                    job.done,
                    job.total,
                    job.message,
                    job.result,
                )
            if stage:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=max(total, 1))
                progress.update(tasks[stage], completed=done, total=max(total, 1))
            if status == "done" and result is not None:
                return result
            if status == "failed":
                raise CliError(f"training job {job_id} failed: {message}")
            time.sleep(poll_s)


def evaluate(
    data: Annotated[list[str], typer.Argument(help="Labelled folders (or CSV manifests with --dataset csv).")],
    dataset: Annotated[DatasetKind, typer.Option(help="How labels are read.")] = DatasetKind.ravdess,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model version [default: the active one].")] = None,
    emotions: Annotated[str | None, typer.Option(help="Only these labels.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write metrics.json and confusion_matrix.png here.")] = None,
) -> None:
    """Metrics (WA, UAR, macro-F1, per-class recall) and confusion matrix of a model on labelled data."""
    from ser_model.datasets import DatasetError
    from ser_model.labels import parse_emotion_list
    from ser_model.report import plot_confusion
    from worker.settings import prepare_process_env
    from worker.storage.registry import RegistryError
    from worker.training import evaluate_model

    s = cli_settings()
    prepare_process_env(s)
    open_engine()
    if model is not None:
        model = resolve_model_option(model)  # a version, or a packaged name (default, fast), as `submit` takes
    try:
        wanted = parse_emotion_list(emotions)
        with progress_bar(False) as progress:
            t = progress.add_task("features", total=None)
            rep = evaluate_model(
                data,
                dataset.value,
                version=model,
                emotions=wanted,
                settings=s,
                progress=lambda st, d, n: progress.update(t, completed=d, total=n),
            )
    except (DatasetError, ValueError) as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except RegistryError as e:
        raise CliError(str(e), EXIT_USAGE if "no model version" in str(e) else EXIT_ERROR) from None
    rep["protocol"] = f"model {rep['model_version']} on {', '.join(data)}"
    print_metrics(rep)
    if rep["n_skipped_labels"]:
        err.print(f"{rep['n_skipped_labels']} file(s) left out: their label is not one the model knows")
    if rep.get("failed"):
        err.print(f"[yellow]{len(rep['failed'])} file(s) could not be read and are left out[/] (first 10):")
        for path, why in rep["failed"][:10]:
            err.print(f"  {path}: {why}", markup=False, highlight=False)
    if report:
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
        png = plot_confusion(rep, report / "confusion_matrix.png", title=rep["protocol"])
        console.print(f"report: {escape(str(png))}, {escape(str(report / 'metrics.json'))}")


def models_list() -> None:
    """List registered model versions (the active one is marked)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from worker.storage.db import ModelVersion
    from worker.storage.registry import RegistryError, ensure_default_model

    engine = open_engine()
    with Session(engine) as session, session.begin():
        try:
            ensure_default_model(session)
        except RegistryError as e:
            err.print(f"[yellow]{escape(str(e))}[/]")
        t = Table(show_header=True, header_style="bold")
        for col in ("version", "active", "created", "labels", "WA", "UAR", "macro-F1", "source"):
            t.add_column(col, overflow="fold")
        for m in session.scalars(select(ModelVersion).order_by(ModelVersion.created_at)):
            met = m.metrics or {}
            t.add_row(
                m.version,
                "*" if m.active else "",
                aware(m.created_at).isoformat(timespec="seconds"),
                ",".join(m.labels),
                fmt_metric(met.get("wa")),
                fmt_metric(met.get("uar")),
                fmt_metric(met.get("macro_f1")),
                escape(m.source or ""),
            )
    console.print(t)


def _model_row(session: Any, version: str | None) -> Any:
    """The ``models`` row of ``version`` (a version, or a packaged name: ``default``, ``fast``), or of
    the active model when None; no such model is a usage error."""
    from worker.storage.db import ModelVersion
    from worker.storage.registry import RegistryError, active_version, ensure_default_model, resolve_version

    ensure_default_model(session)
    try:
        version = resolve_version(session, version) if version else active_version(session)
    except RegistryError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    row = session.get(ModelVersion, version) if version else None
    if row is None:
        raise CliError(f"no model version {version!r}", EXIT_USAGE)
    return row


def models_show(
    version: Annotated[
        str | None, typer.Argument(help="Model version, or default / fast [default: the active one].")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Also draw its confusion matrix and reliability diagram PNGs into this folder."),
    ] = None,
) -> None:
    """Show a model's label set, checksum, feature version, cross-validation metrics and calibration.

    The calibration (temperature, ECE before -> after, mean confidence against WA, low-confidence
    threshold) and the out-of-domain threshold come from the registry, without loading the bundle.
    """
    from sqlalchemy.orm import Session

    from ser_model.report import plot_confusion, plot_reliability

    with Session(open_engine()) as session, session.begin():
        m = _model_row(session, version)
        info = {
            "version": m.version,
            "active": m.active,
            "created": aware(m.created_at).isoformat(timespec="seconds"),
            "labels": ", ".join(m.labels),
            "feature version": m.feature_version,
            "sha256": m.checksum,
            "stored": m.source,
        }
        metrics = dict(m.metrics or {})
    t = Table(show_header=False)
    t.add_column("", style="bold")
    t.add_column("", overflow="fold")
    for k, v in info.items():
        t.add_row(k, str(v))
    console.print(t)
    if metrics.get("wa") is not None:
        print_metrics(metrics)
    print_trust(metrics.get("trust"))
    if report:
        written = []
        if metrics.get("wa") is not None and metrics.get("confusion"):
            written.append(
                plot_confusion(
                    metrics,
                    report / "confusion_matrix.png",
                    title=f"{info['version']}: {metrics.get('protocol', '')}",
                )
            )
        calibration = (metrics.get("trust") or {}).get("calibration")
        if calibration:
            written.append(
                plot_reliability(
                    calibration, report / "reliability_diagram.png", title=f"{info['version']}: reliability"
                )
            )
        if written:
            console.print("report: " + ", ".join(str(p) for p in written), highlight=False)
        else:
            err.print(f"[yellow]nothing to draw[/]: model {info['version']} stores no confusion matrix or calibration")


def models_activate(
    version: Annotated[str, typer.Argument(help="Version to make active, or a packaged model: default, fast.")],
) -> None:
    """Make VERSION the active model (one transaction); new work, on every worker, uses it."""
    from sqlalchemy.orm import Session

    from worker.storage.registry import RegistryError, activate

    engine = open_engine()
    with Session(engine) as session, session.begin():
        version = _model_row(session, version).version
        try:
            activate(session, version)
        except RegistryError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    console.print(f"active model: {version}")


def models_export(
    version: Annotated[str, typer.Argument(help="Model version, or default / fast.")],
    output: Annotated[Path, typer.Argument(help="Bundle file to write (.npz); a .json sidecar goes beside it.")],
) -> None:
    """Write a registered model's bundle (checksum verified) and its metadata sidecar to a file.

    The bytes are written as stored, without being parsed, so a pickled bundle of an older version can be
    exported and then converted (``models convert``) by an operator who trusts it.
    """
    from sqlalchemy.orm import Session

    from ser_model.model import PACKAGED_MODELS, sha256_bytes
    from worker.storage.registry import PACKAGE_PREFIX

    with Session(open_engine()) as session, session.begin():
        m = _model_row(session, version)
        packaged = PACKAGED_MODELS.get((m.source or "").removeprefix(PACKAGE_PREFIX), PACKAGED_MODELS["default"])
        data = m.bundle if m.bundle is not None else packaged.read_bytes()
        checksum, labels, fv, metrics = m.checksum, list(m.labels), m.feature_version, dict(m.metrics or {})
        version = m.version  # the registered version, also when a packaged name (default, fast) was typed
    if sha256_bytes(data) != checksum.lower():  # refuse to export a corrupted bundle
        raise CliError(f"model {version!r}: stored bundle does not match its checksum; refusing to export it")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    side = {
        "sha256": sha256_bytes(data),
        "labels": labels,
        "feature_version": fv,
        "version": version,
        "metrics": metrics,
    }
    Path(str(output) + ".json").write_text(json.dumps(side, indent=2, default=str) + "\n")
    console.print(f"wrote {escape(str(output))} and {escape(str(output))}.json (sha256 {checksum[:16]}...)")


def models_convert(
    file: Annotated[Path, typer.Argument(help="Pickled bundle (.joblib, format 1 or 2) that you trust.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Format-3 file to write [default: FILE with suffix .npz].")
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Required: confirm that you trust FILE. Reading a pickle runs any code it contains.",
        ),
    ] = False,
) -> None:
    """Convert a pickled bundle of an older ser-batch into format 3 (operator-only, run once).

    FILE is unpickled once, in this process: do this only for a file whose origin you trust. Its sidecar
    checksum is checked when FILE.json exists. The written bundle holds the same arrays, labels and
    metadata as data only; register it with ``ser-batch models import``.
    """
    from ser_model.model import BundleError, convert_legacy_bundle

    if not trust_pickle:
        raise CliError(
            f"{file}: converting a pickled bundle runs any code it contains; if you trust its origin, "
            "run again with --trust-pickle",
            EXIT_USAGE,
        )
    if not file.is_file():
        raise CliError(f"no such file: {file}", EXIT_USAGE)
    out = output or file.with_suffix(".npz")
    if out.resolve() == file.resolve():
        raise CliError(f"--output must differ from {file}", EXIT_USAGE)
    try:
        digest = convert_legacy_bundle(file, out, trust_pickle=True)
    except BundleError as e:
        raise CliError(f"{file}: {e}") from None
    console.print(
        f"wrote {escape(str(out))} and {escape(str(out))}.json (format 3, sha256 {digest[:16]}...)", highlight=False
    )


def models_import(
    file: Annotated[Path, typer.Argument(help="Format-3 bundle (.npz) with its .json sidecar.")],
    activate: Annotated[bool, typer.Option(help="Make it the active model.")] = False,
) -> None:
    """Register a format-3 bundle from another deployment (checksum and feature version checked).

    The bundle is read as data (JSON and numeric arrays): nothing in it is executed. A pickled bundle is
    refused; convert it first with ``ser-batch models convert`` if you trust it.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ser_model.model import BundleError, load_bundle, read_sidecar
    from worker.storage.db import ModelVersion
    from worker.training import register_bundle

    if not file.is_file():
        raise CliError(f"no such file: {file}", EXIT_USAGE)
    try:
        digest = str(read_sidecar(file).get("sha256", ""))
        bundle = load_bundle(file, expected_sha256=digest)
    except BundleError as e:
        raise CliError(str(e)) from None
    engine = open_engine()
    with Session(engine) as session:
        existing = session.scalar(select(ModelVersion.version).where(ModelVersion.checksum == digest.lower()))
    if existing is not None:
        raise CliError(f"{file} is already registered as {existing}", EXIT_USAGE)
    version = register_bundle(
        file, digest.lower(), bundle, file.stem, activate=activate, url=cli_settings().database_url
    )
    console.print(f"registered {version}" + (" (active)" if activate else ""), highlight=False)
