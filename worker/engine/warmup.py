"""Process set-up shared by Celery workers and embedded ``submit``: warm-up before fork, set-up after.

Both modes warm up once in the parent process (feature code imported, filter banks built, the model
loaded) and fork their pool from it, so every pool process starts warm; each pool process then
drops the parent's database connections and limits native libraries to one thread.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def warm_up_features() -> Any:
    """Run the feature extractor once on a 1-s 150 Hz sine at 16 kHz (imports, filter banks).

    No librosa or numba is on this path; doing it once in the parent means forked processes inherit it.

    Returns:
        The sine's feature vector, shape ``(n_features,)``.
    """
    import numpy as np

    from ser_model.features import extract_features

    t = np.arange(16000, dtype=np.float32) / 16000
    return extract_features((0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32))


def warm_up(url: str | None = None) -> dict[str, Any]:
    """Warm the feature extractor up (:func:`warm_up_features`) and load and run the active model.

    Args:
        url: database URL (default: settings).

    Returns:
        ``{"model_version": str | None, "error": str | None}``; a model that cannot be loaded is
        logged, not raised (tasks then fail their chunk with the reason).
    """
    from worker.storage.registry import load_model

    x = warm_up_features()
    try:
        model = load_model(url=url)
        warm_up_model(model.bundle, x)
    except Exception as e:  # noqa: BLE001 - a worker without a model still starts; tasks report why
        log.warning("warm-up could not load the model: %s", e)
        return {"model_version": None, "error": str(e)}
    finally:
        freeze_before_fork()
    return {"model_version": model.version, "error": None}


def warm_up_model(bundle: Any, x: Any) -> None:
    """Label the warm-up vector ``x`` ``(n_features,)`` as a file is labelled (probabilities, trust flags).

    Everything a pool process would otherwise import or build at its first file (the calibration and
    out-of-domain code, the row fields, ``threadpoolctl`` for :func:`after_fork`) is then in the parent.
    An accurate model takes more values than the hand-crafted ``x`` (its encoder part): they are zero
    here. The speech encoder itself is not loaded in the parent: each pool process loads it at its
    first file, since a CTranslate2 model must not cross a fork.
    """
    import numpy as np
    import threadpoolctl  # noqa: F401 - imported by after_fork in every pool process

    from worker.engine.analyse import label_fields

    n_in = bundle.weights["global"].n_features if getattr(bundle, "weights", None) else x.shape[0]
    X = np.zeros((1, n_in), np.float32)
    X[0, : min(n_in, x.shape[0])] = x[:n_in]
    label_fields(bundle, X, bundle.predict_proba(X))


def freeze_before_fork() -> None:
    """:func:`gc.freeze` the parent's objects (modules, filter banks, the model) before the pool forks.

    Python's ``gc`` documentation advises it for processes that fork without exec: the children's
    collections then skip the inherited objects, which they would otherwise walk (CPU in every pool
    process) and touch (copy-on-write of pages the parent could have shared).
    """
    import gc

    gc.freeze()


def after_fork() -> None:
    """In each pool process, right after fork: own database connections, single-threaded BLAS/OpenMP."""
    from threadpoolctl import threadpool_limits

    from worker.storage.db import dispose_engines

    dispose_engines()  # never share the parent's pooled connections after fork
    threadpool_limits(1)
