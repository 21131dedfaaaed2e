"""Two-party (or n-party) stereo calls built from single-speaker recordings, with known turns.

Call recorders store each party on its own channel; what reaches a channel is that party's voice
plus a little of the other parties' (bleed: acoustic echo, crosstalk of a telephone hybrid), 20-30
dB down. :func:`build_call` lays utterances out as alternating turns with pauses and some barge-in
overlap, adds the bleed, and returns the channels with the span of every turn, so segments written
by ``submit --channels split`` can be scored against them (``benchmarks/calls.py``, the tests and
``examples/make_call.py`` use it). :func:`telephone` band-limits a call to a narrow-band telephone
channel (300-3400 Hz at 8 kHz; write it with ``soundfile`` subtype ``ULAW`` for G.711 mu-law).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
from scipy.signal import butter, sosfiltfilt

from ser_model.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Turn:
    """One utterance of a call.

    Attributes:
        index: position in the call (0-based).
        party: channel of the speaker (0-based).
        start_s: start in the call (seconds).
        end_s: end in the call (seconds).
        source: where the utterance came from (a path), for scoring against the file alone.
        speech_start_s: start of the utterance's speech in the call (seconds): its first frame
            within :data:`SPEECH_TOP_DB` of its loudest (recordings such as RAVDESS hold about a
            second of silence before and after the speech).
        speech_end_s: end of that speech (seconds).
    """

    index: int
    party: int
    start_s: float
    end_s: float
    source: str = ""
    speech_start_s: float = 0.0
    speech_end_s: float = 0.0


SPEECH_TOP_DB = 40.0
"""Frames (32 ms, 10 ms hop) within this many dB of an utterance's loudest frame are its speech."""


def speech_span(y: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[float, float]:
    """``(start_s, end_s)`` of the frames of ``y`` within :data:`SPEECH_TOP_DB` of its loudest frame."""
    win, hop = int(0.032 * sr), int(0.010 * sr)
    x = np.asarray(y, dtype=np.float64)
    if x.size < win:
        return 0.0, x.size / sr
    cs = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, x.size - win + 1, hop)
    db = 10 * np.log10(np.maximum((cs[starts + win] - cs[starts]) / win, 1e-12))
    idx = np.flatnonzero(db >= db.max() - SPEECH_TOP_DB)
    return float(starts[idx[0]] / sr), float((starts[idx[-1]] + win) / sr)


def build_call(
    utterances: Sequence[tuple[int, np.ndarray, str]],
    *,
    n_parties: int = 2,
    sr: int = SAMPLE_RATE,
    pause_s: tuple[float, float] = (0.4, 1.2),
    overlap_prob: float = 0.0,
    overlap_s: tuple[float, float] = (0.3, 0.8),
    bleed_db: float | tuple[float, float] | None = -25.0,
    lead_s: float = 0.5,
    bleed_delay_s: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, list[Turn]]:
    """Lay utterances out as turns of a call, one party per channel, with bleed between channels.

    Args:
        utterances: ``(party, samples, source)`` in call order; samples mono float at ``sr``.
        n_parties: channels of the call (every party in ``utterances`` must be below it).
        sr: sample rate (Hz) of the utterances and the call.
        pause_s: a pause drawn uniformly from this range (seconds) separates consecutive turns.
        overlap_prob: chance that a turn of another party starts before the previous turn ends
            (barge-in) instead of after a pause.
        overlap_s: how long such a barge-in overlaps (seconds), drawn uniformly.
        bleed_db: level (dB, negative) at which each party leaks into every other channel; a
            range draws one level per call; None: no bleed.
        lead_s: silence at the start and end of the call (seconds).
        bleed_delay_s: the bleed arrives this much later than the party's own channel (seconds;
            the echo of a telephone hybrid or a room, tens of milliseconds).
        rng: random generator (default a fixed seed 0).

    Returns:
        ``(call, turns)``: float32 array ``(n, n_parties)`` scaled to a peak of at most 0.99, and
        the :class:`Turn` of every utterance.

    Raises:
        ValueError: a party outside ``0 .. n_parties - 1`` or no utterances.
    """
    if not utterances:
        raise ValueError("no utterances")
    g = rng or np.random.default_rng(0)
    starts: list[int] = []
    pos = int(lead_s * sr)
    prev_end = pos
    prev_party: int | None = None
    for party, y, _ in utterances:
        if not 0 <= party < n_parties:
            raise ValueError(f"party {party} outside 0..{n_parties - 1}")
        if prev_party is None:
            start = pos
        elif party != prev_party and g.random() < overlap_prob:
            start = max(starts[-1], prev_end - int(g.uniform(*overlap_s) * sr))
        else:
            start = prev_end + int(g.uniform(*pause_s) * sr)
        starts.append(start)
        prev_end = max(prev_end, start + len(y))
        prev_party = party
    n = prev_end + int(lead_s * sr)
    dry = np.zeros((n, n_parties), dtype=np.float64)
    turns = []
    for i, ((party, y, src), a) in enumerate(zip(utterances, starts, strict=True)):
        dry[a : a + len(y), party] += np.asarray(y, dtype=np.float64)
        s0, s1 = speech_span(y, sr)
        turns.append(Turn(i, party, a / sr, (a + len(y)) / sr, src, a / sr + s0, a / sr + s1))
    call = dry.copy()
    if bleed_db is not None:
        level = float(g.uniform(*bleed_db)) if isinstance(bleed_db, tuple) else float(bleed_db)
        gain = 10 ** (level / 20)
        d = int(round(bleed_delay_s * sr))
        for c in range(n_parties):
            leak = dry.sum(axis=1) - dry[:, c]
            call[d:, c] += gain * leak[: n - d]
    peak = float(np.max(np.abs(call))) or 1.0
    if peak > 0.99:
        call *= 0.99 / peak
    return call.astype(np.float32), turns


def telephone(call: np.ndarray, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """A narrow-band telephone channel: 300-3400 Hz band-pass (4th-order Butterworth), 8 kHz.

    Args:
        call: samples ``(n,)`` or ``(n, channels)`` at ``sr``.
        sr: sample rate (Hz).

    Returns:
        ``(samples, 8000)``: float32 at 8 kHz, same channel layout; write with ``soundfile``
        subtype ``"ULAW"`` to add G.711 mu-law quantisation.
    """
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=sr, output="sos")
    y = sosfiltfilt(sos, np.asarray(call, dtype=np.float64), axis=0)
    y8 = soxr.resample(y, sr, 8000, quality="HQ")
    return np.clip(y8, -1.0, 1.0).astype(np.float32), 8000
