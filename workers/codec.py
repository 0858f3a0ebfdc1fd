"""Arrays as bytes in Redis: one array as npy, several as an uncompressed npz (never pickled)."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def append(data: bytes, **arrays: np.ndarray) -> bytes:
    """``data`` (a pack) with ``arrays`` added, the arrays already there copied byte for byte:
    serving a cached 2048² kernel this way is several times faster than unpacking and repacking."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, a in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def pack_array(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=False)
    return buffer.getvalue()


def unpack_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
