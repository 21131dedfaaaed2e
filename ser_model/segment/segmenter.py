"""Streaming segmentation: the segments of a recording in bounded memory (:func:`iter_segments`).

The mode is chosen by a spec string (:func:`ser_model.segment.modes.parse_segment_mode`):

- ``"vad"`` (default): speech/pause detection on frame energy, in the spirit of
  ``librosa.effects.split`` (frames within ``top_db`` of a reference level are "non-silent") but
  streaming, with rules for pauses, short and long segments (see
  :class:`ser_model.segment.modes.VadParams`). The reference level needs the whole file, so VAD
  makes **two passes**: the first (:func:`ser_model.segment.levels.measure_levels`) only
  histograms the frame levels, the second segments.
- ``"window:LEN:HOP"``: fixed windows of ``LEN`` seconds every ``HOP`` seconds.
- ``"none"``: no segmentation; the file is one segment.

With a ``channel``, only that channel's own speech counts (frames gated by
:class:`ser_model.segment.levels.ChannelGate`).

Memory: at any time only the current decoded block and the samples from the start of the oldest
segment not yet emitted (at most ``2 * max_segment_s + merge_gap_s`` seconds in VAD mode, one
window in window mode) are held. At 16 kHz float32 that is a few MB whatever the file's length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ser_model.audio import SAMPLE_RATE, AudioInfo, probe_audio
from ser_model.segment.decode import DEFAULT_BLOCK_S, iter_blocks, iter_channel_blocks
from ser_model.segment.levels import FRAME_LENGTH, HOP_LENGTH, MIN_OWN_SPEECH_S, ChannelGate, _Framer, measure_levels
from ser_model.segment.modes import SegmentMode, VadParams, parse_segment_mode


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
