"""Frame levels, the VAD threshold, and the channel bleed gate.

32 ms frames every 10 ms (:data:`FRAME_LENGTH`, :data:`HOP_LENGTH`, centred as in librosa) give
RMS levels in dB, computed block by block (``_Framer``). :func:`measure_levels` is the first pass
of the VAD: the reference level of a whole file (the level exceeded by its loudest frames), its
noise floor and the activity threshold (see :class:`ser_model.segment.modes.VadParams`), from a
histogram of the frame levels (0.5 dB bins, constant memory). A running or absolute threshold was
rejected: a running reference is biased at the start of a file and an absolute one fails on quiet
recordings (RAVDESS speech sits at -35 to -45 dBFS RMS). The price is decoding the file twice
(about 2-3 s per hour of 48 kHz WAV per pass on one core, see ``benchmarks/results/long_recording.md``).

For ``--channels split``, :class:`ChannelGate` tells a channel's own speech from another party's
bleed (a frame is own speech only within :data:`BLEED_MARGIN_DB` of the loudest other channel), and
:func:`own_speech_span` crops a channel classified whole to its own speech.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ser_model.audio import MIN_DURATION_S, SAMPLE_RATE, SILENCE_PEAK_DBFS, AudioError, AudioInfo, probe_audio
from ser_model.segment.decode import DEFAULT_BLOCK_S, iter_blocks, iter_channel_blocks
from ser_model.segment.modes import VadParams

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
