"""Model registry: the ``models`` table, the packaged default model, and the per-process model cache.

Bundles trained by ``ser-batch train`` are stored in the database itself (``models.bundle``), so
every worker on every machine that reaches the database reaches the model, with no shared file
system. The packaged models are referenced as ``source = "package:<name>"``: ``package:default``
(the accurate model, active unless another is activated) and ``package:fast`` (the fast model for bulk
triage, chosen with ``--model fast``). Every load checks the SHA-256 recorded in the row, then reads
the bundle as data (format 3, :mod:`ser_model.bundle_io`): the checksum guards against corruption, not
against whoever can write the row, so nothing stored in the table is ever unpickled. A pickled row
(format 1 or 2) is refused with the way to convert it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.storage.db import ModelVersion, get_engine

PACKAGE_SOURCE = "package:default"
PACKAGE_PREFIX = "package:"


class RegistryError(Exception):
    """No usable model: none registered, or the active one cannot be loaded."""


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, recursively.

    Model metrics go into JSON columns; PostgreSQL's JSON type rejects NaN (SQLite stores it), so a
    metric that is undefined (an empty calibration bin, a class with no test file) is stored as null.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def default_version_name(sha256: str, created_at: str, name: str = "default") -> str:
    """Version string of a packaged model, e.g. ``default-20261121-1a2b3c4d`` or ``fast-20261121-...``."""
    return f"{name}-{created_at[:10].replace('-', '')}-{sha256[:8]}"


def ensure_default_model(session: Session) -> str:
    """Register the packaged models (default and fast) that are not registered yet; activate the
    default if no model is active.

    Returns:
        The default model's version string.

    Raises:
        RegistryError: the packaged default bundle or its metadata is missing.
    """
    from ser_model.model import PACKAGED_MODELS, BundleError, read_sidecar

    versions: dict[str, str] = {}
    for name, path in PACKAGED_MODELS.items():
        try:
            side = read_sidecar(path)
        except BundleError as e:
            if name == "default":
                raise RegistryError(f"the packaged default model is missing: {e}") from None
            continue
        version = versions[name] = default_version_name(side["sha256"], str(side.get("created_at", "")), name)
        if session.get(ModelVersion, version) is None:
            has_active = session.scalar(select(ModelVersion.version).where(ModelVersion.active.is_(True)))
            session.add(
                ModelVersion(
                    version=version,
                    labels=list(side["labels"]),
                    metrics=json_safe(side.get("metrics", {})),
                    checksum=side["sha256"],
                    feature_version=side["feature_version"],
                    active=has_active is None and name == "default",
                    source=PACKAGE_PREFIX + name,
                )
            )
            session.flush()
    return versions["default"]


def resolve_version(session: Session, name: str) -> str:
    """A registered version from what a user typed: a version string, or a packaged model's name
    (``default``, ``fast``).

    Raises:
        RegistryError: no such version or name.
    """
    from ser_model.model import PACKAGED_MODELS

    ensure_default_model(session)
    if session.get(ModelVersion, name) is not None:
        return name
    if name in PACKAGED_MODELS:
        found = session.scalar(select(ModelVersion.version).where(ModelVersion.source == PACKAGE_PREFIX + name))
        if found is not None:
            return found
    raise RegistryError(f"no model version {name!r} (see `ser-batch models list`; packaged: default, fast)")


def mode_metrics(row: ModelVersion) -> dict[str, dict[str, Any]]:
    """A registered model's cross-validated metrics per analysis mode, as far as they were recorded.

    The row's ``metrics`` are the global model's; the speaker-adaptive and batch-normalised models'
    (``speaker_metrics``, ``batch_metrics`` of the bundle's metadata) are read from the packaged
    model's sidecar or from the ``bundle.json`` of the stored bundle (no array is read, nothing is
    executed; a pickled bundle of an older format contributes nothing).

    Args:
        row: a ``models`` row.

    Returns:
        ``{mode: metrics}`` for :data:`ser_model.speaker.MODE_GLOBAL`, ``MODE_SPEAKER`` and
        ``MODE_BATCH``; a mode whose metrics were not recorded is left out.
    """
    from ser_model import bundle_io
    from ser_model.model import PACKAGED_MODELS, BundleError, read_sidecar
    from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER

    out: dict[str, dict[str, Any]] = {}
    if row.metrics:
        out[MODE_GLOBAL] = dict(row.metrics)
    meta: dict[str, Any] = {}
    name = (row.source or "").removeprefix(PACKAGE_PREFIX)
    try:
        if (row.source or "").startswith(PACKAGE_PREFIX) and name in PACKAGED_MODELS:
            meta = read_sidecar(PACKAGED_MODELS[name])
        elif row.bundle and bundle_io.is_container(row.bundle):
            meta = bundle_io.read_document(row.bundle).get("meta") or {}
    except (BundleError, ValueError):
        meta = {}
    for mode, key in ((MODE_SPEAKER, "speaker_metrics"), (MODE_BATCH, "batch_metrics")):
        if isinstance(meta.get(key), dict) and meta[key].get("wa") is not None:
            out[mode] = dict(meta[key])
    return out


def active_version(session: Session) -> str | None:
    """Version string of the active model, or None."""
    return session.scalar(select(ModelVersion.version).where(ModelVersion.active.is_(True)))


def activate(session: Session, version: str) -> None:
    """Make ``version`` the only active model, in the caller's transaction (atomic on commit).

    Raises:
        RegistryError: no such version.
    """
    if session.get(ModelVersion, version) is None:
        raise RegistryError(f"no model version {version!r}")
    session.execute(update(ModelVersion).where(ModelVersion.version != version).values(active=False))
    session.execute(update(ModelVersion).where(ModelVersion.version == version).values(active=True))


def _check_packaged(name: str, version: str, checksum: str) -> None:
    """Refuse, with the way out, a ``package:<name>`` row of an earlier packaged model.

    Raises:
        RegistryError: the packaged bundle is not the one the row was registered for.
    """
    from ser_model.model import PACKAGED_MODELS, BundleError, read_sidecar

    try:
        side = read_sidecar(PACKAGED_MODELS[name])
    except BundleError as e:
        raise RegistryError(f"the packaged {name} model is missing: {e}") from None
    if str(side.get("sha256", "")).lower() != checksum.lower():
        current = default_version_name(side["sha256"], str(side.get("created_at", "")), name)
        raise RegistryError(
            f"model {version!r} is an earlier packaged {name} model that this ser-batch no longer ships (it "
            f"is now {current}); run `ser-batch models list` then `ser-batch models activate {current}`"
        )


@dataclass
class LoadedModel:
    """A bundle loaded in this process and the version it was registered under."""

    version: str
    bundle: object  # ser_model.model.ModelBundle (typed loosely to keep this module import-light)


_cache: dict[str, LoadedModel] = {}
_lock = threading.Lock()


def load_model(version: str | None = None, *, url: str | None = None) -> LoadedModel:
    """The model ``version`` (default: the active one), loaded once per process and cached.

    When the active version changes in the database, the next call loads the new one: workers pick
    up an activation without a restart.

    Raises:
        RegistryError: no active model, unknown version, or the bundle fails its checksum or
            feature-version check.
    """
    from ser_model.model import PACKAGED_MODELS, BundleError, LegacyBundleError, bundle_from_bytes, load_bundle

    if version is not None and version in _cache:
        return _cache[version]  # a version's bundle never changes (checksum): no database round trip
    engine = get_engine(url)
    with Session(engine) as s, s.begin():
        if version is None:
            version = active_version(s) or ensure_default_model(s)
        if version in _cache:
            return _cache[version]
        row = s.get(ModelVersion, version)
        if row is None:
            raise RegistryError(f"no model version {version!r} in the registry")
        source, checksum, blob = row.source, row.checksum, row.bundle
    with _lock:
        if version in _cache:
            return _cache[version]
        try:
            name = source.removeprefix(PACKAGE_PREFIX)
            if source.startswith(PACKAGE_PREFIX) and name in PACKAGED_MODELS:
                _check_packaged(name, version, checksum)
                bundle = load_bundle(PACKAGED_MODELS[name], expected_sha256=checksum)
            elif blob is not None:
                bundle = bundle_from_bytes(blob, checksum)
            else:
                raise RegistryError(f"model {version!r} has no stored bundle")
        except LegacyBundleError:
            raise RegistryError(
                f"model {version!r} cannot be loaded: it is stored as a pickled bundle (format 1 or 2), and "
                "unpickling can run arbitrary code, so ser-batch refuses it. If you trust it: "
                f"`ser-batch models export {version} old.joblib`, `ser-batch models convert old.joblib "
                "--trust-pickle`, `ser-batch models import old.npz`, then activate the imported version"
            ) from None
        except BundleError as e:
            raise RegistryError(f"model {version!r} cannot be loaded: {e}") from None
        loaded = LoadedModel(version=version, bundle=bundle)
        _cache.clear()  # keep one model per process
        _cache[version] = loaded
        return loaded
