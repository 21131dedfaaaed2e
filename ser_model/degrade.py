"""Recording conditions: copies of a clean recording made the way users' recordings are made.

Used twice: for *multi-condition training* (:func:`random_condition`: every training file gets copies
through randomly drawn channels, so the model learns labels that do not follow the channel; the
classic remedy for mismatched conditions in robust speech recognition, e.g. Ko et al. 2017, "A study
on data augmentation of reverberant speech for robust speech recognition", ICASSP) and for the
*conditions benchmark* (:data:`TEST_CONDITIONS`, fixed named conditions with noise, rooms and babble
speakers unseen in training).

A condition is a :class:`Condition`: a chain of steps applied in order to a mono 16-kHz float signal:

============  ==============================================================================
step          what it does (parameters)
============  ==============================================================================
``noise``     additive coloured noise at an SNR in dB over the speech's active level: white
              (flat), pink (1/f) or brown (1/f^2) spectrum, shaped in the frequency domain
``babble``    the sum of 3-7 other speakers' utterances (given as ``babble`` signals, looped
              and randomly offset) at an SNR in dB
``reverb``    convolution with a room impulse response of a shoebox room simulated by the
              image-source method (pyroomacoustics; Allen & Berkley 1979), a target RT60 in s
``telephone`` 8-kHz narrowband: resampled to 8 kHz (soxr), band-passed 300-3400 Hz
              (4th-order Butterworth), encoded and decoded with G.711 mu-law or A-law or
              GSM 06.10 (libsndfile), resampled back to 16 kHz
``codec``     a lossy codec round trip through libsndfile: MP3 or Ogg Opus at a bitrate level
``clip``      hard clipping at a fraction of the peak
============  ==============================================================================

Levels are relative to the active speech level (ITU-R BS.1770-4 gating, :mod:`ser_model.level`), so
an SNR means the same for quiet and loud files. Every draw comes from a ``numpy.random.Generator``
seeded by the caller, so a copy is a deterministic function of (seed, file). Noise is generated here
rather than with audiomentations, which draws from the global ``random`` / ``numpy.random`` state and
so cannot give per-file determinism inside a process pool.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ser_model.audio import SAMPLE_RATE
from ser_model.level import active_level_db

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
"""Noise colours by the exponent beta of their 1/f^beta power spectrum."""
TELEPHONE_CODECS = ("ulaw", "alaw", "gsm")
LOSSY_CODECS = ("mp3", "opus")

TRAIN_SNR_DB = (0.0, 30.0)
TRAIN_BABBLE_SNR_DB = (0.0, 25.0)
TRAIN_RT60_S = (0.2, 1.0)
N_TRAIN_ROOMS = 24
TRAIN_ROOM_SEED = 1
TEST_ROOM_SEED = 2  # rooms of the benchmark: other geometries than any training room


@dataclass(frozen=True)
class Step:
    """One step of a condition: ``kind`` (see the module table) and its parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Short text such as ``noise(pink, 10 dB)``."""
        vals = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.params.values())
        return f"{self.kind}({vals})"


@dataclass(frozen=True)
class Condition:
    """A named chain of :class:`Step`."""

    name: str
    steps: tuple[Step, ...]

    def describe(self) -> str:
        """The steps as text, e.g. ``telephone(ulaw) + noise(pink, 10 dB)``."""
        return " + ".join(s.describe() for s in self.steps) or "clean"


# ----------------------------------------------------------------------------------------- steps


def _speech_power(y: np.ndarray) -> float:
    """Mean power of the active speech (10^(level/10)), the reference of every SNR here."""
    lvl = active_level_db(y)
    if not np.isfinite(lvl):
        return float(np.mean(np.square(y, dtype=np.float64)))
    return float(10.0 ** (lvl / 10.0))


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of ``n`` samples with a 1/f^beta power spectrum (white, pink, brown).

    Gaussian white noise shaped in the frequency domain by ``f^(-beta/2)`` (DC left at zero, the
    lowest bin's gain used below 20 Hz so brown noise has no sub-audio drift).

    Raises:
        ValueError: unknown colour.
    """
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; choose from {', '.join(NOISE_COLOURS)}")
    beta = NOISE_COLOURS[colour]
    w = rng.standard_normal(n)
    if beta:
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        f = np.maximum(f, 20.0)
        spec *= f ** (-beta / 2.0)
        spec[0] = 0.0
        w = np.fft.irfft(spec, n)
    w = w - w.mean()
    return (w / max(float(np.sqrt(np.mean(w**2))), 1e-12)).astype(np.float32)


