"""Emotion labels and the corpus file-name parsers (RAVDESS, TESS, nEMO).

Labels are the eight RAVDESS emotions. TESS maps onto them (``fear`` -> ``fearful``,
``ps``/``pleasant_surprise(d)`` -> ``surprised``), and so does nEMO (``anger`` -> ``angry``,
``fear`` -> ``fearful``, ``happiness`` -> ``happy``, ``sadness`` -> ``sad``; it has no calm or disgust).

Sources:
    RAVDESS: Livingstone & Russo (2018), PLoS ONE 13(5): e0196391. File names are
    ``modality-channel-emotion-intensity-statement-repetition-actor``.
    TESS: Pichora-Fuller & Dupuis (2020), University of Toronto. File names are
    ``speaker_word_emotion``.
    nEMO: Christop (2024), "nEMO: Dataset of Emotional Speech in Polish", LREC-COLING 2024. File
    names are ``speaker_emotion_sentence`` (``EB0_anger_12``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
"""The eight RAVDESS emotions, in RAVDESS code order (01..08)."""

RAVDESS_CODES: dict[str, str] = {f"{i + 1:02d}": e for i, e in enumerate(EMOTIONS)}

TESS_EMOTIONS: dict[str, str] = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "sad": "sad",
}

NEMO_EMOTIONS: dict[str, str] = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprised": "surprised",
}

_NEMO_RE = re.compile(r"^([A-Za-z]{2}\d)_([a-z]+)_(\d+)$")
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_TESS_RE = re.compile(r"^([A-Za-z]+)_([^_]+)_(.+)$")


class LabelParseError(ValueError):
    """A file name does not follow the corpus' naming scheme."""


@dataclass(frozen=True)
class CorpusLabel:
    """What a corpus file name says about a recording.

    Attributes:
        emotion: one of :data:`EMOTIONS`.
        speaker: speaker key, e.g. ``"ravdess:07"`` or ``"tess:OAF"``.
        extra: other fields of the name (intensity, statement, word...).
    """

    emotion: str
    speaker: str
    extra: dict[str, str]


def parse_ravdess_name(path: str | PurePath) -> CorpusLabel:
    """Parse a RAVDESS file name such as ``03-01-05-01-02-01-07.flac``.

    Args:
        path: file path or name; only the stem is read.

    Returns:
        The emotion (code 01..08 -> :data:`EMOTIONS`), the actor as speaker
        ``"ravdess:NN"`` and the other fields in ``extra``.

    Raises:
        LabelParseError: the stem is not seven two-digit fields, or the emotion
            code is outside 01..08.
    """
    stem = PurePath(path).stem
    m = _RAVDESS_RE.match(stem)
    if not m:
        raise LabelParseError(f"not a RAVDESS name (expected NN-NN-NN-NN-NN-NN-NN): {stem!r}")
    modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
    if emotion not in RAVDESS_CODES:
        raise LabelParseError(f"RAVDESS emotion code {emotion!r} is not in 01..08: {stem!r}")
    return CorpusLabel(
        emotion=RAVDESS_CODES[emotion],
        speaker=f"ravdess:{actor}",
        extra={
            "modality": modality,
            "channel": channel,
            "intensity": intensity,
            "statement": statement,
            "repetition": repetition,
            "actor": actor,
        },
    )


def parse_tess_name(path: str | PurePath) -> CorpusLabel:
    """Parse a TESS file name such as ``OAF_back_angry.flac`` or ``YAF_dog_ps.wav``.

    Args:
        path: file path or name; only the stem is read.

    Returns:
        The emotion mapped onto :data:`EMOTIONS` (``fear`` -> ``fearful``,
        ``ps`` -> ``surprised``), the speaker as ``"tess:OAF"``/``"tess:YAF"``
        and the target word in ``extra``.

    Raises:
        LabelParseError: the stem is not ``speaker_word_emotion`` or the
            emotion is not one of TESS' seven.
    """
    stem = PurePath(path).stem
    m = _TESS_RE.match(stem)
    if not m:
        raise LabelParseError(f"not a TESS name (expected SPEAKER_word_emotion): {stem!r}")
    speaker, word, emotion = m.groups()
    key = emotion.lower()
    if key not in TESS_EMOTIONS:
        raise LabelParseError(f"TESS emotion {emotion!r} is not one of {sorted(TESS_EMOTIONS)}: {stem!r}")
    return CorpusLabel(emotion=TESS_EMOTIONS[key], speaker=f"tess:{speaker.upper()}", extra={"word": word})


def parse_emotion_list(text: str | None) -> tuple[str, ...] | None:
    """Parse ``"calm,happy,fearful,disgust"`` into a tuple of distinct, stripped labels.

    Args:
        text: comma-separated labels, or None/empty for "all".

    Returns:
        The labels in the order given, or None when ``text`` is empty.

    Raises:
        ValueError: a label repeats or is empty.
    """
    if not text:
        return None
    labels = tuple(t.strip().lower() for t in text.split(","))
    if any(not t for t in labels):
        raise ValueError(f"empty label in {text!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"a label repeats in {text!r}")
    return labels


def parse_nemo_name(path: str | PurePath) -> CorpusLabel:
    """Parse an nEMO file name such as ``EB0_anger_12.flac``.

    Args:
        path: file path or name; only the stem is read.

    Returns:
        The emotion mapped onto :data:`EMOTIONS` (:data:`NEMO_EMOTIONS`), the speaker as
        ``"nemo:EB0"`` and the sentence number in ``extra``.

    Raises:
        LabelParseError: the stem is not ``SPEAKER_emotion_N`` or the emotion is not one of nEMO's six.
    """
    stem = PurePath(path).stem
    m = _NEMO_RE.match(stem)
    if not m:
        raise LabelParseError(f"not an nEMO name (expected SPEAKER_emotion_N, e.g. EB0_anger_12): {stem!r}")
    speaker, emotion, sentence = m.groups()
    if emotion not in NEMO_EMOTIONS:
        raise LabelParseError(f"nEMO emotion {emotion!r} is not one of {sorted(NEMO_EMOTIONS)}: {stem!r}")
    return CorpusLabel(emotion=NEMO_EMOTIONS[emotion], speaker=f"nemo:{speaker.upper()}", extra={"sentence": sentence})
