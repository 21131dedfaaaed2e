# ser-batch image: the same image runs `ser-batch db upgrade`, the workers and the producer.
# Built by docker-compose.yml (`docker compose build`); nothing is downloaded at run time.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # one BLAS/OpenMP thread per process: Celery's prefork pool gives the parallelism
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NUMBA_NUM_THREADS=1 \
    # librosa's numba functions compile once into this (volume-backed) cache
    NUMBA_CACHE_DIR=/var/cache/ser-batch/numba

# soundfile's wheel bundles libsndfile, soxr's bundles libsoxr: no system packages needed.
RUN useradd --create-home --uid 1000 ser \
    && mkdir -p /var/cache/ser-batch/numba \
    && chown -R ser:ser /var/cache/ser-batch

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY ser_model ./ser_model
COPY worker ./worker
COPY producer ./producer
COPY migrations ./migrations
RUN pip install . && ser-batch --help > /dev/null

# Celery refuses to be comfortable as root; so do we.
USER ser
# `exec` semantics: ser-batch worker replaces itself with the Celery worker (PID 1 gets SIGTERM).
CMD ["ser-batch", "worker"]
