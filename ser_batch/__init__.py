"""ser-batch as a library: label recordings in-process, without a database or a broker.

>>> from ser_batch import predict_files
>>> for p in predict_files(["examples/recordings/03-01-05-02-01-01-01.wav"]):
...     print(p.path, p.emotion, round(p.confidence, 2))  # doctest: +SKIP

Every file goes through the same code as a ``ser-batch submit`` batch
(:func:`worker.engine.analyse.analyse_file`: decoding with soundfile, mono, resampling to 16 kHz,
segmentation of long recordings, the same failure reasons), so a :class:`Prediction` holds what the
file's ``results`` row would hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Prediction", "SegmentPrediction", "load", "predict_files"]


@dataclass(frozen=True)
class SegmentPrediction:
    """One segment of a long recording.

    Attributes:
        start_s: start, seconds from the beginning of the file.
        end_s: end, seconds.
        emotion: winning label.
        confidence: its probability, in [0, 1].
        probabilities: ``{label: probability}``, summing to 1.
        arousal: how activated the segment sounds, in [0, 1] (0.5 the neutral point; see
            :mod:`ser_model.dimensions`); None when the model gives no dimensions.
        valence: how positive it sounds, in [0, 1] (0.5 the neutral point); None likewise.
    """

    start_s: float
    end_s: float
    emotion: str | None
    confidence: float | None
    probabilities: dict[str, float]
    arousal: float | None = None
    valence: float | None = None


@dataclass(frozen=True)
class Prediction:
    """The label of one file, or why it has none.

    Attributes:
        path: the file as given.
        status: ``"done"`` or ``"failed"``.
        emotion: winning label (None when failed).
        confidence: probability of ``emotion`` in [0, 1] (None when failed).
        probabilities: ``{label: probability}`` over the model's label set (empty when failed).
        error: one-line reason when failed, else None.
        model_version: version of the model that labelled it.
        duration_s: length of the recording in seconds, when it could be read.
        sample_rate: the file's sample rate in Hz (the model always sees 16 kHz).
        analysis_mode: ``"utterance"`` (whole file) or ``"segments"`` (long recording, aggregate of
            ``segments``).
        segments: per-segment labels of a long recording (empty otherwise).
        low_confidence: True when the model flags the label as unsure; None when the model does not
            compute this flag.
        out_of_domain: True when the recording is far from the training data; None when not computed.
        ood_score: the out-of-domain score behind ``out_of_domain``; None when not computed.
        channel: with ``channels="split"``, the 0-based channel of a multi-channel file this
            prediction labels; None for a mixed (or mono) file.
        role: the channel's name from ``channel_names`` (e.g. ``"customer"``), else None.
        arousal: how activated the recording sounds, in [0, 1]: above 0.5 high (angry, happy,
            fearful, surprised), below low (neutral, calm, sad, disgust); for a long recording the
            duration-weighted mean of its segments'. None when failed or when the model gives no
            dimensions. An out-of-domain file keeps it (see :mod:`ser_model.dimensions`).
        valence: how positive it sounds, in [0, 1]: above 0.5 positive (happy, surprised, neutral,
            calm), below negative (sad, angry, fearful, disgust); None likewise.
    """

    path: str
    status: str
    emotion: str | None
    confidence: float | None
    probabilities: dict[str, float]
    error: str | None
    model_version: str
    duration_s: float | None = None
    sample_rate: int | None = None
    analysis_mode: str | None = None
    segments: list[SegmentPrediction] = field(default_factory=list)
    low_confidence: bool | None = None
    out_of_domain: bool | None = None
    ood_score: float | None = None
    channel: int | None = None
    role: str | None = None
    arousal: float | None = None
    valence: float | None = None

    @property
    def ok(self) -> bool:
        """True when the file has a label."""
        return self.status == "done"


def load(model: str | os.PathLike[str] | None = None) -> Any:
    """Load a model once, to pass to :func:`predict_files` for many calls.

    Args:
        model: None for the packaged default model (accurate); ``"fast"`` for the packaged fast
            model; a bundle file (format 3, ``.npz`` with its ``.json`` sidecar, e.g. from
            ``ser-batch train --output`` or ``ser-batch models export``), whose SHA-256 is checked
            before it is read (data only: nothing in it is executed; a pickled ``.joblib`` bundle of
            older versions is refused, see ``ser-batch models convert``); or a registered version
            name, loaded from the database of ``SER_DATABASE_URL``.

    Returns:
        An opaque loaded model (``worker.storage.registry.LoadedModel``).

    Raises:
        FileNotFoundError: a bundle path that does not exist.
        ValueError: the bundle fails its checksum or feature-version check, is a pickled bundle
            (refused unopened), or the version is unknown.
    """
    from ser_model.model import PACKAGED_MODELS, BundleError, load_bundle, read_sidecar
    from worker.storage.registry import LoadedModel, RegistryError, default_version_name, load_model

    if not isinstance(model, (str, os.PathLike)) and model is not None:
        return model  # already loaded
    try:
        if model is None or (isinstance(model, str) and model in PACKAGED_MODELS):
            name = "default" if model is None else str(model)
            side = read_sidecar(PACKAGED_MODELS[name])
            bundle = load_bundle(PACKAGED_MODELS[name], expected_sha256=side["sha256"])
            return LoadedModel(default_version_name(side["sha256"], str(side.get("created_at", "")), name), bundle)
        path = Path(model)
        if path.suffix in (".npz", ".joblib") or path.exists():
            if not path.exists():
                raise FileNotFoundError(f"model bundle not found: {path}")
            side = read_sidecar(path)
            bundle = load_bundle(path, expected_sha256=side["sha256"])
            return LoadedModel(str(side.get("version") or f"{path.stem}-{side['sha256'][:8]}"), bundle)
        return load_model(str(model))
    except (BundleError, RegistryError) as e:
        raise ValueError(str(e)) from None


def predict_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    model: Any = None,
    segment: str = "vad",
    segment_min_s: float = 10.0,
    channels: str = "mix",
    channel_names: Iterable[str] = (),
) -> list[Prediction]:
    """Label audio files in this process and return one typed result per file, in input order.

    Bad input never raises: a file that cannot be labelled gets ``status="failed"`` and a one-line
    ``error``, exactly as in a batch.

    Args:
        paths: audio files (any format libsndfile reads; any sample rate and channel count).
        model: None (packaged default), a bundle path, a registered version, or the result of
            :func:`load`.
        segment: how recordings of at least ``segment_min_s`` seconds are split: ``"vad"``,
            ``"window:LEN:HOP"`` (seconds) or ``"none"``.
        segment_min_s: shorter recordings get one label.
        channels: ``"mix"`` (every file mixed to mono) or ``"split"``: each channel of a
            multi-channel file labelled as its own recording, one :class:`Prediction` per channel
            (``channel``, ``role``), as ``submit --channels split`` does; mono files get one.
        channel_names: roles of channel 0, 1, ... (``["agent", "customer"]``), with ``"split"``.

    Returns:
        A list of :class:`Prediction`, one per path (per channel of a path with ``"split"``).

    Raises:
        ValueError: an unusable model, segment mode or channel mode.
    """
    return list(
        iter_predictions(
            paths,
            model=model,
            segment=segment,
            segment_min_s=segment_min_s,
            channels=channels,
            channel_names=channel_names,
        )
    )


def iter_predictions(
    paths: Iterable[str | os.PathLike[str]],
    *,
    model: Any = None,
    segment: str = "vad",
    segment_min_s: float = 10.0,
    channels: str = "mix",
    channel_names: Iterable[str] = (),
) -> Iterator[Prediction]:
    """Like :func:`predict_files`, yielding each result as soon as its file is done."""
    from ser_model.segment import parse_segment_mode
    from worker.engine.analyse import analyse_channels, analyse_file

    parse_segment_mode(segment)  # ValueError for a bad mode, before any work
    if channels not in ("mix", "split"):
        raise ValueError(f"channels must be 'mix' or 'split', not {channels!r}")
    names = list(channel_names)
    loaded = load(model)
    for p in paths:
        if channels == "split":
            for row in analyse_channels(
                os.fspath(p), loaded, segment=segment, segment_min_s=segment_min_s, channel_names=names
            ):
                yield _prediction(row)
        else:
            yield _prediction(analyse_file(os.fspath(p), loaded, segment=segment, segment_min_s=segment_min_s))


def _prediction(row: dict[str, Any]) -> Prediction:
    segs = [
        SegmentPrediction(
            start_s=float(s["start_s"]),
            end_s=float(s["end_s"]),
            emotion=s.get("emotion"),
            confidence=s.get("confidence"),
            probabilities=dict(s.get("probabilities") or {}),
            arousal=s.get("arousal"),
            valence=s.get("valence"),
        )
        for s in row.get("segments") or []
    ]
    return Prediction(
        path=row["path"],
        status=row["status"],
        emotion=row.get("emotion"),
        confidence=row.get("confidence"),
        probabilities=dict(row.get("probabilities") or {}),
        error=row.get("error"),
        model_version=row.get("model_version") or "",
        duration_s=row.get("duration_s"),
        sample_rate=row.get("sample_rate"),
        analysis_mode=row.get("analysis_mode") if row["status"] == "done" else None,
        segments=segs,
        low_confidence=row.get("low_confidence"),
        out_of_domain=row.get("out_of_domain"),
        ood_score=row.get("ood_score"),
        channel=row.get("channel"),
        role=row.get("role"),
        arousal=row.get("arousal"),
        valence=row.get("valence"),
    )
