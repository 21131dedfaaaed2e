"""Embedded mode: process a batch on this machine with a pool of processes.

Each process runs :func:`worker.engine.chunk.run_chunk` — the batch engine the Celery task wraps: claim,
lease heartbeat, attempts, rows, finalisation — on chunks of files and writes its rows itself
(SQLite in WAL mode takes several writers). The parent only hands out chunks, counts progress, and
after a process died releases the leases of the chunks it lost before running them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_URL: str | None = None


def _init(url: str) -> None:
    global _URL
    _URL = url
    from worker.engine.warmup import after_fork
    from worker.settings import prepare_process_env

    prepare_process_env()
    after_fork()


def _run_chunk(batch_id: int, paths: list[str], model_version: str) -> dict[str, int]:
    from worker.engine.chunk import run_chunk

    return run_chunk(batch_id, paths, model_version=model_version, url=_URL)


MAX_AUTO_CHUNK = 32
"""Largest unit of work :func:`auto_chunk_size` picks (about 0.15 s of one process's work)."""


def auto_chunk_size(n_files: int, workers: int) -> int:
    """Files per unit of work of an embedded batch when none was configured.

    The rule of ``multiprocessing.Pool.map``: about four units per process, ``ceil(n / (4 *
    workers))``, so a few slow files cannot leave one process working alone at the end, capped at
    :data:`MAX_AUTO_CHUNK`. Every unit pays fixed costs (its lease, the attempts update, the model
    check, the row upsert and the batch's final check: about 2-3 ms with SQLite); at the
    distributed default of 8 files that is a tenth of the work, at 32 a fortieth
    (``benchmarks/results/throughput.md``). The cap keeps the progress bar moving and bounds what a
    killed process takes with it (its unit is run again, one file at a time).

    Args:
        n_files: files to classify.
        workers: processes.

    Returns:
        Chunk size, ``1 <= size <= MAX_AUTO_CHUNK``.
    """
    return max(1, min(MAX_AUTO_CHUNK, -(-n_files // (4 * max(1, workers)))))


def warm_up(bundle: Any) -> None:
    """Run the feature extractor and ``bundle`` once, so forked processes start warm.

    See :func:`worker.engine.warmup.warm_up_features` and :func:`worker.engine.warmup.warm_up_model`; then
    :func:`worker.engine.warmup.freeze_before_fork`.
    """
    from worker.engine.warmup import freeze_before_fork, warm_up_features, warm_up_model

    warm_up_model(bundle, warm_up_features())
    freeze_before_fork()


def _chunks(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of at most ``size`` paths, made as ``paths`` is consumed."""
    chunk: list[str] = []
    for p in paths:
        chunk.append(p)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_embedded(
    batch_id: int,
    paths: Iterable[str],
    *,
    url: str,
    model_version: str,
    workers: int,
    chunk_size: int,
    on_progress: Callable[[int], None],
) -> dict[str, str]:
    """Classify ``paths`` with ``workers`` processes; rows are written by the processes.

    Args:
        batch_id: batch whose pending rows are filled in.
        paths: files to classify; consumed lazily (an iterator over pages of pending rows holds
            one page, the pool at most ``3 * workers`` chunks).
        url: database URL.
        model_version: registered model every process uses (one model per batch).
        workers: number of processes (1 runs in this process).
        chunk_size: files per unit of work.
        on_progress: called with the number of files finished since the last call.

    Returns:
        ``{path: reason}`` for files whose chunk could not be processed even after a retry in a
        fresh pool with one file per chunk (a process killed by the OS, a database error); their
        rows stay ``pending`` for the caller to mark.
    """
    chunks = _chunks(paths, chunk_size)
    if workers <= 1:
        _init(url)
        leftovers: list[tuple[list[str], str]] = []
        for c in chunks:
            try:
                _run_chunk(batch_id, c, model_version)
                on_progress(len(c))
            except Exception as e:  # noqa: BLE001 - reported per file by the caller
                leftovers.append((c, _reason(e)))
    else:
        leftovers = _pool_pass(batch_id, chunks, url, model_version, workers, on_progress)
        if leftovers:  # retry one file per task, so one bad file cannot take others down
            from worker.engine.leases import release

            single = [[p] for c, _ in leftovers for p in c]
            release(batch_id, [p for c in single for p in c], url=url)  # their processes are gone
            leftovers = _pool_pass(batch_id, single, url, model_version, workers, on_progress)
    return {p: reason for c, reason in leftovers for p in c}


def _reason(e: BaseException) -> str:
    if isinstance(e, BrokenProcessPool):
        return "worker process died while processing this file (killed by the OS, out of memory?)"
    return f"processing error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _stop(ex: ProcessPoolExecutor) -> None:
    """Cancel what is queued and terminate the pool's processes without waiting for them."""
    procs = list((getattr(ex, "_processes", None) or {}).values())  # CPython keeps them here
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def _pool_pass(
    batch_id: int,
    chunks: Iterable[list[str]],
    url: str,
    model_version: str,
    workers: int,
    on_progress: Callable[[int], None],
) -> list[tuple[list[str], str]]:
    """One pass of ``chunks`` through a process pool; returns the chunks that did not finish, with why."""
    failed: list[tuple[list[str], str]] = []
    ctx_kwargs: dict[str, Any] = {}
    if os.name == "posix":
        import multiprocessing

        ctx_kwargs["mp_context"] = multiprocessing.get_context("fork")
    ex = ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(url,), **ctx_kwargs)
    try:
        pending: dict[Future[dict[str, int]], list[str]] = {}
        it = iter(chunks)
        broken = False

        def top_up() -> None:
            while not broken and len(pending) < workers * 3:
                c = next(it, None)
                if c is None:
                    return
                try:
                    pending[ex.submit(_run_chunk, batch_id, c, model_version)] = c
                except BrokenProcessPool as e:
                    failed.append((c, _reason(e)))
                    return

        top_up()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                c = pending.pop(fut)
                try:
                    fut.result()
                    on_progress(len(c))
                except BrokenProcessPool as e:
                    broken = True
                    failed.append((c, _reason(e)))
                except Exception as e:  # noqa: BLE001 - the chunk is retried, then reported per file
                    failed.append((c, _reason(e)))
            top_up()
        if broken:
            failed.extend((c, "not run: the process pool broke") for c in it)
    except BaseException:
        # Ctrl-C (or an error) here: do not wait for the queued chunks, as leaving the `with` block would
        # (an interrupted executor could wait on idle processes for ever); stop the processes now.
        # Rows already written stay; files still pending are finished by `submit --resume`.
        _stop(ex)
        raise
    ex.shutdown(wait=True)
    return failed