def add_at_snr(y: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``y`` plus ``noise`` scaled so that speech power over noise power is ``snr_db`` dB."""
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_noise <= 0:
        return y
    gain = np.sqrt(_speech_power(y) / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (y + gain * noise[: y.shape[0]]).astype(np.float32)


def babble_noise(n: int, voices: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The sum of ``voices`` (each level-equalised, looped, randomly offset) over ``n`` samples.

    Raises:
        ValueError: no voices.
    """
    if not voices:
        raise ValueError("babble needs at least one other speaker's recording")
    out = np.zeros(n, np.float64)
    for v in voices:
        v = np.asarray(v, np.float64)
        if v.size == 0:
            continue
        reps = int(np.ceil((n + v.size) / v.size))
        looped = np.tile(v, reps)
        off = int(rng.integers(0, v.size))
        seg = looped[off : off + n]
        out += seg / np.sqrt(max(_speech_power(seg.astype(np.float32)), 1e-12))
    return out.astype(np.float32)


@functools.lru_cache(maxsize=4)
def room_bank(seed: int, n_rooms: int = N_TRAIN_ROOMS, rt60_range: tuple[float, float] = TRAIN_RT60_S) -> tuple:
    """Room impulse responses of ``n_rooms`` simulated shoebox rooms (image-source method).

    Each room: dimensions 3-10 x 3-8 x 2.5-4 m, a target RT60 drawn from ``rt60_range``, wall
    absorption from Sabine's formula (``pyroomacoustics.inverse_sabine``), source and microphone at
    random positions at least 0.5 m from the walls; the image-source order is capped at 80. The
    realised RT60 (``pyroomacoustics.experimental.measure_rt60``) is brought within 10 % of the target
    by correcting the Sabine target at most twice, and returned.

    Returns:
        Tuple of ``(rir float32 (n,), realised RT60 s)`` pairs, normalised to unit energy.
    """
    import pyroomacoustics as pra

    rng = np.random.default_rng([20261205, seed])
    out = []
    for _ in range(n_rooms):
        rt60 = float(rng.uniform(*rt60_range))
        out.append(_simulate_room(pra, rng, rt60))
    return tuple(out)


@functools.lru_cache(maxsize=16)
def room_for_rt60(rt60: float, seed: int = TEST_ROOM_SEED) -> tuple[np.ndarray, float]:
    """One simulated room with target ``rt60`` (s), geometry drawn from ``seed`` (see :func:`room_bank`)."""
    import pyroomacoustics as pra

    return _simulate_room(pra, np.random.default_rng([20261206, seed, int(rt60 * 1000)]), rt60)


def _simulate_room(pra: Any, rng: np.random.Generator, rt60: float) -> tuple[np.ndarray, float]:
    """Simulate one room with target ``rt60``; the Sabine target is corrected twice at most so that
    the realised RT60 (the image-source tail is longer than Sabine's formula predicts in a shoebox)
    lands near the target."""
    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4.0)])
    src = rng.uniform(0.5, dims - 0.5)
    mic = rng.uniform(0.5, dims - 0.5)
    target = rt60
    rir, realised = np.zeros(1, np.float64), float("nan")
    for _ in range(3):
        e_abs, max_order = pra.inverse_sabine(target, dims)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(e_abs), max_order=min(int(max_order), 80))
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], np.float64)
        try:
            realised = float(pra.experimental.measure_rt60(rir, fs=SAMPLE_RATE))
        except (ValueError, IndexError):  # too short a tail to measure
            break
        if not np.isfinite(realised) or abs(realised - rt60) <= 0.1 * rt60:
            break
        target = float(np.clip(target * rt60 / realised, 0.05, 3.0))
    rir = rir / np.sqrt(np.sum(rir**2))
    return rir.astype(np.float32), realised


