"""Block-wise decoding: a file of any length, rate and channel count as 16 kHz float32 blocks.

``soundfile.SoundFile.read`` in blocks of :data:`DEFAULT_BLOCK_S` seconds, then a streaming soxr
resampler (``soxr.ResampleStream``, "HQ", the same SoX resampler :func:`ser_model.audio.load_audio`
uses one-shot): :func:`iter_blocks` mixes the channels to mono first (by averaging),
:func:`iter_channel_blocks` keeps every channel (``--channels split``). The stream keeps the filter
state across blocks, so block boundaries leave no artefacts: its output equals ``soxr.resample`` of
the whole signal (tested to 1e-6). Only the current block is held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import soxr

from ser_model.audio import SAMPLE_RATE, AudioError, AudioInfo, probe_audio

DEFAULT_BLOCK_S = 10.0
"""Length (seconds, at the native rate) of the blocks read from the file."""


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


def _short(err: BaseException) -> str:
    """One line of an exception text, without the file path libsndfile puts in front."""
    text = " ".join(str(err).split())
    if "Error opening" in text and ": " in text:
        text = text.rsplit(": ", 1)[-1]
    return text[:300] or type(err).__name__
