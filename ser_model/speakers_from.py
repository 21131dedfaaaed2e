"""Which files share a speaker: speaker keys derived from file paths (``submit --speaker-from``).

Specs:

* ``ravdess`` — the actor field of a RAVDESS name (``03-01-05-01-02-01-07.wav`` -> ``ravdess:07``);
* ``tess`` — the speaker prefix of a TESS name (``OAF_back_angry.wav`` -> ``tess:OAF``);
* ``parent`` — the name of the folder holding the file (``calls/agent_17/x.wav`` -> ``agent_17``);
* ``regex:PATTERN`` — a Python regular expression searched in the full path; the named group
  ``speaker``, else group 1, else the whole match is the key (``regex:spk(\\d+)`` -> ``17``).

A path the spec does not match has no speaker (``None``): that file is classified by the global
model, exactly as in a batch without speaker information. Light module: no numpy, no librosa (the
producer derives keys before enqueuing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from ser_model.labels import LabelParseError, parse_ravdess_name, parse_tess_name

SpeakerFn = Callable[[str], "str | None"]


def parse_speaker_spec(spec: str) -> SpeakerFn:
    """Turn a ``--speaker-from`` spec into a function ``path -> speaker key or None``.

    Args:
        spec: ``ravdess``, ``tess``, ``parent`` or ``regex:PATTERN``.

    Returns:
        The key function.

    Raises:
        ValueError: unknown spec, an invalid regular expression, or one with no match possible
            (empty pattern).
    """
    s = spec.strip()
    low = s.lower()
    if low == "ravdess":
        return _from_parser(parse_ravdess_name)
    if low == "tess":
        return _from_parser(parse_tess_name)
    if low == "parent":
        return lambda p: os.path.basename(os.path.dirname(os.path.abspath(p))) or None
    if low.startswith("regex:"):
        pattern = s[len("regex:") :]
        if not pattern:
            raise ValueError("regex: needs a pattern, e.g. regex:spk(\\d+)")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None

        def by_regex(p: str) -> str | None:
            m = rx.search(p)
            if not m:
                return None
            if "speaker" in rx.groupindex:
                key = m.group("speaker")
            elif rx.groups:
                key = m.group(1)
            else:
                key = m.group(0)
            return key or None

        return by_regex
    raise ValueError(f"unknown speaker spec {spec!r}: use ravdess, tess, parent or regex:PATTERN")


def _from_parser(parse: Callable[[str], object]) -> SpeakerFn:
    def key(p: str) -> str | None:
        try:
            return parse(p).speaker  # type: ignore[attr-defined]
        except LabelParseError:
            return None

    return key
