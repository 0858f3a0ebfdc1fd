"""Arrays as they arrive: inline JSON lists and npy/npz bodies, checked, and named by content.

Dataset ids are a content hash that the SDK computes client-side too (to skip an upload the server
already holds), so the recipe below is part of the contract: for each of ``x`` then ``y`` that is
present, hash ``"{name}:{dtype.str}:{shape}|"`` and then the array's C-order bytes.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import numpy as np

from service.problems import Problem, invalid

HEX_ID = re.compile(r"[0-9a-f]{64}")
NUMERIC_KINDS = "iuf"


def content_hash(**arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for name in ("x", "y"):
        a = arrays.get(name)
        if a is not None:
            h.update(f"{name}:{a.dtype.str}:{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def from_json(value, path: str) -> np.ndarray:
    """An inline nested list as float64; ragged, non-numeric or non-finite entries are a 422."""
    try:
        a = np.array(value)
    except ValueError:
        raise invalid(path, "the array is ragged: every row must have the same length") from None
    if a.dtype.kind not in NUMERIC_KINDS:
        raise invalid(path, "the array must hold numbers only")
    return checked(a.astype(np.float64), path)


def checked(a: np.ndarray, path: str) -> np.ndarray:
    if a.dtype.kind not in NUMERIC_KINDS:
        raise invalid(path, f"the array must be numeric, not {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise invalid(path, "the array holds NaN or infinity")
    return a


def check_points(shape: tuple | list, path: str) -> None:
    """Inputs are (N, d), (N, L, C) or (N, H, W, C), no axis empty."""
    if len(shape) not in (2, 3, 4) or 0 in shape:
        raise invalid(path, f"inputs must be (N, d), (N, L, C) or (N, H, W, C) with no empty axis, "
                      f"got shape {list(shape)}")


def check_targets(shape: tuple | list, n: int, path: str) -> None:
    if len(shape) not in (1, 2) or shape[0] != n or 0 in shape:
        raise invalid(path, f"targets must be (N,) or (N, k) with N = {n}, the number of points, "
                      f"got shape {list(shape)}")


def from_npy(body: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise Problem(400, "Malformed npy", f"the body is not a readable npy array: {e}") from None


def from_npz(body: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise Problem(400, "Malformed npz", f"the body is not a readable npz archive: {e}") from None
