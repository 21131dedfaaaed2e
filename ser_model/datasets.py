"""Labelled training data: RAVDESS, TESS or nEMO names, one folder per label, or a CSV manifest."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ser_model.labels import LabelParseError, parse_nemo_name, parse_ravdess_name, parse_tess_name

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64"}
)
"""File extensions (lower case) treated as audio when walking folders."""

DATASET_KINDS = ("ravdess", "tess", "nemo", "folders", "csv")

_PARSERS = {"ravdess": parse_ravdess_name, "tess": parse_tess_name, "nemo": parse_nemo_name}


class DatasetError(ValueError):
    """The data given for training cannot be read as the named dataset kind."""


@dataclass(frozen=True)
class LabelledFile:
    """One training example.

    Attributes:
        path: audio file.
        label: emotion label.
        speaker: speaker key, or None when unknown (then CV is stratified, not grouped).
    """

    path: Path
    label: str
    speaker: str | None


def iter_audio_files(root: Path) -> Iterable[Path]:
    """Audio files below ``root`` (sorted, recursive, hidden entries and symlinked folders skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(dirpath) / name


def load_dataset(
    sources: Sequence[str | os.PathLike[str]],
    kind: str,
    *,
    emotions: Sequence[str] | None = None,
    min_labels: int = 2,
) -> list[LabelledFile]:
    """Collect labelled files from folders (or CSV manifests) of one dataset kind.

    Args:
        sources: folders (``ravdess``, ``tess``, ``nemo``, ``folders``) or CSV files (``csv``).
        kind: ``"ravdess"`` (labels and actors from RAVDESS names), ``"tess"`` (TESS names,
            fear -> fearful, ps -> surprised), ``"nemo"`` (nEMO names, Polish: anger -> angry,
            happiness -> happy, sadness -> sad, fear -> fearful), ``"folders"`` (the parent folder's name is the label,
            no speaker), ``"csv"`` (columns ``path,label[,speaker]``; relative paths are relative
            to the CSV file).
        emotions: keep only these labels (e.g. ``calm,happy,fearful,disgust``); None keeps all.
        min_labels: fewest distinct labels accepted: 2 to train (the default), 1 to evaluate.

    Returns:
        The labelled files, sorted by path.

    Raises:
        DatasetError: unknown kind, missing source, an unparsable name or manifest row,
            a requested emotion with no files, or fewer than ``min_labels`` labels in the result.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    items: list[LabelledFile] = []
    for src in sources:
        items.extend(_collect(Path(src), kind))
    return _filter_labels(items, emotions, min_labels)


def _collect(p: Path, kind: str) -> list[LabelledFile]:
    """The labelled files of one source of one kind (see :func:`load_dataset`)."""
    if not p.exists():
        raise DatasetError(f"training data not found: {p}")
    if kind == "csv":
        return _read_manifest(p)
    if not p.is_dir():
        raise DatasetError(f"expected a folder for --dataset {kind}: {p}")
    items: list[LabelledFile] = []
    for f in iter_audio_files(p):
        if kind == "folders":
            items.append(LabelledFile(f, f.parent.name.lower(), None))
            continue
        parse = _PARSERS[kind]
        try:
            lab = parse(f)
        except LabelParseError as e:
            raise DatasetError(f"{f}: {e}") from None
        items.append(LabelledFile(f, lab.emotion, lab.speaker))
    return items


def _filter_labels(
    items: list[LabelledFile], emotions: Sequence[str] | None, min_labels: int = 2
) -> list[LabelledFile]:
    """Keep the wanted labels; refuse a missing wanted label or fewer than ``min_labels`` labels."""
    if emotions:
        wanted = [e.lower() for e in emotions]
        present = {i.label for i in items}
        missing = [e for e in wanted if e not in present]
        if missing:
            raise DatasetError(f"no training files for emotion(s): {', '.join(missing)}")
        items = [i for i in items if i.label in wanted]
    labels = {i.label for i in items}
    if not labels:
        raise DatasetError("no labelled files found")
    if len(labels) < min_labels:
        raise DatasetError(f"need at least two labels to train, found {sorted(labels)}")
    return sorted(items, key=lambda i: str(i.path))


def _read_manifest(path: Path) -> list[LabelledFile]:
    """Rows of a ``path,label[,speaker]`` CSV manifest (header required)."""
    out: list[LabelledFile] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower() for f in (reader.fieldnames or [])}
        if not {"path", "label"} <= fields:
            raise DatasetError(f"{path}: manifest needs a header with columns path,label[,speaker]")
        for n, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("path") or not row.get("label"):
                raise DatasetError(
                    f"{path}:{n}: empty path or label (fill in the label column, or delete rows you cannot label)"
                )
            if row.get("channel"):
                raise DatasetError(
                    f"{path}:{n}: channel {row['channel']} of a multi-channel file (a --channels split batch): "
                    "training on one channel of a file is not supported; save that channel as its own file, "
                    "or delete the row"
                )
            f = Path(row["path"])
            if not f.is_absolute():
                f = path.parent / f
            out.append(LabelledFile(f, row["label"].lower(), row.get("speaker") or None))
    return out


@dataclass(frozen=True)
class Source:
    """One training source of a multi-source run: ``KIND:PATH`` on the command line.

    Attributes:
        kind: one of :data:`DATASET_KINDS`.
        path: folder (ravdess, tess, folders) or CSV manifest (csv).
    """

    kind: str
    path: str

    @property
    def name(self) -> str:
        """``kind:path``, how the source is named in per-source metrics."""
        return f"{self.kind}:{self.path}"


def parse_sources(args: Sequence[str], default_kind: str) -> list[Source]:
    """Training sources from ``KIND:PATH`` arguments; a bare ``PATH`` is read as ``default_kind``.

    ``KIND`` must be one of :data:`DATASET_KINDS` (``ravdess:../shared/data/ravdess``,
    ``csv:tolabel.csv``); any other text before a colon is part of the path.

    Raises:
        DatasetError: an unknown default kind or an empty path.
    """
    if default_kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {default_kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    out = []
    for a in args:
        kind, sep, rest = a.partition(":")
        src = Source(kind, rest) if sep and kind in DATASET_KINDS else Source(default_kind, a)
        if not src.path:
            raise DatasetError(f"empty path in training source {a!r}")
        out.append(src)
    return out


def parse_weights(specs: Sequence[str], sources: Sequence[Source]) -> dict[str, float]:
    """``--weight`` values ``KEY=W`` where KEY is a kind (``csv=3``) or a source (``csv:mine.csv=3``).

    Returns:
        ``{key: weight}``; weights are positive numbers (1 = as many as an unweighted file).

    Raises:
        DatasetError: a malformed spec, a weight that is not a positive number, or a key that names
            none of ``sources``.
    """
    out: dict[str, float] = {}
    keys = {s.kind for s in sources} | {s.name for s in sources}
    for spec in specs:
        key, sep, value = spec.rpartition("=")
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not sep or not key or not w > 0 or w == float("inf"):
            raise DatasetError(f"--weight {spec!r}: expected KIND=W or KIND:PATH=W with W > 0 (e.g. csv=3)")
        if key not in keys:
            raise DatasetError(f"--weight {spec!r}: no training source {key!r} (sources: {', '.join(sorted(keys))})")
        out[key] = w
    return out


def load_sources(
    sources: Sequence[Source], *, emotions: Sequence[str] | None = None
) -> tuple[list[LabelledFile], dict[str, str]]:
    """Labelled files of several sources of different kinds, and the source of every file.

    A file listed by two sources (e.g. a RAVDESS file you also labelled in a CSV) is kept once, with
    the label, speaker and source of the later one. In a run that mixes sources with and without
    speaker keys, a file without a speaker is its own group in grouped cross-validation (see
    :func:`group_unknown_speakers`).

    Args:
        sources: from :func:`parse_sources`.
        emotions: keep only these labels; None keeps all.

    Returns:
        ``(files sorted by path, {str(path): source name})``.

    Raises:
        DatasetError: as :func:`load_dataset`, over the union of the sources.
    """
    by_path: dict[str, tuple[LabelledFile, str]] = {}
    for src in sources:
        for f in _collect(Path(src.path), src.kind):
            by_path[os.path.abspath(f.path)] = (f, src.name)
    files = _filter_labels([f for f, _ in by_path.values()], emotions)
    return files, {str(f.path): by_path[os.path.abspath(f.path)][1] for f in files}


def group_unknown_speakers(files: Sequence[LabelledFile]) -> tuple[list[LabelledFile], int]:
    """Give files without a speaker a group of their own when other files have speakers.

    Grouped (speaker-independent) cross-validation needs a group for every file; a labelled file of
    unknown speaker then becomes a group of one: its own speaker may still be among the training
    files of its fold, so metrics on such files are speaker-dependent (reported as such).

    Returns:
        ``(files, number of files that got a per-file group)``; unchanged when no file, or every
        file, has a speaker.
    """
    n_unknown = sum(f.speaker is None for f in files)
    if n_unknown == 0 or n_unknown == len(files):
        return list(files), 0
    out = [f if f.speaker is not None else LabelledFile(f.path, f.label, f"file:{f.path}") for f in files]
    return out, n_unknown
