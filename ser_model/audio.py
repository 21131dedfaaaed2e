"""Audio decoding to the one canonical input: mono float32 at 16 kHz.

Everything the model sees goes through :func:`load_audio`: decode with soundfile
(libsndfile: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ... at any sample rate, 8/16/24/32-bit
integer or float), mix to mono by averaging channels, and resample with soxr (the SoX
resampler, "HQ" quality) to :data:`SAMPLE_RATE`. A model therefore never sees features
computed at a sample rate it was not trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""Canonical sample rate (Hz) of every signal the features are computed from."""

MIN_DURATION_S = 0.25
"""Shortest recording (seconds, before trimming) that can carry an emotion label."""

SILENCE_PEAK_DBFS = -60.0
"""A recording whose absolute peak is below this level (dB full scale) counts as silent."""


class AudioError(Exception):
    """A file cannot become a labelled recording; ``str(err)`` is a one-line reason for users."""


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file, before decoding.

    Attributes:
        sample_rate: native sample rate (Hz).
        channels: number of channels.
        frames: samples per channel.
        duration_s: ``frames / sample_rate`` (seconds).
        format: container, e.g. ``"WAV"``, ``"FLAC"``, ``"MP3"``.
        subtype: sample encoding, e.g. ``"PCM_16"``, ``"FLOAT"``.
    """

    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the header of an audio file without decoding it.

    Args:
        path: file to open.

    Returns:
        The container's sample rate (Hz), channels, length and format.

    Raises:
        AudioError: the file is missing, empty, not audio, or its header is
            unreadable/invalid (one-line reason).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except OSError as e:
        raise AudioError(f"cannot stat file: {e.strerror or e}") from None
    if not p.is_file():
        raise AudioError("not a regular file")
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except sf.LibsndfileError as e:
        reason = _short(e)
        if "does not exist or is not a regular file" in reason:
            # libsndfile's text when it gives up on data it half-recognised (e.g. random bytes that
            # look like MPEG frames); the file was checked to exist and be regular just above.
            reason = "unrecognised or corrupt data"
        from ser_model.datasets import AUDIO_EXTENSIONS

        if p.suffix.lower() not in AUDIO_EXTENSIONS:  # a file named explicitly, e.g. notes.txt
            name = f"{p.suffix} is not an audio extension" if p.suffix else "the name has no audio extension"
            reason = f"{name} and libsndfile cannot read it ({reason})"
        raise AudioError(f"not a readable audio file: {reason}") from None
    except (OSError, RuntimeError, ValueError) as e:
        raise AudioError(f"cannot read audio header: {_short(e)}") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"invalid header: sample rate {info.samplerate} Hz, {info.channels} channels")
    frames = int(info.frames)
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=frames,
        duration_s=frames / float(info.samplerate),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def to_mono_16k(data: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix to mono and resample to :data:`SAMPLE_RATE` with soxr ("HQ").

    Args:
        data: samples, shape ``(n,)`` or ``(n, channels)``, float.
        sample_rate: rate of ``data`` (Hz).

    Returns:
        float32 array of shape ``(round(n * 16000 / sample_rate),)``.
    """
    y = np.asarray(data, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]
    if sample_rate != SAMPLE_RATE:
        y = soxr.resample(y, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(y, dtype=np.float32)


def load_audio(
    path: str | os.PathLike[str],
    *,
    max_duration_s: float | None = None,
    info: AudioInfo | None = None,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a file to mono float32 at 16 kHz and check it can carry a label.

    Args:
        path: audio file (anything libsndfile reads).
        max_duration_s: refuse files longer than this (seconds); None for no limit.
        info: header from :func:`probe_audio`, when the caller already has it.

    Returns:
        ``(y, info)``: samples of shape ``(n,)`` at 16 kHz in [-1, 1], and the
        native header information.

    Raises:
        AudioError: unreadable, truncated, too short (< :data:`MIN_DURATION_S`),
            too long, containing NaN/Inf samples, or silent (peak below
            :data:`SILENCE_PEAK_DBFS`).
    """
    if info is None:
        info = probe_audio(path)
    if info.frames <= 0:
        raise AudioError("no audio samples (header-only or truncated file)")
    if max_duration_s is not None and info.duration_s > max_duration_s:
        raise AudioError(
            f"recording too long: {info.duration_s:.1f} s > limit of {max_duration_s:.0f} s (SER_MAX_DURATION_S)"
        )
    if info.duration_s < MIN_DURATION_S:
        raise AudioError(f"recording too short: {info.duration_s:.3f} s < {MIN_DURATION_S} s minimum")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise AudioError(f"cannot decode audio: {_short(e)}") from None
    except (OSError, RuntimeError, ValueError, MemoryError) as e:
        raise AudioError(f"cannot decode audio: {_short(e)}") from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples could be decoded (truncated file)")
    if data.shape[0] / sr < MIN_DURATION_S:
        raise AudioError(f"recording too short: {data.shape[0] / sr:.3f} s decoded < {MIN_DURATION_S} s minimum")
    if not np.isfinite(data).all():
        raise AudioError("audio contains NaN or infinite sample values")
    y = to_mono_16k(data, sr)
    peak = float(np.max(np.abs(y)))  # after the mono mix: channels in antiphase cancel out
    if peak <= 10 ** (SILENCE_PEAK_DBFS / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.1f}"
        raise AudioError(f"silent recording: peak level {level} dBFS < {SILENCE_PEAK_DBFS:.0f} dBFS")
    return y, info


def _short(err: BaseException) -> str:
    """One line of an exception text, without the file path libsndfile puts in front."""
    text = " ".join(str(err).split())
    if "Error opening" in text and ": " in text:
        text = text.rsplit(": ", 1)[-1]
    return text[:300] or type(err).__name__
