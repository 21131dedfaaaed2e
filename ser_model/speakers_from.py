"""Which files share a speaker: speaker keys derived from file paths (``submit --speaker-from``).

Specs:

* ``ravdess`` — the actor field of a RAVDESS name (``03-01-05-01-02-01-07.wav`` -> ``ravdess:07``);
* ``tess`` — the speaker prefix of a TESS name (``OAF_back_angry.wav`` -> ``tess:OAF``);
* ``parent`` — the name of the folder holding the file (``calls/agent_17/x.wav`` -> ``agent_17``);
* ``regex:PATTERN`` — a Python regular expression searched in the full path; the named group
  ``speaker``, else group 1, else the whole match is the key (``regex:spk(\\d+)`` -> ``17``);
* ``file`` — every file is its own speaker (the key is the path), e.g. the customer of a call.

With ``submit --channels split`` each channel of a file is a recording of its own party, and
:func:`channel_speaker_keys` derives one key per channel: one spec for every channel, or one spec
per channel in a single option, ``ROLE=SPEC`` items separated by ``;`` (``ROLE`` a name from
``--channel-names`` or a 0-based channel index): ``--speaker-from "agent=parent;customer=file"``
says "the agent's id is the folder name, each call's customer is their own speaker". Keys of
different channels never collide: they are prefixed with the role (or ``chN``).

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
        spec: ``ravdess``, ``tess``, ``parent``, ``file`` or ``regex:PATTERN``.

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
    if low == "file":
        return lambda p: p
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
    raise ValueError(f"unknown speaker spec {spec!r}: use ravdess, tess, parent, file or regex:PATTERN")


def _from_parser(parse: Callable[[str], object]) -> SpeakerFn:
    def key(p: str) -> str | None:
        try:
            return parse(p).speaker  # type: ignore[attr-defined]
        except LabelParseError:
            return None

    return key


ChannelSpeakerFn = Callable[[str, int, "str | None"], "str | None"]
_ITEM = re.compile(r"^\s*([\w.-]+)\s*=(.+)$", re.S)


def split_channel_specs(spec: str) -> dict[str, str] | None:
    """``"agent=parent;customer=file"`` -> ``{"agent": "parent", "customer": "file"}``; None for one spec.

    A spec is per channel only when every ``;``-separated item is ``NAME=SPEC`` (so a regular
    expression containing ``=`` or ``;`` stays one spec unless all of its parts look like that).

    Raises:
        ValueError: a ``NAME`` given twice (``agent=parent;agent=file``: which one was meant?).
    """
    items = spec.split(";")
    out: dict[str, str] = {}
    for it in items:
        m = _ITEM.match(it)
        if not m or m.group(1).lower() == "regex":
            return None
        if m.group(1) in out:
            raise ValueError(f"{m.group(1)!r} is given twice; give one spec per channel")
        out[m.group(1)] = m.group(2).strip()
    return out


def channel_speaker_keys(spec: str, channel_names: list[str] | tuple[str, ...] = ()) -> ChannelSpeakerFn:
    """Speaker keys of the channels of split files (``submit --channels split --speaker-from``).

    Args:
        spec: one spec for every channel, or ``ROLE=SPEC;ROLE=SPEC`` (``ROLE`` a channel name or a
            0-based channel index; a channel not named gets no speaker).
        channel_names: ``--channel-names``, role of channel 0, 1, ...

    Returns:
        ``(path, channel, role) -> key`` with the role (or ``chN``) as prefix; a mono file
        (channel None) gets channel 0's key unprefixed, as in a mixed batch.

    Raises:
        ValueError: a spec is invalid, a ``ROLE`` is neither a channel name nor an index, or one channel
            is given twice (by name or index).
    """
    per = split_channel_specs(spec)
    if per is None:
        one = parse_speaker_spec(spec)
        fns: dict[int | str, SpeakerFn] = {"*": one}
    else:
        fns = {}
        named: dict[int, str] = {}
        for name, sub in per.items():
            if name in channel_names:
                ch = list(channel_names).index(name)
            elif name.isdigit():
                ch = int(name)
            else:
                known = ", ".join(channel_names) or "none given"
                raise ValueError(f"--speaker-from: {name!r} is not a channel name ({known}) nor a channel index")
            if ch in named:  # a role and its index: agent=parent;0=file
                raise ValueError(f"channel {ch} is given twice ({named[ch]!r} and {name!r}); give one spec per channel")
            named[ch] = name
            fns[ch] = parse_speaker_spec(sub)

    def key(path: str, channel: int | None, role: str | None) -> str | None:
        fn = fns.get("*") or fns.get(0 if channel is None else channel)
        if fn is None:
            return None
        k = fn(path)
        if k is None or channel is None:
            return k
        return f"{role or f'ch{channel}'}:{k}"

    return key
