"""Arrays on the wire, and the content hash that names a dataset.

Dataset ids
-----------
A dataset's id is a SHA-256 content hash that this SDK and the server compute identically, so the
SDK can ask ``GET /v1/datasets/{id}`` first and skip uploading data the server already holds.
The recipe, exactly::

    h = hashlib.sha256()
    for name, a in (("x", x), ("y", y)):
        if a is not None:
            h.update(f"{name}:{a.dtype.str}:{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    dataset_id = h.hexdigest()          # 64 lowercase hex digits

- ``a.dtype.str`` is numpy's type string with its byte order: ``'<f8'``, ``'<f4'``, ``'<i8'``.
- ``a.shape`` is formatted as a Python tuple: ``(100, 3)``, ``(100,)``.
- the bytes are the array's raw C-order buffer.
- ``y`` is absent from the hash (not hashed as empty) when the dataset has none.
- The server hashes the arrays as it stores them: JSON uploads are stored as float64 (``'<f8'``),
  npz/npy uploads keep the dtype and shape they arrived with.

This SDK uploads npz bodies holding ``x`` (float32 or float64; other numeric types become
float64) and ``y`` (as given), both little-endian and C-ordered, and hashes exactly those arrays.
Correctness never depends on the two sides agreeing: the SDK always uses the id that the
upload answers with, so a mismatch only costs an upload that could have been skipped.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

__all__ = ["dataset_id", "as_features", "as_targets", "encode_npz", "decode_npz", "to_nested_list"]


def _little_endian(a: np.ndarray) -> np.ndarray:
    # Hash and upload one canonical layout, so that the same numbers give the same id on any host.
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.ascontiguousarray(a)


def as_features(x: Any) -> np.ndarray:
    """Inputs as the service takes them: float32 or float64, little-endian, C-ordered."""
    a = np.asarray(x)
    if a.dtype.kind in "biu" or (a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8)):
        a = a.astype(np.float64)
    return _little_endian(a)


def as_targets(y: Any) -> np.ndarray:
    """Targets keep their dtype (integer class labels stay integers for ``targets="one_hot"``)."""
    a = np.asarray(y)
    if a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8):
        a = a.astype(np.float64)
    return _little_endian(a)


def dataset_id(x: Any, y: Any = None) -> str:
    """The id the server gives a dataset of these arrays (see the module docstring for the recipe)."""
    h = hashlib.sha256()
    for name, a in (("x", as_features(x)), ("y", None if y is None else as_targets(y))):
        if a is not None:
            h.update(f"{name}:{a.dtype.str}:{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def encode_npz(**arrays: np.ndarray | None) -> bytes:
    """An uncompressed npz body (kernel matrices are noise to a compressor; it would only cost time)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: a for name, a in arrays.items() if a is not None})
    return buffer.getvalue()


def decode_npz(content: bytes) -> dict[str, Any]:
    """Fields of an npz answer: arrays stay arrays, 0-d members (``cached``, ``id``, ``t``) become
    Python scalars, just as they would come out of the JSON answer."""
    with np.load(io.BytesIO(content), allow_pickle=False) as npz:
        return {name: (npz[name].item() if npz[name].ndim == 0 else npz[name]) for name in npz.files}


def to_nested_list(a: np.ndarray, path: str) -> list[Any]:
    """An array inline in a JSON body. JSON has no NaN or infinity, so those are refused here,
    naming the field the way the server's 422 would."""
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        from ._exceptions import ValidationError

        raise ValidationError(
            f"{path} holds NaN or infinity",
            title="Invalid input", errors=[{"path": path, "message": "values must be finite"}],
        )
    return a.tolist()
