"""Bundle format 3: a model bundle as data only (JSON plus numeric ``.npy`` arrays in one zip file).

A model bundle used to be a joblib pickle, and unpickling runs whatever code the file names: anyone who
could write a row of the ``models`` table, or hand over a bundle file with a matching sidecar, ran code on
every worker. Format 3 holds nothing executable. The file is a zip archive (a valid NumPy ``.npz``) of:

- ``bundle.json``: the bundle document (``format``, ``labels``, ``feature_version``, ``meta``, ``trust``,
  ``weights``), where every numeric array is replaced by ``{"__ndarray__": "<member name>"}``;
- one ``<member name>.npy`` per array, read with ``numpy.lib.format.read_array(allow_pickle=False)``: an
  object array (the only ``.npy`` content that unpickles) is refused, and only boolean, integer and
  floating-point arrays are written or read.

Any JSON-safe dict (strings, numbers, booleans, None, lists, dicts with string keys) and any numeric
numpy array nested in it round-trips exactly (numpy scalars come back as Python numbers, tuples as
lists), so a model that carries other metadata or other named arrays needs no new format. The archive
is written deterministically (fixed member order and timestamps): the same bundle gives the same bytes.

Reading a pickled bundle of formats 1 and 2 is possible only through :func:`read_legacy_pickle`, which the
operator-only ``ser-batch models convert FILE --trust-pickle`` calls once to write format 3.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import numpy as np

FORMAT = 3
DOCUMENT = "bundle.json"
"""Zip member holding the JSON document."""
ARRAY_KEY = "__ndarray__"
"""Key of the JSON object that stands for an array stored beside the document."""
MAX_UNCOMPRESSED = 2 << 30
"""Largest total uncompressed size read (2 GiB), so a crafted archive cannot exhaust memory."""
_ZIP_MAGIC = b"PK\x03\x04"
_NUMERIC_KINDS = "biuf"
_DATE = (1980, 1, 1, 0, 0, 0)


def is_container(data: bytes) -> bool:
    """Whether ``data`` starts like a format-3 bundle (a zip archive) rather than a pickle."""
    return data[:4] == _ZIP_MAGIC


def _member(path: list[str], used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", ".".join(path)) or "array"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}~{k}"
    used.add(name)
    return name


def _to_json(value: Any, path: list[str], arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(f"{'.'.join(path)}: only numeric arrays can be stored, not dtype {value.dtype}")
        name = _member(path, set(arrays))
        arrays[name] = value
        return {ARRAY_KEY: name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{'.'.join(path)}: dict key {k!r} is not a string (JSON keys are strings)")
            if k == ARRAY_KEY:
                raise ValueError(f"{'.'.join(path)}: the key {ARRAY_KEY!r} is reserved")
            out[k] = _to_json(v, [*path, k], arrays)
        return out
    if isinstance(value, list | tuple):
        return [_to_json(v, [*path, str(i)], arrays) for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise ValueError(f"{'.'.join(path)}: a {type(value).__name__} cannot be stored in a bundle (JSON or arrays only)")


def encode(doc: dict[str, Any]) -> bytes:
    """Serialise a bundle document to format-3 bytes.

    Args:
        doc: JSON-safe values and numeric numpy arrays, nested in dicts and lists.

    Returns:
        The zip archive's bytes (deterministic for equal input).

    Raises:
        ValueError: a value that is neither JSON-safe nor a numeric array (the message names its path).
    """
    arrays: dict[str, np.ndarray] = {}
    body = _to_json({**doc, "format": FORMAT}, [], arrays)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:

        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data, compresslevel=6)

        put(DOCUMENT, json.dumps(body, indent=1, allow_nan=True).encode())
        for name, arr in arrays.items():
            b = io.BytesIO()
            np.lib.format.write_array(b, np.ascontiguousarray(arr), allow_pickle=False)
            put(name + ".npy", b.getvalue())
    return buf.getvalue()


def _from_json(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            name = value[ARRAY_KEY]
            if not isinstance(name, str) or name not in arrays:
                raise ValueError(f"bundle document refers to a missing array {name!r}")
            return arrays[name]
        return {k: _from_json(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, arrays) for v in value]
    return value


def decode(data: bytes) -> dict[str, Any]:
    """Read format-3 bytes without executing anything.

    Args:
        data: bytes written by :func:`encode`.

    Returns:
        The document, arrays in place of their references.

    Raises:
        ValueError: not a zip archive, no ``bundle.json``, a member too large, an array that is not
            numeric (object arrays are refused by ``allow_pickle=False``), or malformed JSON.
    """
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a bundle archive: {e}") from None
    with z:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED:
            raise ValueError("bundle archive is larger than 2 GiB uncompressed")
        names = {i.filename for i in infos}
        if DOCUMENT not in names:
            raise ValueError(f"bundle archive has no {DOCUMENT}")
        try:
            body = json.loads(z.read(DOCUMENT))
        except ValueError as e:
            raise ValueError(f"{DOCUMENT} is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ValueError(f"{DOCUMENT} is not a JSON object")
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(names):
            if not name.endswith(".npy"):
                continue
            with z.open(name) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)
            if arr.dtype.kind not in _NUMERIC_KINDS:
                raise ValueError(f"array {name} has dtype {arr.dtype}; only numeric arrays are allowed")
            arrays[name[: -len(".npy")]] = arr
    return _from_json(body, arrays)


def read_document(data: bytes) -> dict[str, Any]:
    """The JSON document of format-3 bytes alone (``labels``, ``meta``, ...), arrays left as references.

    For readers that need a bundle's metadata (its metrics per mode, say) and not its weights: no
    array is read.

    Args:
        data: bytes written by :func:`encode`.

    Returns:
        The document, each array still ``{"__ndarray__": "<member name>"}``.

    Raises:
        ValueError: not a zip archive, no ``bundle.json``, or it is not a JSON object.
    """
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a bundle archive: {e}") from None
    with z:
        try:
            info = z.getinfo(DOCUMENT)
        except KeyError:
            raise ValueError(f"bundle archive has no {DOCUMENT}") from None
        if info.file_size > MAX_UNCOMPRESSED:
            raise ValueError(f"{DOCUMENT} is larger than 2 GiB uncompressed")
        try:
            body = json.loads(z.read(DOCUMENT))
        except ValueError as e:
            raise ValueError(f"{DOCUMENT} is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{DOCUMENT} is not a JSON object")
    return body


def read_legacy_pickle(data: bytes) -> Any:
    """Unpickle a format 1 or 2 bundle (joblib). RUNS ANY CODE THE FILE CONTAINS.

    Only ``ser-batch models convert FILE --trust-pickle`` calls this, on a file the operator vouches
    for; nothing on the labelling path does.
    """
    import joblib

    # explicit operator opt-in (--trust-pickle), see docs/security.md
    return joblib.load(io.BytesIO(data))  # nosec B301
