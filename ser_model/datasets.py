"""Labelled training data: RAVDESS names, TESS names, one folder per label, or a CSV manifest."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ser_model.labels import LabelParseError, parse_ravdess_name, parse_tess_name

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64"}
)
"""File extensions (lower case) treated as audio when walking folders."""

DATASET_KINDS = ("ravdess", "tess", "folders", "csv")


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
) -> list[LabelledFile]:
    """Collect labelled files from folders (or CSV manifests) of one dataset kind.

    Args:
        sources: folders (``ravdess``, ``tess``, ``folders``) or CSV files (``csv``).
        kind: ``"ravdess"`` (labels and actors from RAVDESS names), ``"tess"`` (TESS names,
            fear -> fearful, ps -> surprised), ``"folders"`` (the parent folder's name is the label,
            no speaker), ``"csv"`` (columns ``path,label[,speaker]``; relative paths are relative
            to the CSV file).
        emotions: keep only these labels (e.g. ``calm,happy,fearful,disgust``); None keeps all.

    Returns:
        The labelled files, sorted by path.

    Raises:
        DatasetError: unknown kind, missing source, an unparsable name or manifest row,
            a requested emotion with no files, or fewer than two labels in the result.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    items: list[LabelledFile] = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            raise DatasetError(f"training data not found: {p}")
        if kind == "csv":
            items.extend(_read_manifest(p))
            continue
        if not p.is_dir():
            raise DatasetError(f"expected a folder for --dataset {kind}: {p}")
        for f in iter_audio_files(p):
            if kind == "folders":
                items.append(LabelledFile(f, f.parent.name.lower(), None))
                continue
            parse = parse_ravdess_name if kind == "ravdess" else parse_tess_name
            try:
                lab = parse(f)
            except LabelParseError as e:
                raise DatasetError(f"{f}: {e}") from None
            items.append(LabelledFile(f, lab.emotion, lab.speaker))
    if emotions:
        wanted = [e.lower() for e in emotions]
        present = {i.label for i in items}
        missing = [e for e in wanted if e not in present]
        if missing:
            raise DatasetError(f"no training files for emotion(s): {', '.join(missing)}")
        items = [i for i in items if i.label in wanted]
    labels = {i.label for i in items}
    if len(labels) < 2:
        raise DatasetError(f"need at least two labels to train, found {sorted(labels) or 'none'}")
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
                raise DatasetError(f"{path}:{n}: empty path or label")
            f = Path(row["path"])
            if not f.is_absolute():
                f = path.parent / f
            out.append(LabelledFile(f, row["label"].lower(), row.get("speaker") or None))
    return out
