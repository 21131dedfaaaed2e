"""One BLAS thread for every computation that labels a file, so that every process gets the same numbers.

Why: OpenBLAS splits a matrix product between its threads, and the split changes the order in which
the partial sums are added. With 2 threads instead of 1, Whisper's mel projection
(:func:`ser_model.encoder.log_mel`, a float32 ``(80, 201) @ (201, T)`` product) differed in the last
bits; the int8 speech encoder then rounded some of its activations the other way, the embedding
moved by up to 0.011 and a file's confidence by up to 5e-4. The Python API (a process with as many
BLAS threads as cores) and a batch (pool processes pinned to one thread) gave the same file
different confidences (issue "Same file, same numbers").

Every path that computes features or probabilities therefore does it inside :func:`one_blas_thread`:
:func:`ser_model.featureset.extract` and the MLP forward pass of
:class:`ser_model.model.ModelBundle`. Pool processes are pinned as a whole as well
(:func:`worker.engine.warmup.after_fork`); this guard makes the result independent of who calls.
The packaged models were trained on features computed with one thread, which is what the guard
reproduces.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

_CONTROLLER: Any = None
_LOCK = threading.Lock()


def _controller() -> Any:
    """The process's :class:`threadpoolctl.ThreadpoolController`, built once (scanning the loaded
    native libraries costs about 1 ms; a limit through it then costs about 16 us)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        with _LOCK:
            if _CONTROLLER is None:
                import numpy  # noqa: F401 - its BLAS must be loaded before the scan
                import scipy.fft  # noqa: F401
                from threadpoolctl import ThreadpoolController

                _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def one_blas_thread() -> AbstractContextManager[Any]:
    """Context in which every BLAS/OpenMP library of the process runs on one thread.

    The previous limits are restored on exit (threadpoolctl's ``ThreadpoolController.limit``), so
    calling it from a user's process (the Python API) does not change that process's settings.

    Returns:
        A context manager.
    """
    return _controller().limit(limits=1)
