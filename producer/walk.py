"""Turning the paths a user gives into the list of files of a batch.

Rules: folders are walked recursively in sorted order; hidden files and folders (name starting with
``.``) are skipped; symlinked files are followed; symlinked folders are not descended (so a link
loop cannot recurse); files whose extension is not audio are ignored and counted. An audio-named
entry that is not a readable regular file (a broken link, a link loop) is kept, so it gets a
``failed`` row with its reason instead of vanishing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ser_model.datasets import AUDIO_EXTENSIONS


class WalkError(ValueError):
    """A path given on the command line does not exist."""


@dataclass
class WalkResult:
    """Files found for a batch.

    Attributes:
        files: absolute paths (links not resolved), in walk order, no duplicates.
        sizes: size in bytes of each regular file found.
        ignored: number of non-audio files skipped.
        hidden: number of hidden entries skipped.
        linked_dirs: symlinked folders not descended.
    """

    files: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    hidden: int = 0
    linked_dirs: list[str] = field(default_factory=list)


def is_audio_name(name: str) -> bool:
    """True when the file extension is one of :data:`ser_model.datasets.AUDIO_EXTENSIONS`."""
    return Path(name).suffix.lower() in AUDIO_EXTENSIONS


def collect_files(paths: list[str]) -> WalkResult:
    """Walk files and folders into the files of a batch (all in memory; ``submit`` streams :func:`iter_files`).

    Args:
        paths: files or folders as given by the user.

    Returns:
        The files to submit and what was skipped.

    Raises:
        WalkError: a path does not exist (checked for all paths before any walking).
    """
    out = WalkResult()
    for path, size in iter_files(paths, out):
        out.files.append(path)
        if size is not None:
            out.sizes[path] = size
    return out


def iter_files(paths: list[str], stats: WalkResult) -> Iterator[tuple[str, int | None]]:
    """Walk files and folders lazily: ``(absolute path, size in bytes or None)`` per audio file, in walk order.

    Memory does not grow with the number of files: no file list is kept. Each file comes out once
    without a set of the paths seen: a folder given twice is walked once, a folder given inside
    another given folder is walked on its own (the outer walk does not descend into it), and a file
    given explicitly is skipped by the folder walks.

    Args:
        paths: files or folders as given by the user.
        stats: counters updated as the walk goes (``ignored``, ``hidden``, ``linked_dirs``; ``files``
            and ``sizes`` are left alone).

    Raises:
        WalkError: a path does not exist (checked for all paths before any walking).
    """
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        raise WalkError("path not found: " + ", ".join(missing))
    folders = [os.path.abspath(p) for p in paths if os.path.isdir(p)]
    explicit = {os.path.abspath(p) for p in paths if not os.path.isdir(p)}
    done: set[str] = set()  # the paths given (not the files found)
    for given in paths:
        ap = os.path.abspath(given)
        if ap in done:
            continue
        done.add(ap)
        if os.path.isdir(given):  # a folder given explicitly is walked even when it is a link
            others = {f for f in folders if f != ap}
            for full in _walk_dir(ap, stats, others):
                if full not in explicit:
                    yield full, _size(full)
        else:  # a file given explicitly is submitted even if hidden or of another extension
            yield ap, _size(ap)


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _walk_dir(root: str, out: WalkResult, skip_dirs: set[str]) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if full in skip_dirs:
                continue  # given on the command line too: walked on its own
            if d.startswith("."):
                out.hidden += 1
            elif os.path.islink(full):
                out.linked_dirs.append(full)
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                out.hidden += 1
            elif not is_audio_name(name):
                out.ignored += 1
            else:
                yield full
