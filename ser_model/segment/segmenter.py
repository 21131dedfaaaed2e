"""Long recordings: block-wise decoding, segmentation and per-segment emotion classification.

A long recording (a call, an interview, a therapy session) gets one label per *segment* plus a
file-level aggregate, in memory that does not grow with the file's length:

1. **Block-wise decoding** (:func:`iter_blocks`): ``soundfile.SoundFile.read`` in blocks of
   :data:`DEFAULT_BLOCK_S` seconds, mono mix by averaging channels, then a streaming soxr resampler
   (``soxr.ResampleStream``, "HQ", the same SoX resampler :func:`ser_model.audio.load_audio` uses
   one-shot). The stream keeps the filter state across blocks, so block boundaries leave no
   artefacts: its output equals ``soxr.resample`` of the whole signal (tested to 1e-6).
2. **Segmentation** (:func:`iter_segments`), chosen by a spec string (:func:`parse_segment_mode`):

   - ``"vad"`` (default): speech/pause detection on frame energy, in the spirit of
     ``librosa.effects.split`` (frames within ``top_db`` of a reference level are "non-silent")
     but streaming, with rules for pauses, short and long segments (see :class:`VadParams`).
     The reference level needs the whole file, so VAD makes **two passes**: the first only
     histograms the frame levels (constant memory: 0.5 dB bins), the second segments. A
     running or absolute threshold was rejected: a running reference is biased at the start of
     a file and an absolute one fails on quiet recordings (RAVDESS speech sits at -35 to -45 dBFS
     RMS). The price is decoding the file twice (about 2-3 s per hour of 48 kHz WAV per pass on
     one core, see ``benchmarks/results/long_recording.md``).
   - ``"window:LEN:HOP"``: fixed windows of ``LEN`` seconds every ``HOP`` seconds.
   - ``"none"``: no segmentation; the file is classified whole.

3. **Classification** (:func:`classify_segments`): :func:`ser_model.features.extract_features`
   and :meth:`ser_model.model.ModelBundle.predict_proba` per segment, and the file-level
   aggregate: the duration-weighted mean of the segment probabilities.

Memory: at any time only the current decoded block, the samples from the start of the oldest
segment not yet emitted (at most ``2 * max_segment_s + merge_gap_s`` seconds in VAD mode, one
window in window mode) and the per-segment result dicts are held. At 16 kHz float32 that is a
few MB whatever the file's length.

Files shorter than ``min_duration_s`` (default :data:`DEFAULT_MIN_DURATION_S`) and mode
``"none"`` are not segmented: :func:`classify_segments` classifies them whole through
:func:`ser_model.audio.load_audio`, exactly as a single file, and reports one segment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import soundfile as sf
import soxr

from ser_model.audio import (
    MIN_DURATION_S,
    SAMPLE_RATE,
    SILENCE_PEAK_DBFS,
    AudioError,
    AudioInfo,
    load_audio,
    probe_audio,
)

DEFAULT_BLOCK_S = 10.0
"""Length (seconds, at the native rate) of the blocks read from the file."""

DEFAULT_MIN_DURATION_S = 10.0
"""Files shorter than this (seconds) are classified whole, not segmented."""

DEFAULT_SEGMENT_MODE = "vad"
"""Segmentation spec used when none is given."""

FRAME_LENGTH = 512
"""VAD frame length in samples at 16 kHz (32 ms), the analysis window of the features."""

HOP_LENGTH = 160
"""VAD frame hop in samples at 16 kHz (10 ms)."""

LEVEL_FLOOR_DB = -120.0
"""Frame levels are clipped below at this level (dBFS); digital silence reads -120 dB."""

BLEED_MARGIN_DB = 10.0
"""``--channels split``: a frame of a channel is its own speech only when its level is at least the
level of the loudest other channel minus this margin (dB). Bleed of a party into another channel
sits 20-30 dB below the party's own channel and is gated; two parties talking at once, each on its
own channel, are both kept unless one is more than this margin louder."""

BLEED_DELAY_S = 0.08
"""The other channels' level is taken as its maximum over the last ``BLEED_DELAY_S`` seconds, so a
delayed copy (echo of a telephone hybrid, up to this delay) is gated too."""

MIN_OWN_SPEECH_S = 0.25
"""A channel (or, in window mode, a window) with less own speech than this (seconds) has none."""

_HIST_LO, _HIST_HI, _HIST_STEP = -120.0, 10.0, 0.5  # dB level histogram of the first VAD pass
_REF_FRAMES = 10  # the reference level is exceeded by the loudest 0.1 s (10 frames) of the file
_NOISE_PERCENTILE = 10.0
_MIN_HEADROOM_DB = 6.0  # the threshold stays at least this far below the reference


class _Classifier(Protocol):
    labels: list[str]

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Segmentation modes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentMode:
    """A parsed segmentation spec.

    Attributes:
        kind: ``"vad"``, ``"window"`` or ``"none"``.
        window_s: window length (seconds), ``kind == "window"`` only.
        hop_s: window hop (seconds), ``kind == "window"`` only.
    """

    kind: Literal["vad", "window", "none"]
    window_s: float | None = None
    hop_s: float | None = None

    def __str__(self) -> str:
        if self.kind == "window":
            return f"window:{self.window_s:g}:{self.hop_s:g}"
        return self.kind


def parse_segment_mode(spec: str | SegmentMode | None) -> SegmentMode:
    """Parse a segmentation spec as given to ``ser-batch submit --segment``.

    Args:
        spec: ``"vad"``, ``"none"`` or ``"window:LEN:HOP"`` (seconds, e.g. ``"window:3:1.5"``);
            case and surrounding blanks are ignored. ``None`` means :data:`DEFAULT_SEGMENT_MODE`;
            a :class:`SegmentMode` is returned unchanged.

    Returns:
        The :class:`SegmentMode`.

    Raises:
        ValueError: unknown mode, wrong number of fields, non-numeric, non-finite or
            non-positive LEN/HOP (one-line message naming the valid forms).
    """
    if isinstance(spec, SegmentMode):
        return spec
    if spec is None:
        spec = DEFAULT_SEGMENT_MODE
    forms = "expected 'vad', 'none' or 'window:LEN:HOP' in seconds, e.g. 'window:3:1.5'"
    s = str(spec).strip().lower()
    if s in ("vad", "none"):
        return SegmentMode(kind=s)  # type: ignore[arg-type]
    if s.startswith("window"):
        parts = s.split(":")
        if len(parts) != 3 or parts[0] != "window":
            raise ValueError(f"invalid segment mode {spec!r}: {forms}")
        try:
            length, hop = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"invalid segment mode {spec!r}: LEN and HOP must be numbers; {forms}") from None
        if not (math.isfinite(length) and math.isfinite(hop)) or length <= 0 or hop <= 0:
            raise ValueError(f"invalid segment mode {spec!r}: LEN and HOP must be positive seconds; {forms}")
        if length < 0.1:
            raise ValueError(f"invalid segment mode {spec!r}: LEN must be at least 0.1 s (features need 100 ms)")
        return SegmentMode(kind="window", window_s=length, hop_s=hop)
    raise ValueError(f"unknown segment mode {spec!r}: {forms}")


@dataclass(frozen=True)
class VadParams:
    """Rules of the energy VAD (all times in seconds, levels in dB).

    A 32 ms frame (10 ms hop, centred as in librosa) is *active* when its RMS level is at or above
    ``threshold_db = min(max(ref_db - top_db, noise_db + noise_margin_db), ref_db - 6)``, where
    ``ref_db`` is the level exceeded by the loudest 1 s of frames of the whole file (robust to a
    single click, unlike the maximum that ``librosa.effects.split`` uses) and ``noise_db`` the
    10th percentile of frame levels (the noise floor, so that a steady background of a call is
    not taken for speech).

    Rules, applied in this order while streaming:

    1. Active frames separated by less than ``min_pause_s`` of inactive frames belong to one
       region (pauses inside and between words do not split).
    2. Each region is padded by ``pad_s`` on both sides, clipped to the file; a pause shorter
       than ``2 * pad_s`` is split in its middle, so segments never overlap. The padding gives
       :func:`ser_model.features.extract_features` the soft onsets and offsets that its own
       40 dB trim keeps in a single file (RAVDESS breaths and releases sit 35-45 dB below the
       peak): on the acceptance recording of ``tests/unit/test_segment.py`` (23 RAVDESS
       utterances), agreement of segment labels with single-file labels rose from 83 % with
       0.1 s to 87 % with 0.4-0.75 s.
    3. A region longer than ``max_segment_s`` is split into ``ceil(L / max_segment_s)`` equal
       parts. Streaming caveat: a region is buffered up to ``2 * max_segment_s``; beyond that a
       piece of exactly ``max_segment_s`` is emitted from its front and the rest continues, so
       only the last two parts of a very long region are equal-length.
    4. A segment shorter than ``min_segment_s`` is merged with its neighbour (previous or next)
       when the gap between them is at most ``merge_gap_s`` and the merged segment is not longer
       than ``max_segment_s`` (the pause becomes part of the segment); otherwise it is dropped
       (counted in :attr:`SegmentStats.n_dropped_short`): isolated sub-0.5 s blips are mostly
       coughs, clicks and breaths, and too short to carry an emotion.

    Lengths and gaps in rules 1 and 4 are those of the speech, without the padding; the
    ``max_segment_s`` limit of rules 3 and 4 includes it.

    Attributes:
        top_db: threshold below the reference level (dB); librosa's default is 60, 40 suits speech.
        noise_margin_db: the threshold is at least this far above the noise floor (dB).
        min_pause_s: shortest pause that separates two segments (s).
        min_segment_s: shorter segments are merged or dropped (s).
        max_segment_s: longer speech is split (s).
        merge_gap_s: largest gap across which a short segment is merged (s).
        pad_s: padding added on both sides of a speech region (s).
    """

    top_db: float = 40.0
    noise_margin_db: float = 10.0
    min_pause_s: float = 0.3
    min_segment_s: float = 0.5
    max_segment_s: float = 10.0
    merge_gap_s: float = 1.0
    pad_s: float = 0.5

    def __post_init__(self) -> None:
        if self.top_db <= 0 or self.noise_margin_db < 0:
            raise ValueError("top_db must be > 0 and noise_margin_db >= 0")
        if self.min_pause_s <= 0 or self.min_segment_s < 0 or self.merge_gap_s < 0 or self.pad_s < 0:
            raise ValueError("VAD times must be non-negative (min_pause_s > 0)")
        if self.max_segment_s < max(1.0, 2 * self.min_segment_s):
            raise ValueError("max_segment_s must be >= 1 s and >= 2 * min_segment_s")


@dataclass
class SegmentStats:
    """Facts gathered while segmenting; pass one to :func:`iter_segments` to receive them.

    Attributes:
        n_samples: samples decoded at 16 kHz.
        n_segments: segments yielded.
        n_dropped_short: VAD regions dropped as shorter than ``min_segment_s`` (not mergeable).
        ref_db: VAD reference level (dBFS RMS), None outside VAD mode.
        noise_db: VAD noise floor (dBFS RMS), None outside VAD mode.
        threshold_db: VAD activity threshold (dBFS RMS), None outside VAD mode.
        peak_dbfs: absolute sample peak of the 16 kHz mono signal (dBFS), VAD mode only.
    """

    n_samples: int = 0
    n_segments: int = 0
    n_dropped_short: int = 0
    ref_db: float | None = None
    noise_db: float | None = None
    threshold_db: float | None = None
    peak_dbfs: float | None = None


@dataclass(frozen=True)
class Segment:
    """One segment of a recording.

    Attributes:
        index: 0-based position among the yielded segments.
        start_s: start time in the file (seconds).
        end_s: end time in the file (seconds), exclusive.
        samples: mono float32 samples at 16 kHz, shape ``(round((end_s - start_s) * 16000),)``.
    """

    index: int
    start_s: float
    end_s: float
    samples: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        """``end_s - start_s`` (seconds)."""
        return self.end_s - self.start_s


# --------------------------------------------------------------------------------------------
# Block-wise decoding
# --------------------------------------------------------------------------------------------


def iter_blocks(
    path: str | os.PathLike[str],
    *,
    block_s: float = DEFAULT_BLOCK_S,
    info: AudioInfo | None = None,
) -> Iterator[np.ndarray]:
    """Decode a file of any length, rate and channel count as mono 16 kHz float32 blocks.

    Reads ``block_s`` seconds at a time with ``soundfile.SoundFile.read``, averages channels
    (as :func:`ser_model.audio.to_mono_16k`) and resamples with one ``soxr.ResampleStream``
    ("HQ") for the whole file, so the concatenated blocks equal ``soxr.resample`` of the whole
    signal (the stream keeps the filter state across blocks and is flushed with ``last=True``).

    Args:
        path: audio file (anything libsndfile reads).
        block_s: block length in seconds of input (> 0).
        info: header from :func:`ser_model.audio.probe_audio`, when the caller already has it.

    Yields:
        float32 arrays of shape ``(m,)`` at 16 kHz, ``m`` about ``block_s * 16000`` (the first and
        last differ by the resampler's delay; empty blocks are not yielded).

    Raises:
        AudioError: unreadable file or header, a decoding error mid-file, or NaN/Inf samples
            (the reason names the time of the block).
    """
    return _decoded_blocks(path, block_s=block_s, info=info, mix=True)


def iter_channel_blocks(
    path: str | os.PathLike[str],
    *,
    block_s: float = DEFAULT_BLOCK_S,
    info: AudioInfo | None = None,
) -> Iterator[np.ndarray]:
    """Decode a file of any length as 16 kHz float32 blocks with every channel kept.

    As :func:`iter_blocks` without the mono mix: one multi-channel ``soxr.ResampleStream`` ("HQ")
    for the whole file, so each channel of the concatenated blocks equals ``soxr.resample`` of that
    channel alone.

    Args:
        path: audio file (anything libsndfile reads).
        block_s: block length in seconds of input (> 0).
        info: header from :func:`ser_model.audio.probe_audio`.

    Yields:
        float32 arrays of shape ``(m, channels)`` at 16 kHz (empty blocks are not yielded).

    Raises:
        AudioError: as :func:`iter_blocks`.
    """
    return _decoded_blocks(path, block_s=block_s, info=info, mix=False)


def _decoded_blocks(
    path: str | os.PathLike[str], *, block_s: float, info: AudioInfo | None, mix: bool
) -> Iterator[np.ndarray]:
    """The decode loop of :func:`iter_blocks` (``mix``: channels averaged before one mono resampler,
    blocks ``(m,)``) and :func:`iter_channel_blocks` (one multi-channel resampler, blocks ``(m, channels)``)."""
    if block_s <= 0:
        raise ValueError("block_s must be > 0")
    if info is None:
        info = probe_audio(path)
    sr, n_ch = info.sample_rate, 1 if mix else info.channels
    block_frames = max(1, int(round(block_s * sr)))
    stream = soxr.ResampleStream(sr, SAMPLE_RATE, n_ch, dtype="float32", quality="HQ") if sr != SAMPLE_RATE else None
    pos = 0  # input frames read so far
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(block_frames, dtype="float32", always_2d=True)
                n = data.shape[0]
                last = n < block_frames
                if n and not np.isfinite(data).all():
                    bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
                    raise AudioError(f"audio contains NaN or infinite sample values (at {(pos + bad) / sr:.2f} s)")
                pos += n
                if mix:
                    data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                out = stream.resample_chunk(np.ascontiguousarray(data), last=last) if stream is not None else data
                del data
                if out.shape[0]:
                    out = np.ascontiguousarray(out, dtype=np.float32)
                    yield out if mix else out.reshape(-1, n_ch)
                if last:
                    break
    except sf.LibsndfileError as e:
        raise AudioError(f"cannot decode audio at {pos / sr:.2f} s: {_short(e)}") from None
    except (OSError, RuntimeError) as e:
        raise AudioError(f"cannot decode audio at {pos / sr:.2f} s: {_short(e)}") from None


class _Framer:
    """Streaming frame RMS levels (dB): frame ``i`` is centred on sample ``i * HOP_LENGTH``.

    Equivalent to framing the whole signal padded with ``FRAME_LENGTH // 2`` zeros on both sides
    (``librosa`` ``center=True``, constant padding), giving ``1 + n // HOP_LENGTH`` frames.
    """

    def __init__(self) -> None:
        self.tail = np.zeros(FRAME_LENGTH // 2, dtype=np.float64)
        self.n_in = 0  # samples received
        self.n_frames = 0  # frames produced

    def _frames(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        if x.size < FRAME_LENGTH:
            return np.empty(0), 0
        k = (x.size - FRAME_LENGTH) // HOP_LENGTH + 1
        cs = np.concatenate([[0.0], np.cumsum(x * x)])
        starts = np.arange(k) * HOP_LENGTH
        ms = (cs[starts + FRAME_LENGTH] - cs[starts]) / FRAME_LENGTH
        return 10.0 * np.log10(np.maximum(ms, 10 ** (LEVEL_FLOOR_DB / 10))), k

    def push(self, block: np.ndarray) -> np.ndarray:
        """Levels (dB) of the frames completed by ``block``, shape ``(k,)``."""
        self.n_in += block.size
        x = np.concatenate([self.tail, block.astype(np.float64)])
        db, k = self._frames(x)
        self.tail = x[k * HOP_LENGTH :]
        self.n_frames += k
        return db

    def finish(self) -> np.ndarray:
        """Levels of the remaining frames (end padding), up to ``1 + n // HOP_LENGTH`` in total."""
        x = np.concatenate([self.tail, np.zeros(FRAME_LENGTH // 2)])
        db, _ = self._frames(x)
        want = 1 + self.n_in // HOP_LENGTH - self.n_frames
        db = db[: max(want, 0)]
        self.n_frames += db.size
        return db


class ChannelGate:
    """Frame levels of one channel and which of its frames are its own speech, not bleed.

    Fed the multi-channel blocks of :func:`iter_channel_blocks`, it frames every channel as
    :class:`_Framer` does and compares, frame by frame, the channel's level with the loudest other
    channel's level over the last :data:`BLEED_DELAY_S`: a frame is *own* when
    ``level_c >= max_other - BLEED_MARGIN_DB``. A party leaking into another channel 20-30 dB down
    is therefore never own speech of that channel, whatever the absolute levels.

    Args:
        channel: the channel judged (0-based).
        n_channels: channels of the blocks.
        margin_db: :data:`BLEED_MARGIN_DB` (read when the gate is made) unless given.
    """

    def __init__(self, channel: int, n_channels: int, *, margin_db: float | None = None) -> None:
        if not 0 <= channel < n_channels:
            raise ValueError(f"channel {channel} out of range for {n_channels} channel(s)")
        self.channel, self.n_channels = channel, n_channels
        self.margin_db = BLEED_MARGIN_DB if margin_db is None else margin_db
        self.framers = [_Framer() for _ in range(n_channels)]
        self.k = max(1, int(round(BLEED_DELAY_S * SAMPLE_RATE / HOP_LENGTH)) + 1)
        self.tail = np.full(self.k - 1, LEVEL_FLOOR_DB)

    def _judge(self, dbs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        own_db = dbs[self.channel]
        if self.n_channels == 1:
            return own_db, np.ones(own_db.size, dtype=bool)
        other = np.max(np.stack([d for i, d in enumerate(dbs) if i != self.channel]), axis=0)
        ext = np.concatenate([self.tail, other])
        self.tail = ext[ext.size - (self.k - 1) :] if self.k > 1 else ext[:0]
        trailing = np.lib.stride_tricks.sliding_window_view(ext, self.k).max(axis=1) if other.size else other
        return own_db, own_db >= trailing - self.margin_db

    def push(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(levels_db, own)`` of the frames completed by ``block`` (shape ``(m, n_channels)``)."""
        return self._judge([f.push(block[:, i]) for i, f in enumerate(self.framers)])

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """``(levels_db, own)`` of the remaining frames."""
        return self._judge([f.finish() for f in self.framers])

    @property
    def n_in(self) -> int:
        """Samples per channel received."""
        return self.framers[0].n_in


def _histogram_bin(db: np.ndarray) -> np.ndarray:
    n_bins = int(round((_HIST_HI - _HIST_LO) / _HIST_STEP))
    return np.clip(((db - _HIST_LO) / _HIST_STEP).astype(np.int64), 0, n_bins - 1)


def measure_levels(
    path: str | os.PathLike[str],
    *,
    params: VadParams | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    info: AudioInfo | None = None,
    channel: int | None = None,
) -> tuple[float, float, float, float]:
    """First VAD pass: the reference level, noise floor, threshold and peak of a whole file.

    Streams the file once (:func:`iter_blocks`) and keeps only a 0.5 dB histogram of the 32 ms
    frame RMS levels, so memory is constant.

    Args:
        path: audio file.
        params: VAD rules (``top_db``, ``noise_margin_db``); default :class:`VadParams`.
        block_s: decoding block length (seconds).
        info: header from :func:`ser_model.audio.probe_audio`.
        channel: measure this channel (0-based) alone instead of the mono mix; its noise floor
            comes from its own frames only (:class:`ChannelGate`: another party's bleed would
            otherwise raise the floor, and the threshold, above a quiet party's speech).

    Returns:
        ``(ref_db, noise_db, threshold_db, peak_dbfs)``: level exceeded by the loudest 1 s of frames
        (dBFS RMS), 10th-percentile frame level (dBFS RMS), activity threshold (dBFS RMS, see
        :class:`VadParams`), absolute sample peak of the 16 kHz mono signal (dBFS).

    Raises:
        AudioError: as :func:`iter_blocks`; no samples; silent (peak at or below
            :data:`ser_model.audio.SILENCE_PEAK_DBFS`, the rule of ``load_audio``).
    """
    p = params or VadParams()
    n_bins = int(round((_HIST_HI - _HIST_LO) / _HIST_STEP))
    hist = np.zeros(n_bins, dtype=np.int64)
    framer = _Framer()
    peak = 0.0
    if channel is None:
        for block in iter_blocks(path, block_s=block_s, info=info):
            peak = max(peak, float(np.max(np.abs(block))))
            hist += np.bincount(_histogram_bin(framer.push(block)), minlength=n_bins)
        hist += np.bincount(_histogram_bin(framer.finish()), minlength=n_bins)
        n_in = framer.n_in
    else:
        # the noise floor from the channel's own frames (and shared silence) only: another party's
        # bleed would otherwise raise it, and the threshold, above a quiet party's speech
        gate = ChannelGate(channel, info.channels)
        own_hist = np.zeros(n_bins, dtype=np.int64)
        for block in iter_channel_blocks(path, block_s=block_s, info=info):
            peak = max(peak, float(np.max(np.abs(block[:, channel]))))
            db, own = gate.push(block)
            hist += np.bincount(_histogram_bin(db), minlength=n_bins)
            own_hist += np.bincount(_histogram_bin(db[own]), minlength=n_bins)
        db, own = gate.finish()
        hist += np.bincount(_histogram_bin(db), minlength=n_bins)
        own_hist += np.bincount(_histogram_bin(db[own]), minlength=n_bins)
        n_in = gate.n_in
    total = int(hist.sum())
    if n_in == 0 or total == 0:
        raise AudioError("no audio samples could be decoded (truncated file)")
    if peak <= 10 ** (SILENCE_PEAK_DBFS / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        what = "recording" if channel is None else f"channel {channel}"
        raise AudioError(f"silent {what}: peak level {level} dBFS < {SILENCE_PEAK_DBFS:.0f} dBFS")
    return (*_levels_from_hist(hist, p, None if channel is None else own_hist), 20.0 * math.log10(peak))


def _levels_from_hist(
    hist: np.ndarray, p: VadParams, noise_hist: np.ndarray | None = None
) -> tuple[float, float, float]:
    """``(ref_db, noise_db, threshold_db)`` from a histogram of frame levels (see :class:`VadParams`).

    ``noise_hist`` (a channel's own frames, without another party's bleed) gives the noise floor
    when given; the reference level always comes from ``hist`` (every frame).
    """
    n_bins = hist.size
    total = int(hist.sum())
    centres = _HIST_LO + (np.arange(n_bins) + 0.5) * _HIST_STEP
    from_top = np.cumsum(hist[::-1])
    ref_db = float(centres[::-1][int(np.searchsorted(from_top, min(_REF_FRAMES, total)))])
    nh = hist if noise_hist is None or int(noise_hist.sum()) == 0 else noise_hist
    cum = np.cumsum(nh)
    noise_db = float(centres[int(np.searchsorted(cum, math.ceil(int(nh.sum()) * _NOISE_PERCENTILE / 100)))])
    threshold = min(max(ref_db - p.top_db, noise_db + p.noise_margin_db), ref_db - _MIN_HEADROOM_DB)
    return ref_db, noise_db, threshold


# --------------------------------------------------------------------------------------------
# Streaming segmentation
# --------------------------------------------------------------------------------------------


class _SampleBuffer:
    """The 16 kHz samples from absolute index ``base`` on; older samples are discarded."""

    def __init__(self) -> None:
        self.base = 0
        self.data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.base + self.data.size

    def append(self, block: np.ndarray) -> None:
        self.data = np.concatenate([self.data, block])

    def get(self, a: int, b: int) -> np.ndarray:
        if a < self.base:
            raise AssertionError(f"samples from {a} were discarded (buffer starts at {self.base})")
        return self.data[a - self.base : b - self.base].copy()

    def discard_before(self, a: int) -> None:
        a = min(a, self.end)
        if a > self.base:
            self.data = self.data[a - self.base :].copy()
            self.base = a


_Range = tuple[int, int, int, int]
"""``(start, end, speech_start, speech_end)`` in samples: the segment with padding, and its speech."""


class _VadSegmenter:
    """Turns a stream of frame activity flags into segment sample ranges (rules of VadParams)."""

    def __init__(self, p: VadParams, stats: SegmentStats) -> None:
        sr = SAMPLE_RATE
        self.min_pause_frames = max(1, int(round(p.min_pause_s * sr / HOP_LENGTH)))
        self.pad = int(round(p.pad_s * sr))
        # a region is closed once the pause is long enough to be a pause and to hold both paddings
        self.close_frames = max(self.min_pause_frames, math.ceil(2 * self.pad / HOP_LENGTH))
        self.min_len = int(round(p.min_segment_s * sr))
        self.max_len = int(round(p.max_segment_s * sr))
        self.merge_gap = int(round(p.merge_gap_s * sr))
        self.stats = stats
        self.frame = 0  # index of the next frame
        self.in_speech = False
        self.last_active = -1  # last active frame of the open region
        self.open_start = 0  # sample where the open region (with padding) starts
        self.speech_start = 0  # sample where the speech of the open region starts
        self.last_end = 0  # end sample of the last range handed on (pending or emitted)
        self.pending: _Range | None = None

    def keep_from(self) -> int:
        """Earliest sample still needed."""
        cands = [self.frame * HOP_LENGTH - self.pad - FRAME_LENGTH]
        if self.pending is not None:
            cands.append(self.pending[0])
        if self.in_speech:
            cands.append(self.open_start)
        return max(0, min(cands))

    def _offer(self, r: _Range) -> list[_Range]:
        """Hand a range to the merge stage (rule 4); returns ranges ready to emit."""
        self.last_end = r[1]
        if self.pending is None:
            self.pending = r
            return []
        p = self.pending
        short = p[3] - p[2] < self.min_len or r[3] - r[2] < self.min_len
        if short and r[2] - p[3] <= self.merge_gap and r[1] - p[0] <= self.max_len:
            self.pending = (p[0], r[1], p[2], r[3])
            return []
        out = self._release()
        self.pending = r
        return out

    def _release(self) -> list[_Range]:
        if self.pending is None:
            return []
        r, self.pending = self.pending, None
        if r[3] - r[2] < self.min_len:
            self.stats.n_dropped_short += 1
            return []
        return [r]

    def _open(self, f0: int) -> None:
        self.in_speech = True
        self.speech_start = f0 * HOP_LENGTH
        self.open_start = max(self.speech_start - self.pad, self.last_end, 0)

    def _close(self, end: int) -> list[_Range]:
        """Close the open region at sample ``end`` (padding included); rule 3 equal split."""
        self.in_speech = False
        speech_end = min((self.last_active + 1) * HOP_LENGTH, end)
        a, length = self.open_start, end - self.open_start
        n_parts = max(1, math.ceil(length / self.max_len))
        edges = [a + round(i * length / n_parts) for i in range(n_parts + 1)]
        out: list[_Range] = []
        for s, e in zip(edges[:-1], edges[1:], strict=True):
            out += self._offer((s, e, max(s, min(self.speech_start, e)), min(e, max(speech_end, s))))
        return out

    def push(self, active: np.ndarray, n_available: int) -> list[_Range]:
        """Consume frame flags ``(k,)``; ``n_available`` samples have been decoded so far."""
        out: list[_Range] = []
        if active.size == 0:
            return out
        # iterate over runs of equal flags rather than frames
        change = np.flatnonzero(np.diff(active.astype(np.int8))) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [active.size]])
        for s, e in zip(starts, ends, strict=True):
            f0, f1 = self.frame + int(s), self.frame + int(e)  # frames [f0, f1)
            if active[s]:
                gap = f0 - self.last_active - 1
                if self.in_speech and gap >= self.min_pause_frames:
                    # a pause too short for both paddings: split it in the middle
                    out += self._close((self.last_active + 1) * HOP_LENGTH + min(self.pad, gap * HOP_LENGTH // 2))
                if not self.in_speech:
                    self._open(f0)
                self.last_active = f1 - 1
                # rule 3, streaming: cut a max-length piece off the front of a very long region
                while f1 * HOP_LENGTH - self.open_start >= 2 * self.max_len:
                    a = self.open_start
                    out += self._offer((a, a + self.max_len, max(a, self.speech_start), a + self.max_len))
                    self.open_start = a + self.max_len
                    self.speech_start = max(self.speech_start, self.open_start)
            else:
                if self.in_speech and f1 - 1 - self.last_active >= self.close_frames:
                    out += self._close(min((self.last_active + 1) * HOP_LENGTH + self.pad, n_available))
                if (
                    not self.in_speech
                    and self.pending is not None
                    and f1 * HOP_LENGTH - self.pending[3] > self.merge_gap
                ):
                    out += self._release()
        self.frame += active.size
        return out

    def finish(self, n_total: int) -> list[_Range]:
        out: list[_Range] = []
        if self.in_speech:
            out += self._close(min((self.last_active + 1) * HOP_LENGTH + self.pad, n_total))
        out += self._release()
        return out


def iter_segments(
    path: str | os.PathLike[str],
    mode: str | SegmentMode | None = None,
    *,
    vad: VadParams | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    info: AudioInfo | None = None,
    stats: SegmentStats | None = None,
    channel: int | None = None,
) -> Iterator[Segment]:
    """Stream the segments of a recording in bounded memory.

    Args:
        path: audio file of any length, sample rate and channel count.
        mode: segmentation spec or :class:`SegmentMode` (see :func:`parse_segment_mode`); default
            ``"vad"``. ``"none"`` yields the whole file as one segment (memory then grows with the
            file; callers classify such files with :func:`ser_model.audio.load_audio` instead).
        vad: VAD rules (mode ``"vad"``); default :class:`VadParams`.
        block_s: decoding block length (seconds).
        info: header from :func:`ser_model.audio.probe_audio`.
        stats: filled in while iterating (sample count, dropped regions, VAD levels).
        channel: segment this channel (0-based) of a multi-channel file instead of the mono mix:
            only its own speech counts (frames gated by :class:`ChannelGate`: bleed of another
            channel's party never starts or extends a segment; in window mode a window needs
            :data:`MIN_OWN_SPEECH_S` of own speech above the VAD threshold); segment samples are
            that channel's. Mode ``"none"`` is not supported with a channel.

    Yields:
        :class:`Segment` in time order, non-overlapping in VAD mode. Window mode
        (``window:LEN:HOP``): windows ``[k * HOP, k * HOP + LEN)`` for every ``k`` whose window
        fits in the file, then, if these leave the end uncovered by more than 10 ms, one last
        window of length LEN aligned to the end of the file; a file shorter than LEN gives one
        window over the whole file. Every window thus has length LEN and the file is covered
        when ``HOP <= LEN``.

    Raises:
        AudioError: as :func:`iter_blocks`; VAD mode: silent file (see :func:`measure_levels`).
        ValueError: invalid ``mode``.

    Memory: one decoded block plus the samples of the open segment (VAD: at most about
    ``2 * max_segment_s + merge_gap_s`` s; window: LEN s) — independent of the file's length.
    """
    m = parse_segment_mode(mode)
    st = stats if stats is not None else SegmentStats()
    if info is None:
        info = probe_audio(path)
    if channel is not None:
        if m.kind == "none":
            raise ValueError("segment mode 'none' has no segments per channel")
        if not 0 <= channel < info.channels:
            raise ValueError(f"channel {channel} out of range: the file has {info.channels} channel(s)")
        yield from _iter_channel(path, m, vad or VadParams(), block_s, info, st, channel)
    elif m.kind == "vad":
        yield from _iter_vad(path, vad or VadParams(), block_s, info, st)
    elif m.kind == "window":
        yield from _iter_windows(path, m, block_s, info, st)
    else:
        parts = []
        for block in iter_blocks(path, block_s=block_s, info=info):
            parts.append(block)
            st.n_samples += block.size
        y = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        if y.size:
            st.n_segments = 1
            yield Segment(0, 0.0, y.size / SAMPLE_RATE, y)


def _iter_vad(
    path: str | os.PathLike[str], p: VadParams, block_s: float, info: AudioInfo, st: SegmentStats
) -> Iterator[Segment]:
    st.ref_db, st.noise_db, st.threshold_db, st.peak_dbfs = measure_levels(path, params=p, block_s=block_s, info=info)
    threshold = st.threshold_db
    buf = _SampleBuffer()
    framer = _Framer()
    seg = _VadSegmenter(p, st)

    def emit(ranges: list[_Range]) -> Iterator[Segment]:
        for a, b, _, _ in ranges:
            yield Segment(st.n_segments, a / SAMPLE_RATE, b / SAMPLE_RATE, buf.get(a, b))
            st.n_segments += 1

    for block in iter_blocks(path, block_s=block_s, info=info):
        buf.append(block)
        st.n_samples += block.size
        db = framer.push(block)
        yield from emit(seg.push(db >= threshold, buf.end))
        buf.discard_before(seg.keep_from())
    db = framer.finish()
    yield from emit(seg.push(db >= threshold, buf.end))
    yield from emit(seg.finish(buf.end))


def _iter_channel(
    path: str | os.PathLike[str],
    m: SegmentMode,
    p: VadParams,
    block_s: float,
    info: AudioInfo,
    st: SegmentStats,
    channel: int,
) -> Iterator[Segment]:
    """VAD or window segments of one channel, counting only its own speech (see :class:`ChannelGate`)."""
    st.ref_db, st.noise_db, st.threshold_db, st.peak_dbfs = measure_levels(
        path, params=p, block_s=block_s, info=info, channel=channel
    )
    threshold = st.threshold_db
    gate = ChannelGate(channel, info.channels)
    buf = _SampleBuffer()
    if m.kind == "vad":
        seg = _VadSegmenter(p, st)

        def emit(ranges: list[_Range]) -> Iterator[Segment]:
            for a, b, _, _ in ranges:
                yield Segment(st.n_segments, a / SAMPLE_RATE, b / SAMPLE_RATE, buf.get(a, b))
                st.n_segments += 1

        for block in iter_channel_blocks(path, block_s=block_s, info=info):
            buf.append(block[:, channel])
            st.n_samples += block.shape[0]
            db, own = gate.push(block)
            yield from emit(seg.push((db >= threshold) & own, buf.end))
            buf.discard_before(seg.keep_from())
        db, own = gate.finish()
        yield from emit(seg.push((db >= threshold) & own, buf.end))
        yield from emit(seg.finish(buf.end))
        return
    # window mode: the windows of the channel that hold enough own speech (the channel's samples
    # are held in memory here: 64 kB per second of call at 16 kHz, unlike the VAD path)
    assert m.window_s is not None and m.hop_s is not None
    length = max(1, int(round(m.window_s * SAMPLE_RATE)))
    hop = max(1, int(round(m.hop_s * SAMPLE_RATE)))
    need = max(1, int(round(MIN_OWN_SPEECH_S * SAMPLE_RATE / HOP_LENGTH)))
    counts = [0]  # cumulative own-speech frames: counts[i] = own frames among frames 0 .. i-1

    def own_frames(a: int, b: int) -> int:
        i0, i1 = -(-a // HOP_LENGTH), min((b - 1) // HOP_LENGTH + 1, len(counts) - 1)
        return counts[i1] - counts[min(i0, i1)] if i1 > i0 else 0

    def add(db: np.ndarray, own: np.ndarray) -> None:
        c = np.cumsum((db >= threshold) & own) + counts[-1]
        counts.extend(int(v) for v in c)

    windows: list[tuple[int, int]] = []
    next_start = 0
    all_samples: list[np.ndarray] = []
    for block in iter_channel_blocks(path, block_s=block_s, info=info):
        all_samples.append(block[:, channel].copy())
        add(*gate.push(block))
    add(*gate.finish())
    y = np.concatenate(all_samples) if all_samples else np.zeros(0, dtype=np.float32)
    st.n_samples = y.size
    while next_start + length <= y.size:
        windows.append((next_start, next_start + length))
        next_start += hop
    if y.size and (not windows or y.size - windows[-1][1] > SAMPLE_RATE // 100):
        windows.append((max(0, y.size - length), y.size))
    for a, b in windows:
        if own_frames(a, b) < need:
            st.n_dropped_short += 1
            continue
        yield Segment(st.n_segments, a / SAMPLE_RATE, b / SAMPLE_RATE, y[a:b].copy())
        st.n_segments += 1


def _iter_windows(
    path: str | os.PathLike[str], m: SegmentMode, block_s: float, info: AudioInfo, st: SegmentStats
) -> Iterator[Segment]:
    assert m.window_s is not None and m.hop_s is not None
    length = max(1, int(round(m.window_s * SAMPLE_RATE)))
    hop = max(1, int(round(m.hop_s * SAMPLE_RATE)))
    tolerance = SAMPLE_RATE // 100  # 10 ms: resampler rounding at the very end
    buf = _SampleBuffer()
    next_start = 0
    last_end = 0
    for block in iter_blocks(path, block_s=block_s, info=info):
        buf.append(block)
        st.n_samples += block.size
        while next_start + length <= buf.end:
            yield Segment(st.n_segments, next_start / SAMPLE_RATE, (next_start + length) / SAMPLE_RATE,
                          buf.get(next_start, next_start + length))  # fmt: skip
            st.n_segments += 1
            last_end = next_start + length
            next_start += hop
        buf.discard_before(min(next_start, buf.end - length))
    n = buf.end
    if n > 0 and (st.n_segments == 0 or n - last_end > tolerance):
        a = max(0, n - length)
        yield Segment(st.n_segments, a / SAMPLE_RATE, n / SAMPLE_RATE, buf.get(a, n))
        st.n_segments += 1


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


@dataclass
class SegmentedResult:
    """Per-segment emotions of one file and their file-level aggregate.

    Attributes:
        segments: one dict per classified segment, in time order:
            ``{"index": int (0-based, contiguous over classified segments), "start_s": float,
            "end_s": float, "emotion": str, "confidence": float, "probabilities": {label: p}}``.
        emotion: argmax of the aggregate probabilities.
        confidence: aggregate probability of ``emotion``.
        probabilities: duration-weighted mean of the segment probabilities, ``{label: p}``
            (sums to 1).
        n_segments: number of classified segments (``len(segments)``).
        n_skipped: segments that could not be classified (too little sound for the features,
            silent windows) plus VAD regions dropped as too short.
        segmented_duration_s: total duration of the classified segments (seconds).
        duration_s: duration of the file (seconds, from the header).
        sample_rate: native sample rate (Hz).
        channels: native channel count.
        mode: the segmentation spec applied (``"none"`` when the file was classified whole).
        segmented: False when the file was classified whole (shorter than ``min_duration_s``
            or mode ``"none"``); ``segments`` then holds one segment covering the whole file.
        ood_score: duration-weighted mean out-of-domain score of the segments (None when the
            model has no out-of-domain detector); every segment dict carries its own.
        out_of_domain: ``ood_score`` above the model's threshold.
        low_confidence: the aggregate ``confidence`` below the model's low-confidence threshold.
    """

    segments: list[dict[str, Any]]
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    n_segments: int
    n_skipped: int
    segmented_duration_s: float
    duration_s: float
    sample_rate: int
    channels: int
    mode: str
    segmented: bool
    ood_score: float | None = None
    out_of_domain: bool | None = None
    low_confidence: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all attributes."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _segment_dict(
    index: int, start_s: float, end_s: float, labels: list[str], proba: np.ndarray, flags: tuple[Any, Any, Any]
) -> dict[str, Any]:
    probs = {lab: float(p) for lab, p in zip(labels, proba, strict=True)}
    best = max(probs, key=probs.__getitem__)
    score, ood, low = flags
    return {
        "index": index,
        "start_s": float(start_s),
        "end_s": float(end_s),
        "emotion": best,
        "confidence": probs[best],
        "probabilities": probs,
        "ood_score": None if score is None else float(score),
        "out_of_domain": None if ood is None else bool(ood),
        "low_confidence": None if low is None else bool(low),
    }


def _row_flags(bundle: _Classifier, X: np.ndarray, proba: np.ndarray) -> list[tuple[Any, Any, Any]]:
    """Per-row ``(ood_score, out_of_domain, low_confidence)`` from a bundle with ``flags`` (else Nones)."""
    flags = getattr(bundle, "flags", None)
    f = flags(X, proba) if flags is not None else (None, None, None)
    n = X.shape[0]
    return [tuple(None if a is None else a[i] for a in f) for i in range(n)]  # type: ignore[misc]


def _aggregate_flags(
    bundle: _Classifier, segments: list[dict[str, Any]], confidence: float
) -> tuple[float | None, bool | None, bool | None]:
    """File-level flags of a segmented file: the duration-weighted mean score and the aggregate confidence."""
    scores = [(s["end_s"] - s["start_s"], s.get("ood_score")) for s in segments]
    flags_from_scores = getattr(bundle, "flags_from_scores", None)
    if flags_from_scores is None or any(v is None for _, v in scores):
        return None, None, None
    w = np.array([d for d, _ in scores])
    score = float(np.dot(w, [v for _, v in scores]) / w.sum())
    f = flags_from_scores(np.array([score]), np.array([confidence]))
    return score, bool(f.out_of_domain[0]), bool(f.low_confidence[0])


def own_speech_span(
    path: str | os.PathLike[str],
    channel: int,
    *,
    vad: VadParams | None = None,
    max_duration_s: float | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    info: AudioInfo | None = None,
) -> np.ndarray:
    """The samples of one channel from its first to its last frame of own speech (plus padding).

    For a channel classified whole (shorter than ``min_duration_s``, or mode ``"none"``): frames at
    or above the VAD threshold of the channel (:class:`VadParams`) that are not bleed
    (:class:`ChannelGate`) are its own speech; the span from the first to the last of them, padded
    by ``vad.pad_s`` on both sides, is returned.

    Args:
        path: multi-channel audio file.
        channel: 0-based channel.
        vad: threshold rules and padding; default :class:`VadParams`.
        max_duration_s: refuse longer files (seconds), as :func:`ser_model.audio.load_audio`.
        block_s: decoding block length (seconds).
        info: header from :func:`ser_model.audio.probe_audio`.

    Returns:
        float32 samples at 16 kHz, shape ``(n,)``.

    Raises:
        AudioError: unreadable or NaN audio, too long, a silent channel, or less than
            :data:`MIN_OWN_SPEECH_S` of own speech (``"no speech of its own on channel N ..."``).
    """
    p = vad or VadParams()
    if info is None:
        info = probe_audio(path)
    if info.frames <= 0:
        raise AudioError("no audio samples (header-only or truncated file)")
    if info.duration_s < MIN_DURATION_S:
        raise AudioError(f"recording too short: {info.duration_s:.3f} s < {MIN_DURATION_S} s minimum")
    if max_duration_s is not None and info.duration_s > max_duration_s:
        raise AudioError(
            f"recording too long: {info.duration_s:.1f} s > limit of {max_duration_s:.0f} s (SER_MAX_DURATION_S)"
        )
    blocks = list(iter_channel_blocks(path, block_s=block_s, info=info))
    if not blocks:
        raise AudioError("no audio samples could be decoded (truncated file)")
    data = np.concatenate(blocks)
    y = np.ascontiguousarray(data[:, channel])
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak <= 10 ** (SILENCE_PEAK_DBFS / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise AudioError(f"silent channel {channel}: peak level {level} dBFS < {SILENCE_PEAK_DBFS:.0f} dBFS")
    gate = ChannelGate(channel, data.shape[1])
    db1, own1 = gate.push(data)
    db2, own2 = gate.finish()
    db, own = np.concatenate([db1, db2]), np.concatenate([own1, own2])
    n_bins = int(round((_HIST_HI - _HIST_LO) / _HIST_STEP))
    _, _, threshold = _levels_from_hist(
        np.bincount(_histogram_bin(db), minlength=n_bins), p, np.bincount(_histogram_bin(db[own]), minlength=n_bins)
    )
    idx = np.flatnonzero((db >= threshold) & own)
    if idx.size * HOP_LENGTH < MIN_OWN_SPEECH_S * SAMPLE_RATE:
        raise AudioError(
            f"no speech of its own on channel {channel}: only bleed from other channels, silence or noise"
            f" ({idx.size * HOP_LENGTH / SAMPLE_RATE:.2f} s of own speech < {MIN_OWN_SPEECH_S} s)"
        )
    pad = int(round(p.pad_s * SAMPLE_RATE))
    a = max(0, int(idx[0]) * HOP_LENGTH - pad)
    b = min(y.size, int(idx[-1]) * HOP_LENGTH + pad)
    return y[a:b].copy()


def classify_segments(
    path: str | os.PathLike[str],
    bundle: _Classifier,
    mode: str | SegmentMode | None = None,
    *,
    min_duration_s: float = DEFAULT_MIN_DURATION_S,
    vad: VadParams | None = None,
    max_duration_s: float | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    batch_size: int = 32,
    info: AudioInfo | None = None,
    channel: int | None = None,
) -> SegmentedResult:
    """Classify the segments of a recording and aggregate them, in bounded memory.

    Files shorter than ``min_duration_s`` and mode ``"none"`` are classified whole, exactly as a
    single file (:func:`ser_model.audio.load_audio`, then the features of the whole signal), and
    reported as one segment ``[0, duration]`` with ``segmented=False``. Longer files are
    streamed through :func:`iter_segments`; features are computed per segment with the bundle's
    ``extract`` (:meth:`ser_model.model.ModelBundle.extract`; :func:`ser_model.features.extract_features`
    for a bundle without one) and classified in batches of ``batch_size``.

    Args:
        path: audio file.
        bundle: the model: anything with ``labels`` and ``predict_proba(X: (n, N_FEATURES)) ->
            (n, len(labels))``, e.g. :class:`ser_model.model.ModelBundle`.
        mode: segmentation spec (see :func:`parse_segment_mode`); default ``"vad"``.
        min_duration_s: files shorter than this (seconds) are not segmented.
        vad: VAD rules; default :class:`VadParams`.
        max_duration_s: longest file (seconds) classified whole, passed to ``load_audio``
            (the limit guards whole-file decoding; segmented files are streamed and not limited).
        block_s: decoding block length (seconds).
        batch_size: segments per ``predict_proba`` call.
        info: header from :func:`ser_model.audio.probe_audio`.
        channel: classify this channel (0-based) of a multi-channel file as its own recording
            (``submit --channels split``): segments come from its own speech only (bleed of the
            other channels' parties is gated, see :class:`ChannelGate`); a channel classified whole
            is cropped to its own speech (plus ``vad.pad_s``) first. None: the mono mix.

    Returns:
        The :class:`SegmentedResult`.

    Raises:
        AudioError: unreadable, NaN/Inf or silent audio (one-line reasons of
            :mod:`ser_model.audio`), or ``"no speech segments found ..."`` when no segment could
            be classified. A segment with too little sound is skipped and counted, not fatal.
            With a channel: ``"no speech of its own on channel N ..."`` when the channel holds
            only bleed or silence.
        ValueError: invalid ``mode``, or a channel the file does not have.
    """
    from ser_model.features import extract_features  # the public API only

    extract = getattr(bundle, "extract", extract_features)  # a bundle knows its feature set (fast / accurate)
    m = parse_segment_mode(mode)
    if info is None:
        info = probe_audio(path)
    labels = list(bundle.labels)
    if channel is not None and not 0 <= channel < info.channels:
        raise ValueError(f"channel {channel} out of range: the file has {info.channels} channel(s)")
    if channel is not None and (m.kind == "none" or info.duration_s < min_duration_s):
        y = own_speech_span(path, channel, vad=vad, max_duration_s=max_duration_s, block_s=block_s, info=info)
        x = extract(y)[None, :]
        proba = np.asarray(bundle.predict_proba(x))
        seg = _segment_dict(0, 0.0, info.duration_s, labels, proba[0], _row_flags(bundle, x, proba)[0])
        return SegmentedResult(
            segments=[seg],
            emotion=seg["emotion"],
            confidence=seg["confidence"],
            probabilities=dict(seg["probabilities"]),
            n_segments=1,
            n_skipped=0,
            segmented_duration_s=y.size / SAMPLE_RATE,
            duration_s=info.duration_s,
            sample_rate=info.sample_rate,
            channels=info.channels,
            mode="none",
            segmented=False,
            ood_score=seg["ood_score"],
            out_of_domain=seg["out_of_domain"],
            low_confidence=seg["low_confidence"],
        )
    if m.kind == "none" or info.duration_s < min_duration_s:
        y, _ = load_audio(path, max_duration_s=max_duration_s, info=info)
        x = extract(y)[None, :]
        proba = np.asarray(bundle.predict_proba(x))
        seg = _segment_dict(0, 0.0, y.size / SAMPLE_RATE, labels, proba[0], _row_flags(bundle, x, proba)[0])
        return SegmentedResult(
            segments=[seg],
            emotion=seg["emotion"],
            confidence=seg["confidence"],
            probabilities=dict(seg["probabilities"]),
            n_segments=1,
            n_skipped=0,
            segmented_duration_s=seg["end_s"],
            duration_s=info.duration_s,
            sample_rate=info.sample_rate,
            channels=info.channels,
            mode="none",
            segmented=False,
            ood_score=seg["ood_score"],
            out_of_domain=seg["out_of_domain"],
            low_confidence=seg["low_confidence"],
        )

    stats = SegmentStats()
    segments: list[dict[str, Any]] = []
    weighted = np.zeros(len(labels), dtype=np.float64)
    total_s = 0.0
    skipped = 0
    batch_x: list[np.ndarray] = []
    batch_t: list[tuple[float, float]] = []
    silence = 10 ** (SILENCE_PEAK_DBFS / 20)

    def flush() -> None:
        nonlocal weighted, total_s
        if not batch_x:
            return
        X = np.stack(batch_x)
        proba = np.asarray(bundle.predict_proba(X))
        for (a, b), row, fl in zip(batch_t, proba, _row_flags(bundle, X, proba), strict=True):
            segments.append(_segment_dict(len(segments), a, b, labels, row, fl))
            weighted += (b - a) * row
            total_s += b - a
        batch_x.clear()
        batch_t.clear()

    for seg in iter_segments(path, m, vad=vad, block_s=block_s, info=info, stats=stats, channel=channel):
        if seg.samples.size == 0 or float(np.max(np.abs(seg.samples))) <= silence:
            skipped += 1
            continue
        try:
            x = extract(seg.samples)
        except AudioError:
            skipped += 1
            continue
        batch_x.append(x)
        batch_t.append((seg.start_s, seg.end_s))
        if len(batch_x) >= batch_size:
            flush()
    flush()
    skipped += stats.n_dropped_short
    if not segments and channel is not None:
        raise AudioError(
            f"no speech of its own on channel {channel}: only bleed from other channels, silence or noise"
            f" ({m} segmentation, {skipped} region(s) too short or silent)"
        )
    if not segments:
        raise AudioError(
            f"no speech segments found ({m} segmentation, {stats.n_segments} segment(s), {skipped} too short or silent)"
        )
    mean = weighted / total_s
    mean /= mean.sum()
    probs = {lab: float(p) for lab, p in zip(labels, mean, strict=True)}
    best = max(probs, key=probs.__getitem__)
    ood_score, out_of_domain, low_confidence = _aggregate_flags(bundle, segments, probs[best])
    return SegmentedResult(
        segments=segments,
        emotion=best,
        confidence=probs[best],
        probabilities=probs,
        n_segments=len(segments),
        n_skipped=skipped,
        segmented_duration_s=total_s,
        duration_s=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
        mode=str(m),
        segmented=True,
        ood_score=ood_score,
        out_of_domain=out_of_domain,
        low_confidence=low_confidence,
    )


def _short(err: BaseException) -> str:
    """One line of an exception text, without the file path libsndfile puts in front."""
    text = " ".join(str(err).split())
    if "Error opening" in text and ": " in text:
        text = text.rsplit(": ", 1)[-1]
    return text[:300] or type(err).__name__