def reverberate(y: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``y`` convolved with ``rir`` (aligned on the direct path, cut to ``len(y)`` + the tail)."""
    import scipy.signal

    lag = int(np.argmax(np.abs(rir)))
    wet = scipy.signal.fftconvolve(y, rir)[lag : lag + y.shape[0] + int(0.3 * SAMPLE_RATE)]
    return wet.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _telephone_sos() -> np.ndarray:
    import scipy.signal

    return scipy.signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=8000, output="sos")


def _roundtrip(y: np.ndarray, sr: int, fmt: str, subtype: str | None, **kw: Any) -> np.ndarray:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), sr, format=fmt, subtype=subtype, **kw)
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return out if out.ndim == 1 else out.mean(axis=1)


def telephone(y: np.ndarray, codec: str) -> np.ndarray:
    """A narrowband telephone channel: 8 kHz, 300-3400 Hz, G.711 mu-law / A-law or GSM 06.10.

    The signal is scaled to a -26 dBFS speech level first (a telephone line's nominal level) so the
    codec's quantisation acts as on a real line.

    Raises:
        ValueError: unknown codec.
    """
    import scipy.signal
    import soxr

    subtype = {"ulaw": "ULAW", "alaw": "ALAW", "gsm": "GSM610"}.get(codec)
    if subtype is None:
        raise ValueError(f"unknown telephone codec {codec!r}; choose from {', '.join(TELEPHONE_CODECS)}")
    y = _at_level(y, -26.0)
    nb = soxr.resample(y, SAMPLE_RATE, 8000, quality="HQ")
    nb = scipy.signal.sosfilt(_telephone_sos(), nb).astype(np.float32)
    nb = _roundtrip(nb, 8000, "WAV", subtype)
    return soxr.resample(nb, 8000, SAMPLE_RATE, quality="HQ").astype(np.float32)[: y.shape[0]]


def lossy_codec(y: np.ndarray, codec: str, quality: float) -> np.ndarray:
    """An MP3 or Ogg Opus round trip (libsndfile); ``quality`` is libsndfile's compression level 0-1
    (0 = highest bitrate, 1 = lowest).

    Raises:
        ValueError: unknown codec.
    """
    y = _at_level(y, -26.0)
    if codec == "mp3":
        out = _roundtrip(y, SAMPLE_RATE, "MP3", "MPEG_LAYER_III", compression_level=quality, bitrate_mode="CONSTANT")
    elif codec == "opus":
        import soxr

        wide = soxr.resample(y, SAMPLE_RATE, 48000, quality="HQ")  # Opus in Ogg runs at 48 kHz
        out = soxr.resample(_roundtrip(wide, 48000, "OGG", "OPUS", compression_level=quality), 48000, SAMPLE_RATE)
    else:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(LOSSY_CODECS)}")
    n = y.shape[0]
    out = np.asarray(out, np.float32)
    return out[:n] if out.shape[0] >= n else np.pad(out, (0, n - out.shape[0]))


def _at_level(y: np.ndarray, level_db: float) -> np.ndarray:
    lvl = active_level_db(y)
    if not np.isfinite(lvl):
        return y.astype(np.float32)
    return (y * 10.0 ** ((level_db - lvl) / 20.0)).astype(np.float32)


def clip(y: np.ndarray, fraction: float) -> np.ndarray:
    """Hard clipping at ``fraction`` of the peak (0 < fraction <= 1)."""
    lim = float(np.max(np.abs(y))) * fraction
    return np.clip(y, -lim, lim).astype(np.float32) if lim > 0 else y


# ------------------------------------------------------------------------------------ conditions


def apply(
    y: np.ndarray,
    condition: Condition,
    rng: np.random.Generator,
    *,
    babble: Sequence[np.ndarray] = (),
    rooms: Sequence[tuple[np.ndarray, float]] | None = None,
) -> np.ndarray:
    """Apply a condition's steps to a mono 16-kHz signal.

    Args:
        y: mono samples ``(n,)`` at 16 kHz.
        condition: the chain of steps.
        rng: generator for the noise samples and offsets.
        babble: other speakers' recordings for a ``babble`` step.
        rooms: the room bank for a ``reverb`` step with a ``room`` index; a step with ``rt60`` only
            uses :func:`room_for_rt60`.

    Returns:
        float32 ``(m,)``; ``m`` is ``n`` except after ``reverb`` (the tail is kept).

    Raises:
        ValueError: an unknown step, colour or codec, or babble without voices.
    """
    y = np.asarray(y, np.float32)
    for step in condition.steps:
        p = step.params
        if step.kind == "noise":
            y = add_at_snr(y, coloured_noise(y.shape[0], p["colour"], rng), p["snr_db"])
        elif step.kind == "babble":
            y = add_at_snr(y, babble_noise(y.shape[0], babble, rng), p["snr_db"])
        elif step.kind == "reverb":
            rir = rooms[p["room"]][0] if "room" in p and rooms is not None else room_for_rt60(p["rt60"])[0]
            y = reverberate(y, rir)
        elif step.kind == "telephone":
            y = telephone(y, p["codec"])
        elif step.kind == "codec":
            y = lossy_codec(y, p["codec"], p["quality"])
        elif step.kind == "clip":
            y = clip(y, p["fraction"])
        else:
            raise ValueError(f"unknown condition step {step.kind!r}")
    return y


def random_condition(rng: np.random.Generator, *, n_rooms: int = N_TRAIN_ROOMS) -> Condition:
    """A training condition drawn at random (multi-condition training).

    One of: coloured noise (white/pink/brown, 0-30 dB SNR); babble (0-25 dB); a telephone channel
    (mu-law / A-law / GSM); a room (one of the training bank's ``n_rooms``, RT60 0.2-1.0 s); a lossy
    codec (MP3 or Opus, low to medium bitrate); clipping; or a combination of a channel (telephone,
    room, codec) with noise or babble.
    """

    def noise() -> Step:
        return Step(
            "noise", {"colour": str(rng.choice(list(NOISE_COLOURS))), "snr_db": float(rng.uniform(*TRAIN_SNR_DB))}
        )

    def babble() -> Step:
        return Step("babble", {"snr_db": float(rng.uniform(*TRAIN_BABBLE_SNR_DB))})

    def channel() -> Step:
        k = int(rng.integers(0, 3))
        if k == 0:
            return Step("telephone", {"codec": str(rng.choice(TELEPHONE_CODECS))})
        if k == 1:
            return Step("reverb", {"room": int(rng.integers(0, n_rooms))})
        return Step("codec", {"codec": str(rng.choice(LOSSY_CODECS)), "quality": float(rng.uniform(0.5, 1.0))})

    kind = int(rng.integers(0, 6))
    if kind == 0:
        steps: tuple[Step, ...] = (noise(),)
    elif kind == 1:
        steps = (babble(),)
    elif kind == 2:
        steps = (channel(),)
    elif kind == 3:  # room or codec, then noise at the microphone / before the line
        ch = channel()
        steps = (ch, noise()) if ch.kind != "telephone" else (noise(), ch)
    elif kind == 4:
        ch = channel()
        steps = (ch, babble()) if ch.kind != "telephone" else (babble(), ch)
    else:
        steps = (Step("clip", {"fraction": float(rng.uniform(0.1, 0.5))}), noise())
    return Condition("random", steps)


def _c(name: str, *steps: Step) -> Condition:
    return Condition(name, tuple(steps))


TEST_CONDITIONS: tuple[Condition, ...] = (
    *(
        _c(f"{col}-{snr}dB", Step("noise", {"colour": col, "snr_db": float(snr)}))
        for col in NOISE_COLOURS
        for snr in (20, 10, 5)
    ),
    *(_c(f"babble-{snr}dB", Step("babble", {"snr_db": float(snr)})) for snr in (20, 10, 5)),
    *(_c(f"telephone-{c}", Step("telephone", {"codec": c})) for c in TELEPHONE_CODECS),
    *(_c(f"reverb-{rt:g}s", Step("reverb", {"rt60": rt})) for rt in (0.3, 0.6, 0.9)),
    _c("mp3-low", Step("codec", {"codec": "mp3", "quality": 0.9})),
    _c("opus-low", Step("codec", {"codec": "opus", "quality": 0.9})),
    _c(
        "telephone-ulaw+pink-10dB",
        Step("noise", {"colour": "pink", "snr_db": 10.0}),
        Step("telephone", {"codec": "ulaw"}),
    ),
    _c("reverb-0.6s+white-20dB", Step("reverb", {"rt60": 0.6}), Step("noise", {"colour": "white", "snr_db": 20.0})),
)
"""The benchmark's conditions (``benchmarks/conditions.py``): 22 named channels, noises, rooms and codecs."""
